"""Zero copy: the tensors Python gets are the engine's own buffers, updates in place reach the engine, and a view
never points into memory the engine freed."""

import gc

import pytest
import torch

import hybridshard
from conftest import TINY


def one_rank_engine(**keywords):
    return hybridshard.Engine(model=TINY, train={"tp": 1}, rollout={"tp": 1}, world_size=1, rank=0, **keywords)


def test_train_views_are_the_engine_buffers():
    engine = one_rank_engine()
    params = engine.train_params()
    assert [name for name, _ in engine.train_layout()] == list(params)
    for name, tensor in params.items():
        assert tensor.data_ptr() == engine.train_address(name), name
        assert tensor.dtype == torch.bfloat16 and tensor.device.type == "cpu"
    again = engine.train_params()
    assert all(again[name].data_ptr() == tensor.data_ptr() for name, tensor in params.items())
    engine.close()


def test_in_place_update_reaches_enter():
    engine = one_rank_engine()
    params = engine.train_params()
    params["decoder.layers.1.input_layernorm.weight"].fill_(7.0)
    params["decoder.layers.0.mlp.linear_fc2.weight"].mul_(0).add_(0.5)
    weights = engine.enter()
    for name, tensor in weights.items():
        assert tensor.data_ptr() == engine.inference_address(name), name
    del tensor  # the loop's variable holds the last view
    assert torch.all(weights["model.layers.1.input_layernorm.weight"] == 7.0)
    assert torch.all(weights["model.layers.0.mlp.down_proj.weight"] == 0.5)
    assert not torch.all(weights["model.layers.0.input_layernorm.weight"] == 7.0)
    del weights
    engine.exit("free")
    engine.close()


def test_exit_refuses_while_a_view_is_referenced_and_releases_the_mapping():
    engine = one_rank_engine()
    weights = engine.enter()
    kept = weights["model.norm.weight"]
    derived = weights["model.layers.0.self_attn.qkv_proj.weight"][:2]  # a view of a view holds the memory too
    with pytest.raises(hybridshard.LiveViewsError, match=r"model.norm.weight.*qkv_proj|qkv_proj.*model.norm.weight"):
        engine.exit()
    assert engine.entered
    assert torch.equal(weights["model.norm.weight"], kept)  # still usable: nothing was freed
    del kept, derived
    engine.exit()
    assert not engine.entered and weights.released
    with pytest.raises(hybridshard.Error, match="released by exit"):
        weights["model.norm.weight"]
    with pytest.raises(hybridshard.Error, match="released by exit"):
        len(weights)
    engine.close()


def test_offload_then_enter_again_gives_the_same_weights():
    engine = one_rank_engine()
    first = {name: tensor.clone() for name, tensor in engine.enter().items()}
    engine.exit("offload")
    again = engine.enter()
    assert engine.iteration == 1
    for name, tensor in first.items():
        assert torch.equal(again[name].view(torch.int16), tensor.view(torch.int16)), name
    del again
    engine.exit("free")
    engine.close()


def test_train_views_outlive_the_engine():
    engine = one_rank_engine()
    view = engine.train_params()["decoder.final_layernorm.weight"]
    expected = view.clone()
    engine.close()
    del engine
    gc.collect()
    scratch = [torch.full((4096,), 3.0) for _ in range(64)]  # memory a freed buffer would hand out again
    assert torch.equal(view, expected)
    del scratch


def test_attach_makes_a_trainers_parameters_views():
    engine = one_rank_engine()
    layout = engine.train_layout()
    generator = torch.Generator().manual_seed(5)
    params = {name: torch.nn.Parameter(torch.randn(shape, generator=generator).to(torch.bfloat16))
              for name, shape in layout}
    values = {name: p.detach().clone() for name, p in params.items()}
    engine.attach(params)
    for name, parameter in params.items():
        assert parameter.data_ptr() == engine.train_address(name), name
        assert torch.equal(parameter.detach().view(torch.int16), values[name].view(torch.int16)), name
    # A torch optimizer steps the engine's buffer.
    optimizer = torch.optim.SGD(params.values(), lr=0.5)
    loss = sum((p.float() ** 2).sum() for p in params.values())
    loss.backward()
    optimizer.step()
    norm = params["decoder.layers.2.pre_mlp_layernorm.weight"].detach().clone()
    assert not torch.equal(norm, values["decoder.layers.2.pre_mlp_layernorm.weight"])
    weights = engine.enter()
    assert torch.equal(weights["model.layers.2.post_attention_layernorm.weight"].view(torch.int16),
                       norm.view(torch.int16))
    del weights
    engine.exit()
    engine.close()
