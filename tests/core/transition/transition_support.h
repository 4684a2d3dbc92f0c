// Shared by the transition tests: the layout matrix, train buffers made with Device::generate, the reference
// comparison, and byte accounting replayed from events.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/train_layout.h"
#include "reference.h"

namespace hybridshard::core::testing {

struct LayoutCase {
  std::string name;
  ModelSpec spec;
  TrainLayout train;
  int inference_tp = 1;
  bool expert_parallel = false;  // vLLM's enable_expert_parallel

  InferenceLayout inference() const {
    InferenceLayout layout;
    layout.tp = inference_tp;
    layout.world_size = train.world_size();
    layout.expert_parallel = expert_parallel;
    return layout;
  }
};

inline ModelSpec tiny_spec(Architecture architecture, DType dtype, std::int64_t layers) {
  ModelSpec spec;
  spec.architecture = architecture;
  spec.dtype = dtype;
  spec.num_hidden_layers = layers;
  spec.hidden_size = 64;
  spec.num_attention_heads = 4;
  spec.num_key_value_heads = 2;
  spec.intermediate_size = 96;
  spec.vocab_size = 500;
  return spec;
}

inline TrainLayout train_layout(int tp, int pp, int vpp, int dp, int ep = 1, int etp = 0) {
  TrainLayout layout;
  layout.tp = tp;
  layout.pp = pp;
  layout.vpp = vpp;
  layout.dp = dp;
  layout.ep = ep;
  layout.etp = etp;
  return layout;
}

// A small qwen3_moe (or mixtral): head_dim 24 (not hidden / heads = 16), q_norm / k_norm, 4 experts of width 32,
// top 2; `dense_layers` keep a dense MLP of width 96 (mlp_only_layers).
inline ModelSpec tiny_moe_spec(Architecture architecture, DType dtype, std::int64_t layers,
                               std::vector<std::int64_t> dense_layers = {}) {
  ModelSpec spec = tiny_spec(architecture, dtype, layers);
  spec.head_dim = 24;
  spec.num_experts = 4;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 32;
  spec.mlp_only_layers = std::move(dense_layers);
  return spec;
}

// A small qwen2_moe: q/k/v biases, 4 experts of width 32 and a shared expert of width 48 in every layer, top 2.
inline ModelSpec tiny_qwen2_moe_spec(DType dtype, std::int64_t layers) {
  ModelSpec spec = tiny_moe_spec(Architecture::kQwen2Moe, dtype, layers);
  spec.head_dim = 0;
  spec.shared_expert_intermediate_size = 48;
  return spec;
}

// At least 12 dense layouts: tp' > tp, pp = 3, vpp = 2, dp > 1, kv heads fewer than tp', tied embeddings, qwen2
// biases, padded vocabularies, bf16 and fp32; qwen3 (q/k norms, explicit head_dim); and 8 Mixture-of-Experts layouts:
// EP 2 and 4, ETP 1 and 2, tp' > tp, vLLM's expert-parallel and tensor-parallel experts, pp 2, dense layers between
// sparse ones, experts that vLLM places unevenly; and qwen2_moe's shared expert through EP 2, ETP 2, tp' > tp, pp 2 and
// both vLLM expert layouts.
inline std::vector<LayoutCase> layout_matrix() {
  const auto llama = Architecture::kLlama;
  const auto qwen2 = Architecture::kQwen2;
  const auto bf16 = DType::kBFloat16;
  const auto fp32 = DType::kFloat32;
  std::vector<LayoutCase> cases;
  cases.push_back({"tp2_to_tp1_bf16", tiny_spec(llama, bf16, 2), train_layout(2, 1, 1, 1), 1});
  cases.push_back({"tp1_dp2_to_tp2", tiny_spec(llama, bf16, 2), train_layout(1, 1, 1, 2), 2});
  cases.push_back({"pp3_to_tp1_fp32", tiny_spec(llama, fp32, 6), train_layout(1, 3, 1, 1), 1});
  cases.push_back({"pp2_vpp2_to_tp2", tiny_spec(llama, bf16, 8), train_layout(1, 2, 2, 1), 2});
  cases.push_back({"qwen2_tp2_dp2_to_tp2", tiny_spec(qwen2, bf16, 2), train_layout(2, 1, 1, 2), 2});
  {
    ModelSpec spec = tiny_spec(llama, bf16, 2);
    spec.num_key_value_heads = 1;  // fewer kv heads than tp': replicated on every inference rank
    cases.push_back({"kv1_tp1_dp4_to_tp4", spec, train_layout(1, 1, 1, 4), 4});
  }
  {
    ModelSpec spec = tiny_spec(llama, bf16, 4);
    spec.tie_word_embeddings = true;  // Megatron keeps an output-layer copy on the last stage
    cases.push_back({"tied_pp2_to_tp2", spec, train_layout(1, 2, 1, 1), 2});
  }
  {
    ModelSpec spec = tiny_spec(llama, fp32, 2);
    spec.tie_word_embeddings = true;
    cases.push_back({"tied_tp2_to_tp1_fp32", spec, train_layout(2, 1, 1, 1), 1});
  }
  {
    ModelSpec spec = tiny_spec(llama, fp32, 4);
    spec.vocab_size = 130;  // padded to 256 by Megatron (tp 2) and to 192 by vLLM
    cases.push_back({"vocab130_tp2_pp2_to_tp1_fp32", spec, train_layout(2, 2, 1, 1), 1});
  }
  {
    ModelSpec spec = tiny_spec(llama, bf16, 2);
    spec.vocab_size = 130;
    cases.push_back({"vocab130_tp2_to_tp2", spec, train_layout(2, 1, 1, 1), 2});
  }
  {
    ModelSpec spec = tiny_spec(llama, bf16, 2);
    spec.num_key_value_heads = 4;  // Megatron-Core's tp must divide the query groups
    cases.push_back({"tp4_to_tp2", spec, train_layout(4, 1, 1, 1), 2});
  }
  cases.push_back({"qwen2_fp32_tp2_pp2_vpp2_to_tp4", tiny_spec(qwen2, fp32, 4), train_layout(2, 2, 2, 1), 4});
  cases.push_back({"tp2_dp2_to_tp1", tiny_spec(llama, bf16, 2), train_layout(2, 1, 1, 2), 1});
  {
    ModelSpec spec = tiny_spec(qwen2, bf16, 3);
    spec.hidden_size = 96;
    spec.num_attention_heads = 6;
    spec.num_key_value_heads = 6;
    spec.vocab_size = 576;  // vLLM's padded vocabulary must split three ways
    cases.push_back({"qwen2_tp2_pp3_to_tp3", spec, train_layout(2, 3, 1, 1), 3});
  }
  // Qwen3 dense: q_norm / k_norm, explicit head_dim (24, not 64 / 4), no QKV bias.
  const auto qwen3 = Architecture::kQwen3;
  const auto qwen3_moe = Architecture::kQwen3Moe;
  const auto mixtral = Architecture::kMixtral;
  {
    ModelSpec spec = tiny_spec(qwen3, bf16, 2);
    spec.head_dim = 24;
    cases.push_back({"qwen3_tp2_to_tp1", spec, train_layout(2, 1, 1, 1), 1});
    cases.push_back({"qwen3_tp1_dp2_to_tp2", spec, train_layout(1, 1, 1, 2), 2});
  }
  // Mixture of experts: train EP / ETP (Megatron-Core) -> vLLM's tensor-parallel or expert-parallel experts.
  cases.push_back({"moe_ep2_dp2_to_tp2", tiny_moe_spec(qwen3_moe, bf16, 2), train_layout(1, 1, 1, 2, 2), 2});
  cases.push_back(
      {"moe_ep4_dp4_to_tp2_vllm_ep", tiny_moe_spec(qwen3_moe, bf16, 2), train_layout(1, 1, 1, 4, 4), 2, true});
  cases.push_back(
      {"moe_tp2_etp2_ep2_dp2_to_tp4", tiny_moe_spec(qwen3_moe, bf16, 2), train_layout(2, 1, 1, 2, 2, 2), 4});
  cases.push_back({"moe_fp32_pp2_ep2_dp2_to_tp1", tiny_moe_spec(qwen3_moe, fp32, 4), train_layout(1, 2, 1, 2, 2), 1});
  cases.push_back({"mixtral_tp2_etp1_ep2_to_tp2_vllm_ep", tiny_moe_spec(mixtral, bf16, 2),
                   train_layout(2, 1, 1, 1, 2, 1), 2, true});
  cases.push_back({"moe_dense_layer0_tp2_etp1_ep4_dp2_to_tp4", tiny_moe_spec(qwen3_moe, bf16, 3, {0}),
                   train_layout(2, 1, 1, 2, 4, 1), 4});
  {
    ModelSpec spec = tiny_moe_spec(qwen3_moe, bf16, 2);
    spec.num_experts = 6;  // vLLM's linear placement over 4 ranks: 2, 2, 1, 1
    cases.push_back({"moe_e6_ep2_dp4_to_tp4_vllm_ep_uneven", spec, train_layout(1, 1, 1, 4, 2), 4, true});
  }
  cases.push_back({"moe_etp2_ep1_tp2_to_tp1", tiny_moe_spec(qwen3_moe, bf16, 2), train_layout(2, 1, 1, 1), 1});
  // Shared experts (qwen2_moe): split over tp on both sides while the routed experts move between EP ranks.
  cases.push_back({"qwen2_moe_ep2_dp2_to_tp2", tiny_qwen2_moe_spec(bf16, 2), train_layout(1, 1, 1, 2, 2), 2});
  cases.push_back({"qwen2_moe_tp2_etp2_ep2_dp2_to_tp4_vllm_ep", tiny_qwen2_moe_spec(bf16, 2),
                   train_layout(2, 1, 1, 2, 2, 2), 4, true});
  cases.push_back(
      {"qwen2_moe_fp32_tp2_pp2_etp1_ep2_to_tp1", tiny_qwen2_moe_spec(fp32, 2), train_layout(2, 2, 1, 1, 2, 1), 1});
  return cases;
}

// Device bytes -> host vector, through the device's own copy.
inline std::vector<std::uint8_t> download(Device& device, const void* data, std::int64_t bytes, Residency where) {
  std::vector<std::uint8_t> host(static_cast<std::size_t>(bytes));
  if (bytes > 0) device.copy(host.data(), Residency::kCpu, data, where, bytes);
  device.synchronize();
  return host;
}

// The rank's train parameter buffers at `version`, made on the device with Device::generate.
struct TrainBuffers {
  std::vector<std::unique_ptr<FlatBuffer>> buffers;
  std::vector<FlatBuffer*> pointers;

  TrainBuffers(const RankPlan& plan, Device& device, EventSink* events) {
    for (const BufferLayout& layout : plan.train_buffers) {
      buffers.push_back(std::make_unique<FlatBuffer>(layout, BufferKind::kParams, device, events, plan.rank));
      buffers.back()->move_to(Residency::kGpu, /*keep_contents=*/false);
      pointers.push_back(buffers.back().get());
    }
  }
  void generate(const RankPlan& plan, Device& device, std::uint32_t version) {
    for (std::size_t i = 0; i < buffers.size(); ++i)
      device.generate(plan.train_buffers[i], version, buffers[i]->data());
    device.synchronize();
  }
};

// "" when the inference buffer holds exactly the reference's shard `tp_rank` at `version`.
inline std::string compare_with_reference(const ModelSpec& spec, const InferenceLayout& inference, int tp_rank,
                                          std::uint32_t version, Device& device, const FlatBuffer& buffer) {
  const BufferLayout layout = inference_param_buffer(spec, inference, tp_rank);
  if (buffer.bytes() != layout.bytes) return "buffer has " + std::to_string(buffer.bytes()) + " bytes";
  const std::vector<std::uint8_t> expected =
      reference::expected_inference_buffer(spec, inference, tp_rank, version, layout);
  const std::vector<std::uint8_t> actual = download(device, buffer.data(), buffer.bytes(), buffer.residency());
  return reference::first_difference(layout, expected, actual.data(), actual.size());
}

// Bytes of the buffers resident in `where`, replayed from residency events (the engine's own account).
inline std::int64_t live_bytes(const std::vector<Event>& events, Residency where) {
  std::map<std::string, std::pair<Residency, std::int64_t>> buffers;
  for (const Event& event : events) {
    if (event.type == EventType::kResidency) buffers[event.buffer] = {event.to, event.bytes};
    if (event.type == EventType::kBufferDestroyed) buffers.erase(event.buffer);
  }
  std::int64_t total = 0;
  for (const auto& [name, state] : buffers) {
    if (state.first == where) total += state.second;
  }
  return total;
}

inline std::int64_t transfer_bytes(const std::vector<Event>& events, TransferPath path, const std::string& prefix,
                                   std::size_t first_event = 0) {
  std::int64_t total = 0;
  for (std::size_t i = first_event; i < events.size(); ++i) {
    const Event& event = events[i];
    if (event.type == EventType::kTransfer && event.path == path && event.operation.rfind(prefix, 0) == 0) {
      total += event.bytes;
    }
  }
  return total;
}

}  // namespace hybridshard::core::testing
