"""A small Llama written as a Hugging Face checkpoint (config.json + model.safetensors, bf16) with torch alone: the
weights the examples and the GPU check start from."""

import json
import os

import torch

from hybridshard import safetensors

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "num_hidden_layers": 4,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 500,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def hf_tensors(config, seed):
    """A Llama's tensors under Hugging Face names, seeded, in bf16."""
    generator = torch.Generator().manual_seed(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    d = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * d

    def matrix(rows, cols):
        return (torch.randn(rows, cols, generator=generator) * 0.08).to(torch.bfloat16)

    def norm():
        return (1.0 + 0.1 * torch.randn(h, generator=generator)).to(torch.bfloat16)

    tensors = {"model.embed_tokens.weight": matrix(v, h)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        tensors.update({
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": matrix(h, h),
            p + "self_attn.k_proj.weight": matrix(kv, h),
            p + "self_attn.v_proj.weight": matrix(kv, h),
            p + "self_attn.o_proj.weight": matrix(h, h),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": matrix(i, h),
            p + "mlp.up_proj.weight": matrix(i, h),
            p + "mlp.down_proj.weight": matrix(h, i),
        })
    tensors["model.norm.weight"] = norm()
    tensors["lm_head.weight"] = matrix(v, h)
    return tensors


def write_checkpoint(directory, tensors):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump(CONFIG, file, indent=2)
    safetensors.write(os.path.join(directory, "model.safetensors"), tensors, {"format": "pt"})
