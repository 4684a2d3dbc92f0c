#include "hybridshard/core/residency.h"

#include <array>
#include <utility>

namespace hybridshard::core {
namespace {

constexpr std::array<std::pair<Residency, std::string_view>, 3> kResidencyNames{{
    {Residency::kGpu, "gpu"},
    {Residency::kCpu, "cpu"},
    {Residency::kNone, "none"},
}};

constexpr std::array<std::pair<BufferKind, std::string_view>, 7> kBufferKindNames{{
    {BufferKind::kParams, "params"},
    {BufferKind::kGrads, "grads"},
    {BufferKind::kMasterParams, "master_params"},
    {BufferKind::kOptimizerState, "optimizer"},
    {BufferKind::kInferenceParams, "inference_params"},
    {BufferKind::kKvCache, "kv_cache"},
    {BufferKind::kStaging, "staging"},
}};

}  // namespace

std::string_view residency_name(Residency residency) {
  for (const auto& [value, name] : kResidencyNames) {
    if (value == residency) return name;
  }
  return "unknown";
}

std::string_view buffer_kind_name(BufferKind kind) {
  for (const auto& [value, name] : kBufferKindNames) {
    if (value == kind) return name;
  }
  return "unknown";
}

std::optional<Residency> parse_residency(std::string_view name) {
  for (const auto& [value, known] : kResidencyNames) {
    if (known == name) return value;
  }
  return std::nullopt;
}

std::optional<BufferKind> parse_buffer_kind(std::string_view name) {
  for (const auto& [value, known] : kBufferKindNames) {
    if (known == name) return value;
  }
  return std::nullopt;
}

}  // namespace hybridshard::core
