// Deterministic weights: the value of element (row, col) of full Hugging Face tensor `hf_tensor` at `version` is a
// pure function, so any rank can produce any slice of any tensor without communication, and a check needs no
// gather: each rank verifies what it holds. Values are multiples of 1/128 in [-1, 1) (exact in bf16, fp16, fp32).
// The same functions compile for host and device (nvcc), so kernels and CPU code agree bit for bit.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HS_HOST_DEVICE __host__ __device__
#else
#define HS_HOST_DEVICE
#endif

namespace hybridshard::core {

HS_HOST_DEVICE inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// k / 128 for k in [-128, 128): at most 8 significant bits, so exact in bf16, fp16 and fp32.
HS_HOST_DEVICE inline float weight_value(int hf_tensor, std::int64_t row, std::int64_t col, std::uint32_t version) {
  const std::uint64_t key = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(hf_tensor)) << 40) ^
                            (static_cast<std::uint64_t>(row) << 20) ^ static_cast<std::uint64_t>(col) ^
                            (static_cast<std::uint64_t>(version) << 52);
  const std::uint64_t h = mix64(key ^ mix64(static_cast<std::uint64_t>(row) * 0x100000001B3ull + col));
  const int k = static_cast<int>(h & 0xFF) - 128;
  return static_cast<float>(k) / 128.0f;
}

// The bf16 bit pattern of a float (round to nearest even; exact for weight_value's results; NaN stays a quiet NaN).
// The other conversions are in dtype_bits.h.
HS_HOST_DEVICE inline std::uint16_t float_to_bf16_bits(float value) {
  union {
    float f;
    std::uint32_t u;
  } bits{value};
  if ((bits.u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits.u >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7FFFu + ((bits.u >> 16) & 1u);
  return static_cast<std::uint16_t>((bits.u + rounding) >> 16);
}

}  // namespace hybridshard::core
