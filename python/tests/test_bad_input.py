"""Bad input gets a clear error naming what is wrong, and changes nothing."""

import pytest
import torch

import hybridshard
from conftest import TINY, free_port, job_yaml, run_ranks


def one_rank_engine(**keywords):
    return hybridshard.Engine(model=TINY, train={"tp": 1}, rollout={"tp": 1}, world_size=1, rank=0, **keywords)


def trainer_tensors(engine, dtype=torch.bfloat16, device="cpu"):
    return {name: torch.zeros(shape, dtype=dtype, device=device) for name, shape in engine.train_layout()}


def test_attach_wrong_dtype_names_the_tensor_and_changes_nothing():
    engine = one_rank_engine()
    before = {name: t.clone() for name, t in engine.train_params().items()}
    tensors = trainer_tensors(engine)
    tensors["decoder.layers.0.mlp.linear_fc1.weight"] = tensors["decoder.layers.0.mlp.linear_fc1.weight"].float()
    with pytest.raises(hybridshard.TensorMismatchError,
                       match=r"'decoder.layers.0.mlp.linear_fc1.weight': dtype torch.float32, but the job's weights "
                             r"are torch.bfloat16"):
        engine.attach(tensors)
    for name, tensor in engine.train_params().items():
        assert torch.equal(tensor.view(torch.int16), before[name].view(torch.int16)), name
    assert tensors["decoder.layers.0.input_layernorm.weight"].data_ptr() != engine.train_address(
        "decoder.layers.0.input_layernorm.weight")
    engine.close()


def test_attach_wrong_shape_names_the_layout():
    # A full-size tensor (as a tp-1 model has it) handed to rank 0 of tp 2.
    port = free_port()

    def rank(r):
        engine = hybridshard.Engine(model=TINY, train={"tp": 2}, rollout={"tp": 2}, world_size=2, rank=r,
                                    master_port=port)
        tensors = trainer_tensors(engine)
        if r == 0:
            tensors["decoder.layers.1.self_attention.linear_qkv.weight"] = torch.zeros(128, 64, dtype=torch.bfloat16)
        try:
            engine.attach(tensors)
            return None
        except hybridshard.TensorMismatchError as error:
            return str(error)
        finally:
            engine.close()

    messages = run_ranks(2, rank)
    assert messages[1] is None
    assert ("'decoder.layers.1.self_attention.linear_qkv.weight': shape [128, 64], but rank 0's train layout "
            "(chunk 0) has [64, 64]") in messages[0]


def test_attach_wrong_device():
    engine = one_rank_engine()
    tensors = trainer_tensors(engine)
    tensors["decoder.final_layernorm.weight"] = torch.zeros(64, dtype=torch.bfloat16, device="meta")
    with pytest.raises(hybridshard.TensorMismatchError,
                       match=r"'decoder.final_layernorm.weight': on device meta, but the engine's is cpu"):
        engine.attach(tensors)
    engine.close()


def test_attach_tensors_of_another_model_are_listed():
    """The job says 4 layers; the trainer's model has 2 (and a tensor the layout does not know)."""
    engine = one_rank_engine()
    tensors = {name: t for name, t in trainer_tensors(engine).items()
               if not name.startswith(("decoder.layers.2.", "decoder.layers.3."))}
    tensors["decoder.layers.0.self_attention.linear_qkv.bias"] = torch.zeros(128, dtype=torch.bfloat16)
    with pytest.raises(hybridshard.TensorMismatchError) as raised:
        engine.attach(tensors)
    text = str(raised.value)
    assert "1 tensor(s) are not in rank 0's train layout (chunk 0): decoder.layers.0.self_attention.linear_qkv.bias" \
        in text
    assert "12 tensor(s) of rank 0's train layout (chunk 0) were not given: decoder.layers.2.input_layernorm.weight" \
        in text
    engine.close()


def test_attach_a_non_contiguous_tensor():
    engine = one_rank_engine()
    tensors = trainer_tensors(engine)
    tensors["decoder.layers.0.mlp.linear_fc2.weight"] = torch.zeros(128, 64, dtype=torch.bfloat16).t()
    with pytest.raises(hybridshard.TensorMismatchError, match="linear_fc2.weight': not contiguous"):
        engine.attach(tensors)
    engine.close()


def test_job_problems_name_the_key():
    with pytest.raises(hybridshard.ConfigError, match=r"train.tensor_model_parallel_size"):
        hybridshard.Engine(model=TINY, train={"tp": 3}, rollout={"tp": 1}, world_size=3, rank=0,
                           master_port=free_port())


def test_job_file_problem_names_file_and_line(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text(job_yaml(dict(TINY, hidden_size=-64), {"tp": 1}, {"tp": 1}, 1, 0))
    with pytest.raises(hybridshard.ConfigError, match=r"bad.yaml:1:\d+: error: model.hidden_size"):
        hybridshard.Engine(job, rank=0)
    with pytest.raises(hybridshard.ConfigError, match="does not exist"):
        hybridshard.Engine(tmp_path / "missing.yaml")


def test_world_rank_port_and_device_problems():
    with pytest.raises(hybridshard.ConfigError, match="world has 2 ranks but the job's runtime.world_size is 1"):
        hybridshard.Engine(model=TINY, runtime={"world_size": 1}, world_size=2, rank=0, master_port=free_port())
    with pytest.raises(hybridshard.ConfigError, match="no rank given"):
        hybridshard.Engine(model=TINY, train={"tp": 2}, world_size=2)
    with pytest.raises(hybridshard.ConfigError, match="rank 2 is outside world_size 2"):
        hybridshard.Engine(model=TINY, train={"tp": 2}, world_size=2, rank=2, master_port=free_port())
    with pytest.raises(hybridshard.ConfigError, match="master_port is 0 in a world of 2 ranks"):
        hybridshard.Engine(model=TINY, train={"tp": 2}, world_size=2, rank=0)
    with pytest.raises(hybridshard.ConfigError, match="device 'gpu0' is not cpu, cuda or cuda:N"):
        one_rank_engine(device="gpu0")
    with pytest.raises(TypeError, match="not both"):
        hybridshard.Engine("job.yaml", model=TINY)


def test_phase_order_and_policy_errors():
    engine = one_rank_engine()
    with pytest.raises(hybridshard.Error, match=r"exit\(\): not entered"):
        engine.exit()
    weights = engine.enter()
    with pytest.raises(hybridshard.Error, match=r"enter\(\): already entered"):
        engine.enter()
    del weights
    with pytest.raises(ValueError, match="exit policy 'drop' is not 'free' or 'offload'"):
        engine.exit("drop")
    with pytest.raises(ValueError, match="release 'keep' is not 'driver' or 'cache'"):
        engine.exit("free", release="keep")
    engine.exit("offload", release="cache")
    engine.close()
    with pytest.raises(hybridshard.Error, match="the engine is closed"):
        engine.enter()


def test_a_peer_that_never_comes_times_out():
    """Rank 1 never starts: rank 0's rendezvous ends with an error naming the store, within the job's timeout."""
    with pytest.raises(hybridshard.CommError):
        hybridshard.Engine(model=TINY, train={"tp": 2}, rollout={"tp": 2}, runtime={"timeout": "2s"}, world_size=2,
                           rank=0, master_port=free_port())


def test_a_job_too_big_for_the_device():
    """Llama-3-8B's 16 GB of weights on a CPU rank that reports 1 GiB of device memory: refused by the rank's memory
    plan before any buffer is allocated (as hybridshard-rank does), the plan's table in the message."""
    with pytest.raises(hybridshard.OutOfMemoryError, match=r"(?s)rank 0 on .*: the job does not fit this device.*peak"):
        hybridshard.Engine(model="llama3-8b", world_size=1, rank=0)
