// Element bit patterns of bf16, fp16 and fp32, converted both ways on host and device (nvcc): the CPU device and the
// CUDA kernels write weights with them, and checkpoint reading and writing converts between dtypes with them.
// float -> bf16 / fp16 rounds to nearest even (fp16 with subnormals; overflow gives inf); NaN stays NaN (quiet).
#pragma once

#include <cstdint>

#include "hybridshard/core/weight_generator.h"  // HS_HOST_DEVICE, float_to_bf16_bits

namespace hybridshard::core {

HS_HOST_DEVICE inline std::uint32_t float_bits(float value) {
  union {
    float f;
    std::uint32_t u;
  } bits{value};
  return bits.u;
}

HS_HOST_DEVICE inline float bits_to_float(std::uint32_t value) {
  union {
    std::uint32_t u;
    float f;
  } bits{value};
  return bits.f;
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

// Exact (every binary16 value is a float); subnormals are normalised.
HS_HOST_DEVICE inline float fp16_bits_to_float(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  std::uint32_t exponent = (half >> 10) & 0x1Fu;
  std::uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (mantissa << 13));  // inf / NaN
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    return bits_to_float(sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13));
  }
  return bits_to_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

// Exact: bf16 is the top half of a float.
HS_HOST_DEVICE inline float bf16_bits_to_float(std::uint16_t value) {
  return bits_to_float(static_cast<std::uint32_t>(value) << 16);
}

}  // namespace hybridshard::core
