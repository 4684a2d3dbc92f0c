// The decoder of Llama / Qwen2 / Qwen3 / Qwen2-MoE / Qwen3-MoE / Mixtral as Hugging Face transformers computes it, in
// fp32, on one tensor-parallel shard.
// Shared by the rollout (vLLM shards, tp' ranks) and the reference (full weights, one rank).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

namespace hybridshard::service::workloads::detail {

// This shard's heads: `heads` query heads, `kv_heads` key/value heads (heads % kv_heads == 0; query head j uses kv
// head j / (heads / kv_heads), which is GQA's mapping restricted to a vLLM shard).
struct AttentionShape {
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
};

// One layer's weights on this shard, fp32. Biases are undefined tensors for llama; q_norm / k_norm for all but qwen3.
// A layer with experts has router / w13 / w2 instead of gate / up / down.
struct LayerWeights {
  at::Tensor input_norm;  // [h]
  at::Tensor q, k, v;     // [heads*d, h], [kv_heads*d, h], [kv_heads*d, h]
  at::Tensor q_bias, k_bias, v_bias;
  at::Tensor q_norm, k_norm;  // [d]: RMSNorm of every head before rotary (qwen3)
  at::Tensor o;               // [h, heads*d]
  at::Tensor post_norm;       // [h]
  at::Tensor gate, up;        // [I_shard, h]
  at::Tensor down;            // [h, I_shard]
  // Experts: the router is whole; this shard holds experts [first_expert, first_expert + El), each with its
  // [gate; up] rows and down columns of this shard (all of them with expert parallelism).
  at::Tensor router;  // [E, h]
  at::Tensor w13;     // [El, 2*f, h]
  at::Tensor w2;      // [El, h, f]
  std::int64_t first_expert = 0;
  std::int64_t top_k = 0;      // num_experts_per_tok
  bool norm_topk_prob = true;  // renormalise the top-k routing weights to sum to 1
  // A shared expert (qwen2_moe; undefined elsewhere): this shard's rows of its gate / up and columns of its down
  // projection, and its whole gate [1, h].
  at::Tensor shared_gate, shared_up;  // [Is_shard, h]
  at::Tensor shared_down;             // [h, Is_shard]
  at::Tensor shared_expert_gate;      // [1, h]
};

// Sums a contiguous fp32 tensor in place over the tensor-parallel group (nothing on one rank).
using AllReduce = std::function<void(at::Tensor&)>;

// HF's rotary tables for positions [start, start + length): cos and sin, [length, head_dim], fp32.
struct Rotary {
  at::Tensor cos;
  at::Tensor sin;
};
Rotary rotary(std::int64_t start, std::int64_t length, std::int64_t head_dim, double theta,
              const at::TensorOptions& options);

// HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The experts' part of a sparse layer's output for tokens x [N, h] (HF's Qwen3MoeSparseMoeBlock / Mixtral block):
// softmax over the router logits, top_k experts per token, their weights renormalised when norm_topk_prob, each
// chosen expert's SwiGLU output weighted and summed. Only this shard's experts (and its part of each) contribute; the
// caller's all-reduce adds the other shards'.
at::Tensor experts_forward(const at::Tensor& x, const LayerWeights& weights);

// The shared expert's part for tokens x [N, h] (HF's Qwen2MoeSparseMoeBlock): sigmoid(shared_expert_gate . x) times
// the shared SwiGLU MLP's output, from this shard's part of the MLP (the gate is whole, so the shards' parts add up).
at::Tensor shared_expert_forward(const at::Tensor& x, const LayerWeights& weights);

// One decoder layer over x [B, S, h] at positions [start, start + S). With a cache ([B, S_max, kv_heads, d] for keys
// and values), the new keys and values are written at [start, start + S) and attention covers [0, start + S);
// without one, start must be 0. Causal.
at::Tensor decoder_layer(const at::Tensor& x, const LayerWeights& weights, const AttentionShape& shape,
                         const Rotary& rope, std::int64_t start, const at::Tensor& k_cache, const at::Tensor& v_cache,
                         const AllReduce& all_reduce, double eps);

}  // namespace hybridshard::service::workloads::detail
