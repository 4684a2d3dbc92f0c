"""A small Llama forward in torch (float32), reading either vLLM's fused parameters (qkv_proj, gate_up_proj: what
hybridshard's enter() hands out, whole model at rollout tensor parallel 1) or Hugging Face's unfused ones. The
example's rollout runs on the first and is checked against the second."""

import torch


class LlamaShape:
    def __init__(self, config):
        self.layers = config["num_hidden_layers"]
        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.kv_heads = config["num_key_value_heads"]
        self.head_dim = config.get("head_dim") or self.hidden // self.heads
        self.intermediate = config["intermediate_size"]
        self.vocab = config["vocab_size"]
        self.theta = config.get("rope_theta", 10000.0)
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.tied = config.get("tie_word_embeddings", False)


def _rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def _rope(x, theta):
    # x: [heads, seq, head_dim]; Hugging Face's rotate_half convention.
    seq, dim = x.shape[1], x.shape[2]
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([angles.sin(), angles.sin()], -1)
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def _projections(weights, prefix, shape, fused):
    """(q, k, v, o, gate, up, down) weight matrices of one layer, as float32 (views split from fused tensors)."""
    if fused:
        qkv = weights[prefix + "self_attn.qkv_proj.weight"].float()
        q_rows, kv_rows = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        q, k, v = qkv.split([q_rows, kv_rows, kv_rows])
        gate, up = weights[prefix + "mlp.gate_up_proj.weight"].float().split([shape.intermediate] * 2)
    else:
        q, k, v = (weights[prefix + f"self_attn.{n}_proj.weight"].float() for n in "qkv")
        gate, up = (weights[prefix + f"mlp.{n}_proj.weight"].float() for n in ("gate", "up"))
    o = weights[prefix + "self_attn.o_proj.weight"].float()
    down = weights[prefix + "mlp.down_proj.weight"].float()
    return q, k, v, o, gate, up, down


def logits(weights, shape, tokens, fused=True):
    """Logits [seq, vocab] of a token sequence (1-D tensor of ids)."""
    embed = weights["model.embed_tokens.weight"]
    x = embed[tokens].float()
    seq = tokens.shape[0]
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    groups = shape.heads // shape.kv_heads
    for layer in range(shape.layers):
        prefix = f"model.layers.{layer}."
        q_w, k_w, v_w, o_w, gate_w, up_w, down_w = _projections(weights, prefix, shape, fused)
        h = _rms_norm(x, weights[prefix + "input_layernorm.weight"], shape.eps)
        q = (h @ q_w.T).view(seq, shape.heads, shape.head_dim).transpose(0, 1)
        k = (h @ k_w.T).view(seq, shape.kv_heads, shape.head_dim).transpose(0, 1)
        v = (h @ v_w.T).view(seq, shape.kv_heads, shape.head_dim).transpose(0, 1)
        q, k = _rope(q, shape.theta), _rope(k, shape.theta)
        k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
        scores = (q @ k.transpose(1, 2)) / shape.head_dim**0.5 + mask
        attention = (scores.softmax(-1) @ v).transpose(0, 1).reshape(seq, shape.heads * shape.head_dim)
        x = x + attention @ o_w.T
        h = _rms_norm(x, weights[prefix + "post_attention_layernorm.weight"], shape.eps)
        x = x + (torch.nn.functional.silu(h @ gate_w.T) * (h @ up_w.T)) @ down_w.T
    x = _rms_norm(x, weights["model.norm.weight"], shape.eps)
    head = embed if shape.tied or "lm_head.weight" not in weights else weights["lm_head.weight"]
    return (x @ head.float().T)[:, : shape.vocab]  # vLLM pads the vocabulary: padding rows are not tokens


def generate(weights, shape, prompt, new_tokens):
    """Greedy decoding (the whole sequence each step: the model is tiny)."""
    tokens = prompt.clone()
    for _ in range(new_tokens):
        next_token = logits(weights, shape, tokens)[-1].argmax()
        tokens = torch.cat([tokens, next_token.view(1)])
    return tokens
