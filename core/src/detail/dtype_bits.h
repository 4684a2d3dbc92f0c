// Element bit patterns shared by the CPU device and the CUDA kernels (host and device), so that both write the same
// bytes for the same weight_value().
#pragma once

#include <cstdint>

#include "hybridshard/core/weight_generator.h"

namespace hybridshard::core::detail {

HS_HOST_DEVICE inline std::uint32_t float_bits(float value) {
  union {
    float f;
    std::uint32_t u;
  } bits{value};
  return bits.u;
}

// IEEE binary16, round to nearest even; exact for weight_value()'s k/128 values. NaN stays NaN, overflow gives inf.
HS_HOST_DEVICE inline std::uint16_t float_to_fp16_bits(float value) {
  const std::uint32_t u = float_bits(value);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t exponent = (u >> 23) & 0xFFu;
  std::uint32_t mantissa = u & 0x7FFFFFu;
  if (exponent == 0xFFu) return static_cast<std::uint16_t>(sign | 0x7C00u | (mantissa != 0 ? 0x200u : 0u));
  const int e = static_cast<int>(exponent) - 127 + 15;
  if (e >= 31) return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (e <= 0) {
    // Subnormal half (or zero): shift the mantissa with its implicit bit into place, rounding to nearest even.
    if (e < -10) return static_cast<std::uint16_t>(sign);
    mantissa |= 0x800000u;
    const int shift = 14 - e;
    const std::uint32_t half_mantissa = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1);
    std::uint32_t result = half_mantissa;
    if (rest > halfway || (rest == halfway && (half_mantissa & 1u))) ++result;
    return static_cast<std::uint16_t>(sign | result);
  }
  std::uint32_t result = (static_cast<std::uint32_t>(e) << 10) | (mantissa >> 13);
  const std::uint32_t rest = mantissa & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;  // may carry into the exponent: still right
  return static_cast<std::uint16_t>(sign | result);
}

// Writes weight_value(...) as element `index` of an array of `element_bytes`-byte elements of `dtype_code`
// (0 bf16, 1 fp16, 2 fp32: DType's values).
HS_HOST_DEVICE inline void store_weight(void* base, std::int64_t index, int dtype_code, float value) {
  if (dtype_code == 2) {
    static_cast<std::uint32_t*>(base)[index] = float_bits(value);
  } else if (dtype_code == 1) {
    static_cast<std::uint16_t*>(base)[index] = float_to_fp16_bits(value);
  } else {
    static_cast<std::uint16_t*>(base)[index] = float_to_bf16_bits(value);
  }
}

}  // namespace hybridshard::core::detail
