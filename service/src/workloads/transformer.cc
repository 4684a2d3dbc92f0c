#include "detail/transformer.h"

#include <cmath>
#include <limits>

#include "hybridshard/core/error.h"

namespace hybridshard::service::workloads::detail {
namespace {

// HF's rotate_half: cat(-x2, x1) over the last dimension.
at::Tensor rotate_half(const at::Tensor& x) {
  const std::int64_t half = x.size(-1) / 2;
  return at::cat({x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)}, -1);
}

// x [B, S, n, d]; cos/sin [S, d].
at::Tensor apply_rotary(const at::Tensor& x, const Rotary& rope) {
  const at::Tensor cos = rope.cos.view({1, rope.cos.size(0), 1, rope.cos.size(1)});
  const at::Tensor sin = rope.sin.view({1, rope.sin.size(0), 1, rope.sin.size(1)});
  return x * cos + rotate_half(x) * sin;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  at::Tensor y = at::matmul(x, weight.t());
  if (bias.defined()) y = y + bias;
  return y;
}

// q [B, S, H, d] at positions [start, start + S); k, v [B, T, K, d] at positions [0, T). Returns [B, S, H*d].
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::int64_t start) {
  const std::int64_t batch = q.size(0);
  const std::int64_t length = q.size(1);
  const std::int64_t heads = q.size(2);
  const std::int64_t head_dim = q.size(3);
  const std::int64_t total = k.size(1);
  const std::int64_t kv_heads = k.size(2);
  const std::int64_t group = heads / kv_heads;
  // GQA: each kv head serves `group` consecutive query heads (HF's repeat_kv).
  const at::Tensor k_rep =
      k.unsqueeze(3).expand({batch, total, kv_heads, group, head_dim}).reshape({batch, total, heads, head_dim});
  const at::Tensor v_rep =
      v.unsqueeze(3).expand({batch, total, kv_heads, group, head_dim}).reshape({batch, total, heads, head_dim});
  const at::Tensor qh = q.transpose(1, 2);      // [B, H, S, d]
  const at::Tensor kh = k_rep.transpose(1, 2);  // [B, H, T, d]
  const at::Tensor vh = v_rep.transpose(1, 2);
  at::Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(head_dim)));
  const at::TensorOptions index_options = q.options().dtype(at::kLong);
  const at::Tensor query_positions = at::arange(start, start + length, index_options).view({length, 1});
  const at::Tensor key_positions = at::arange(0, total, index_options).view({1, total});
  const at::Tensor future = key_positions > query_positions;  // [S, T]
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  const at::Tensor probs = at::softmax(scores, -1);
  return at::matmul(probs, vh).transpose(1, 2).reshape({batch, length, heads * head_dim});
}

}  // namespace

Rotary rotary(std::int64_t start, std::int64_t length, std::int64_t head_dim, double theta,
              const at::TensorOptions& options) {
  const at::TensorOptions fp32 = options.dtype(at::kFloat);
  // inv_freq = 1 / theta^(arange(0, d, 2) / d), as HF computes it (in fp32).
  const at::Tensor exponents =
      at::arange(0, head_dim, 2, options.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(head_dim);
  const at::Tensor inv_freq = at::pow(theta, exponents).reciprocal();
  const at::Tensor positions = at::arange(start, start + length, options.dtype(at::kLong)).to(at::kFloat);
  const at::Tensor freqs = at::outer(positions, inv_freq);  // [S, d/2]
  const at::Tensor angles = at::cat({freqs, freqs}, -1);
  return {angles.cos().to(fp32), angles.sin().to(fp32)};
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor variance = x.pow(2).mean({-1}, /*keepdim=*/true);
  return weight * (x * at::rsqrt(variance + eps));
}

at::Tensor experts_forward(const at::Tensor& x, const LayerWeights& w) {
  const at::Tensor probs = at::softmax(at::matmul(x, w.router.t()), -1);  // [N, E]
  auto [weights, chosen] = probs.topk(w.top_k, -1);                       // [N, k]
  if (w.norm_topk_prob) weights = weights / weights.sum(-1, /*keepdim=*/true);
  at::Tensor out = at::zeros_like(x);
  const std::int64_t f = w.w2.size(2);
  for (std::int64_t j = 0; j < w.w13.size(0); ++j) {
    const at::Tensor hit = chosen == (w.first_expert + j);  // [N, k]
    const at::Tensor rows = hit.any(-1).nonzero().reshape({-1});
    if (rows.numel() == 0) continue;
    const at::Tensor token_weight = (weights * hit.to(at::kFloat)).sum(-1).index_select(0, rows);  // [n]
    const at::Tensor gate_up = at::matmul(x.index_select(0, rows), w.w13[j].t());                  // [n, 2f]
    const at::Tensor activated = at::silu(gate_up.narrow(1, 0, f)) * gate_up.narrow(1, f, f);
    out.index_add_(0, rows, at::matmul(activated, w.w2[j].t()) * token_weight.unsqueeze(1));
  }
  return out;
}

at::Tensor shared_expert_forward(const at::Tensor& x, const LayerWeights& w) {
  const at::Tensor activated = at::silu(at::matmul(x, w.shared_gate.t())) * at::matmul(x, w.shared_up.t());
  return at::matmul(activated, w.shared_down.t()) * at::sigmoid(at::matmul(x, w.shared_expert_gate.t()));
}

at::Tensor decoder_layer(const at::Tensor& x, const LayerWeights& w, const AttentionShape& shape, const Rotary& rope,
                         std::int64_t start, const at::Tensor& k_cache, const at::Tensor& v_cache,
                         const AllReduce& all_reduce, double eps) {
  const std::int64_t batch = x.size(0);
  const std::int64_t length = x.size(1);
  const std::int64_t d = shape.head_dim;

  // Attention block.
  const at::Tensor normed = rms_norm(x, w.input_norm, eps);
  at::Tensor q = linear(normed, w.q, w.q_bias).view({batch, length, shape.heads, d});
  at::Tensor k = linear(normed, w.k, w.k_bias).view({batch, length, shape.kv_heads, d});
  if (w.q_norm.defined()) {  // qwen3: per-head RMSNorm over head_dim, before rotary
    q = rms_norm(q, w.q_norm, eps);
    k = rms_norm(k, w.k_norm, eps);
  }
  const at::Tensor v = linear(normed, w.v, w.v_bias).view({batch, length, shape.kv_heads, d});
  q = apply_rotary(q, rope);
  k = apply_rotary(k, rope);
  at::Tensor keys = k;
  at::Tensor values = v;
  if (k_cache.defined()) {
    HS_CHECK(start + length <= k_cache.size(1), "positions [" + std::to_string(start) + ", " +
                                                    std::to_string(start + length) + ") exceed the KV cache's " +
                                                    std::to_string(k_cache.size(1)));
    k_cache.narrow(1, start, length).copy_(k);
    v_cache.narrow(1, start, length).copy_(v);
    keys = k_cache.narrow(1, 0, start + length);
    values = v_cache.narrow(1, 0, start + length);
  } else {
    HS_CHECK(start == 0, "attention without a KV cache must start at position 0");
  }
  at::Tensor attended = at::matmul(causal_attention(q, keys, values, start), w.o.t()).contiguous();
  all_reduce(attended);  // o_proj is row-parallel: partial sums over the shards' heads
  const at::Tensor hidden = x + attended;

  // MLP block (SwiGLU), or the experts.
  const at::Tensor normed2 = rms_norm(hidden, w.post_norm, eps);
  if (w.router.defined()) {
    const std::int64_t h = normed2.size(2);
    const at::Tensor tokens = normed2.reshape({batch * length, h});
    at::Tensor moe = experts_forward(tokens, w);
    if (w.shared_expert_gate.defined()) moe = moe + shared_expert_forward(tokens, w);
    moe = moe.view({batch, length, h}).contiguous();
    all_reduce(moe);  // the other shards' experts (expert parallel) or parts of each expert (tensor parallel)
    return hidden + moe;
  }
  const at::Tensor activated = at::silu(at::matmul(normed2, w.gate.t())) * at::matmul(normed2, w.up.t());
  at::Tensor down = at::matmul(activated, w.down.t()).contiguous();
  all_reduce(down);  // down_proj is row-parallel
  return hidden + down;
}

}  // namespace hybridshard::service::workloads::detail
