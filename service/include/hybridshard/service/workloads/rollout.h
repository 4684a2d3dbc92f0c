// The rollout workload: tensor-parallel greedy generation with this rank's inference shard (vLLM layout), as
// Hugging Face transformers defines Llama, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE and Mixtral (RMSNorm, rotary embeddings
// with HF's rotate_half, GQA, SwiGLU, qwen2's q/k/v biases, qwen3's per-head q/k norms, tied embeddings; sparse layers
// route each token to its top-k experts by the softmax of the replicated router, renormalised when norm_topk_prob, and
// Qwen2-MoE adds its shared expert's output times sigmoid(shared_expert_gate . x)).
//
// Tensor parallelism as vLLM does it, over the rollout group (a communicator of size tp'): column-parallel q/k/v and
// gate/up, row-parallel o_proj and down_proj followed by an all-reduce, vLLM's fused-MoE experts (each rank's share of
// every expert, or its whole experts with expert parallelism) plus the shard's part of the shared expert followed by
// one all-reduce, a vocabulary-parallel
// embedding (masked lookup, then all-reduce) and a vocabulary-parallel lm_head whose per-shard (max, argmax) are
// all-gathered. All arithmetic is fp32 (weights are cast one layer at a time), so the reduction order barely matters.
// The KV cache is one flat fp32 buffer ("rollout.kv_cache", kind kKvCache) sized from a byte budget.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hybridshard/core/batch.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::service::workloads {

// KV cache bytes one token position takes on one rank (every layer, keys and values, fp32).
std::int64_t kv_cache_bytes_per_token(const core::ModelSpec& spec, const core::InferenceLayout& layout);

class Rollout {
 public:
  // `tp_rank` is the inference shard this rank holds (core::inference_tp_rank_of); `tp_group` the rollout group
  // (size layout.tp; nullptr when tp' == 1). `kv_cache_bytes` is the KV cache budget; it must hold one token.
  Rollout(const core::ModelSpec& spec, const core::InferenceLayout& layout, int tp_rank, core::Communicator* tp_group,
          core::Device& device, core::EventSink* events, int rank, std::int64_t kv_cache_bytes);
  ~Rollout();
  Rollout(const Rollout&) = delete;
  Rollout& operator=(const Rollout&) = delete;

  // Greedy generation of `max_new_tokens` tokens after every prompt row (all rows the same length). `params` is the
  // inference shard (core::inference_param_buffer(spec, layout, tp_rank), kind kInferenceParams), resident on the
  // device. Every member of the group passes the same prompts and gets the same tokens: rows x max_new_tokens.
  // Allocates the KV cache if it is not resident; throws OutOfMemoryError when rows x (prompt + new tokens)
  // positions do not fit it.
  core::TokenBatch generate(core::FlatBuffer& params, const core::TokenBatch& prompts, std::int64_t max_new_tokens);

  // The logit of each token the last generate() chose (rows x max_new_tokens, row-major), for ReferenceModel::check.
  const std::vector<float>& last_token_logits() const { return last_token_logits_; }

  core::FlatBuffer& kv_cache();
  std::int64_t kv_cache_token_capacity() const;  // token positions (rows x sequence length) the cache holds
  void release_kv_cache();                       // memory policy: drop it between rollouts
  void set_iteration(int iteration);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<float> last_token_logits_;
};

}  // namespace hybridshard::service::workloads
