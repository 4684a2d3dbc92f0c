// Element types of weights and the byte sizes that all accounting is done in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace hybridshard::core {

enum class DType : std::uint8_t { kBFloat16, kFloat16, kFloat32 };

constexpr std::size_t dtype_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// "bf16", "fp16", "fp32".
std::string_view dtype_name(DType dtype);

// Accepts "bf16"/"bfloat16", "fp16"/"float16"/"half", "fp32"/"float32"/"float".
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace hybridshard::core
