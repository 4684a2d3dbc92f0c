// Where a buffer's bytes live, and what the buffer is for.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace hybridshard::core {

// gpu: device memory (on CPU ranks: the host memory that stands in for the device); cpu: pinned host memory;
// none: not allocated.
enum class Residency : std::uint8_t { kGpu, kCpu, kNone };

enum class BufferKind : std::uint8_t {
  kParams,           // train-layout parameters (model dtype), one buffer per stage/chunk
  kGrads,            // fp32 main gradients
  kMasterParams,     // fp32 master weights
  kOptimizerState,   // Adam moments (exp_avg, exp_avg_sq), fp32
  kInferenceParams,  // inference shard (vLLM layout)
  kKvCache,          // rollout KV cache
  kStaging,          // send / receive staging of a transition
};

// Every buffer kind, in declaration order (what per-kind reports list, each kind even at 0 bytes).
inline constexpr std::array<BufferKind, 7> kBufferKinds = {
    BufferKind::kParams,          BufferKind::kGrads,   BufferKind::kMasterParams, BufferKind::kOptimizerState,
    BufferKind::kInferenceParams, BufferKind::kKvCache, BufferKind::kStaging,
};

std::string_view residency_name(Residency residency);  // "gpu", "cpu", "none"
std::string_view buffer_kind_name(BufferKind kind);    // "params", "grads", "master_params", "optimizer",
                                                       // "inference_params", "kv_cache", "staging"
std::optional<Residency> parse_residency(std::string_view name);
std::optional<BufferKind> parse_buffer_kind(std::string_view name);

}  // namespace hybridshard::core
