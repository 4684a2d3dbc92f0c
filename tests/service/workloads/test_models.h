// Small models and helpers shared by the workloads tests (no libtorch here).
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "hybridshard/core/batch.h"
#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/weight_generator.h"
#include "hybridshard/service/workloads/reference_model.h"

namespace hybridshard::service::workloads::testing {

inline constexpr std::uint32_t kSeedVersion = 7;
inline constexpr std::int64_t kDeviceBytes = std::int64_t{1} << 30;

// Llama, untied, GQA (8 query heads over 4 kv heads), bf16.
inline core::ModelSpec small_llama() {
  core::ModelSpec spec;
  spec.architecture = core::Architecture::kLlama;
  spec.num_hidden_layers = 4;
  spec.hidden_size = 64;
  spec.num_attention_heads = 8;
  spec.num_key_value_heads = 4;
  spec.intermediate_size = 96;
  spec.vocab_size = 200;
  spec.tie_word_embeddings = false;
  spec.dtype = core::DType::kBFloat16;
  spec.rope_theta = 10000.0;
  spec.rms_norm_eps = 1e-6;
  return spec;
}

// Qwen2 (q/k/v biases), tied embeddings, 4 query heads over 2 kv heads (replicated when tp' = 4), fp16,
// rope_theta as Qwen2.5's.
inline core::ModelSpec small_qwen2_tied() {
  core::ModelSpec spec;
  spec.architecture = core::Architecture::kQwen2;
  spec.num_hidden_layers = 2;
  spec.hidden_size = 64;
  spec.num_attention_heads = 4;
  spec.num_key_value_heads = 2;
  spec.intermediate_size = 128;
  spec.vocab_size = 250;
  spec.tie_word_embeddings = true;
  spec.dtype = core::DType::kFloat16;
  spec.rope_theta = 1000000.0;
  spec.rms_norm_eps = 1e-6;
  return spec;
}

// Qwen3: q/k norms, head_dim 16 set explicitly (hidden / heads would be 8), no biases, bf16.
inline core::ModelSpec small_qwen3() {
  core::ModelSpec spec = small_llama();
  spec.architecture = core::Architecture::kQwen3;
  spec.num_hidden_layers = 2;
  spec.head_dim = 16;
  spec.rope_theta = 1000000.0;
  return spec;
}

// Qwen3-MoE: 8 experts of width 32, top 2 renormalised, layer 1 dense (mlp_only_layers), fp32.
inline core::ModelSpec small_qwen3_moe() {
  core::ModelSpec spec = small_qwen3();
  spec.architecture = core::Architecture::kQwen3Moe;
  spec.num_hidden_layers = 3;
  spec.num_experts = 8;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 32;
  spec.norm_topk_prob = true;
  spec.mlp_only_layers = {1};
  spec.dtype = core::DType::kFloat32;
  return spec;
}

// Mixtral: 4 experts of width 48, top 2, every layer sparse, bf16.
inline core::ModelSpec small_mixtral() {
  core::ModelSpec spec = small_llama();
  spec.architecture = core::Architecture::kMixtral;
  spec.num_hidden_layers = 2;
  spec.num_experts = 4;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 48;
  return spec;
}

// Qwen2-MoE: q/k/v biases, 4 experts of width 32, top 2 not renormalised (Qwen2MoeConfig's default), a shared expert
// of width 48 with its sigmoid gate, layer 0 dense (mlp_only_layers), bf16.
inline core::ModelSpec small_qwen2_moe() {
  core::ModelSpec spec = small_qwen2_tied();
  spec.architecture = core::Architecture::kQwen2Moe;
  spec.tie_word_embeddings = false;
  spec.dtype = core::DType::kBFloat16;
  spec.num_experts = 4;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 32;
  spec.shared_expert_intermediate_size = 48;
  spec.norm_topk_prob = false;
  spec.mlp_only_layers = {0};
  return spec;
}

// rows x cols prompt tokens in [0, vocab), a function of (row, col, salt).
inline core::TokenBatch make_prompts(std::int64_t rows, std::int64_t cols, std::int64_t vocab, std::uint64_t salt) {
  core::TokenBatch batch;
  batch.rows = rows;
  batch.cols = cols;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const std::uint64_t h = core::mix64(salt * 1000003u + static_cast<std::uint64_t>(r * cols + c));
      batch.tokens.push_back(static_cast<std::int32_t>(h % static_cast<std::uint64_t>(vocab)));
    }
  }
  return batch;
}

// A buffer of `layout` on `device`, filled from the full model.
inline std::unique_ptr<core::FlatBuffer> shard_from_full(const core::ModelSpec& spec, ReferenceModel& reference,
                                                         const core::BufferLayout& layout, core::BufferKind kind,
                                                         core::Device& device) {
  auto buffer = std::make_unique<core::FlatBuffer>(layout, kind, device, nullptr, 0);
  buffer->move_to(core::Residency::kGpu, /*keep_contents=*/false);
  copy_from_full(spec, reference.layout(), reference.params(), layout, *buffer, device);
  return buffer;
}

// The bytes of `layout`'s tensor `name` in `buffer` (host memory: CPU devices).
inline const core::LocalTensor& find_tensor(const core::BufferLayout& layout, const std::string& name) {
  for (const core::LocalTensor& tensor : layout.tensors) {
    if (tensor.name == name) return tensor;
  }
  throw std::runtime_error("no tensor " + name + " in " + layout.name);
}

}  // namespace hybridshard::service::workloads::testing
