"""enter()'s vLLM tensors against `hybridshard export` of the same job, bit for bit, on every rank of several
layouts (ranks as threads of this process over Gloo): vocabulary padding, tp' > tp, tp' < tp, virtual pipeline
chunks, Qwen2 biases with tied embeddings, Qwen3 MoE experts (3-D fused expert tensors), Qwen2-MoE's shared expert,
both strategies."""

import pytest
import torch

import hybridshard
from conftest import TINY, free_port, job_yaml, run_ranks


def bitwise_mismatches(views, expected):
    """Names whose tensors differ from `expected` in name set, shape, dtype or any bit."""
    problems = sorted(set(views) ^ set(expected))
    for name in set(views) & set(expected):
        a, b = views[name], expected[name]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a.view(torch.int16), b.view(torch.int16)):
            problems.append(name)
    return problems


QWEN2 = dict(TINY, architecture="qwen2", tie_word_embeddings=True, vocab_size=300)
MOE = dict(TINY, architecture="qwen3_moe", num_hidden_layers=2, num_experts=4, num_experts_per_tok=2,
           moe_intermediate_size=32)
QWEN2_MOE = dict(MOE, architecture="qwen2_moe", shared_expert_intermediate_size=64)

LAYOUTS = [
    pytest.param(TINY, {"tp": 2, "pp": 2}, {"tp": 1}, 4, "", id="tp2pp2-to-tp1"),
    pytest.param(TINY, {"tp": 1, "pp": 2}, {"tp": 2}, 4, "", id="tp1pp2dp2-to-tp2"),
    pytest.param(TINY, {"tp": 2}, {"tp": 4}, 4, "", id="tp2dp2-to-tp4"),
    pytest.param(TINY, {"tp": 1, "pp": 2, "vpp": 2}, {"tp": 1}, 2, "", id="pp2vpp2-to-tp1"),
    pytest.param(QWEN2, {"tp": 2}, {"tp": 2}, 2, "", id="qwen2-tied-tp2-to-tp2"),
    pytest.param(TINY, {"tp": 2, "pp": 2}, {"tp": 1}, 4, "seed", id="seed-strategy-tp2pp2-to-tp1"),
    pytest.param(MOE, {"tp": 2, "expert_model_parallel_size": 2, "expert_tensor_parallel_size": 1}, {"tp": 2}, 4, "",
                 id="qwen3-moe-tp2ep2-to-tp2"),
    pytest.param(MOE, {"tp": 2, "expert_model_parallel_size": 4, "expert_tensor_parallel_size": 1},
                 {"tp": 4, "enable_expert_parallel": "true"}, 4, "", id="qwen3-moe-ep4-to-tp4-expert-parallel"),
    pytest.param(QWEN2_MOE, {"tp": 2, "expert_model_parallel_size": 2}, {"tp": 4}, 4, "",
                 id="qwen2-moe-shared-expert-tp2ep2-to-tp4"),
]


@pytest.mark.parametrize("model, train, rollout, world_size, strategy", LAYOUTS)
def test_enter_matches_export(tmp_path, export, model, train, rollout, world_size, strategy):
    job = tmp_path / "job.yaml"
    text = job_yaml(model, train, rollout, world_size, free_port())
    if strategy:
        text = text.replace("backend: gloo,", f"backend: gloo, strategy: {strategy},")
    job.write_text(text)
    expected = export(job)
    assert sorted(expected) == list(range(rollout["tp"]))

    def rank(r):
        engine = hybridshard.Engine(job, rank=r)
        weights = engine.enter()
        assert [name for name, _ in engine.inference_layout()] == list(weights)
        result = (engine.inference_tp_rank, bitwise_mismatches(dict(weights), expected[engine.inference_tp_rank]))
        del weights
        engine.exit()
        engine.close()
        return result

    for r, (tp_rank, mismatches) in enumerate(run_ranks(world_size, rank)):
        assert mismatches == [], f"rank {r} (inference tp rank {tp_rank}) differs from export in {mismatches}"


def test_a_changed_or_stale_weight_is_detected(tmp_path, export):
    """The comparison above can fail: one bit changed in one train tensor after the export shows up, by name."""
    job = tmp_path / "job.yaml"
    job.write_text(job_yaml(TINY, {"tp": 2}, {"tp": 1}, 2, free_port()))
    expected = export(job)

    def rank(r):
        engine = hybridshard.Engine(job, rank=r)
        if r == 1:
            weight = engine.train_params()["decoder.layers.3.mlp.linear_fc1.weight"]
            weight.view(torch.int16)[5, 7] ^= 1  # the lowest mantissa bit of one element
        weights = engine.enter()
        mismatches = bitwise_mismatches(dict(weights), expected[engine.inference_tp_rank])
        del weights
        engine.exit()
        engine.close()
        return mismatches

    results = run_ranks(2, rank)
    # tp' = 1: both ranks hold the whole model, gathered from both train shards.
    assert results == [["model.layers.3.mlp.gate_up_proj.weight"]] * 2
    assert bitwise_mismatches({"x": torch.zeros(2, dtype=torch.bfloat16)}, {"x": torch.zeros(3, dtype=torch.bfloat16)})
