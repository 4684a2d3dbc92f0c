// Independent references for the device tests: random piece tables and a byte-by-byte copy, weight decoding.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "hybridshard/core/reshard_plan.h"

namespace hybridshard::core::testing {

// Non-overlapping destination rectangles (each piece owns a band of the destination), random sources inside
// `num_src` buffers of `src_bytes` each (or the message when src_buffer == -1). `granule` rounds offsets, strides and
// row widths: 16 gives vector-aligned pieces, 1 gives arbitrary ones.
inline std::vector<Piece> random_pieces(std::mt19937& random, int num_pieces, int num_src, std::int64_t src_bytes,
                                        std::int64_t band_bytes, std::int64_t granule) {
  std::vector<Piece> pieces;
  for (int i = 0; i < num_pieces; ++i) {
    Piece piece;
    auto pick = [&](std::int64_t lo, std::int64_t hi) {
      return std::uniform_int_distribution<std::int64_t>(lo, hi)(random);
    };
    piece.src_buffer = static_cast<int>(pick(-1, num_src - 1));
    piece.row_bytes = pick(1, 96 / granule) * granule;
    piece.rows = pick(1, 12);
    piece.dst_stride = piece.row_bytes + pick(0, 3) * granule;
    piece.src_stride = piece.row_bytes + pick(0, 5) * granule;
    const std::int64_t dst_extent = (piece.rows - 1) * piece.dst_stride + piece.row_bytes;
    const std::int64_t src_extent = (piece.rows - 1) * piece.src_stride + piece.row_bytes;
    piece.dst_offset = i * band_bytes + pick(0, (band_bytes - dst_extent) / granule) * granule;
    piece.src_offset = pick(0, (src_bytes - src_extent) / granule) * granule;
    pieces.push_back(piece);
  }
  return pieces;
}

inline void reference_copy_pieces(const std::vector<Piece>& pieces, const std::vector<const std::uint8_t*>& srcs,
                                  const std::uint8_t* message, std::uint8_t* dst) {
  for (const Piece& piece : pieces) {
    const std::uint8_t* src = piece.src_buffer < 0 ? message : srcs[static_cast<std::size_t>(piece.src_buffer)];
    for (std::int64_t r = 0; r < piece.rows; ++r) {
      for (std::int64_t b = 0; b < piece.row_bytes; ++b) {
        dst[piece.dst_offset + r * piece.dst_stride + b] = src[piece.src_offset + r * piece.src_stride + b];
      }
    }
  }
}

inline float decode_bf16(std::uint16_t bits) {
  const std::uint32_t widened = static_cast<std::uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof value);
  return value;
}

// IEEE half to float, written plainly (normals, subnormals, zero; no inf/NaN needed here).
inline float decode_fp16(std::uint16_t bits) {
  const int sign = (bits >> 15) ? -1 : 1;
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  if (exponent == 0) return static_cast<float>(sign) * static_cast<float>(mantissa) / 1024.0f / 16384.0f;
  float value = 1.0f + static_cast<float>(mantissa) / 1024.0f;
  for (int e = exponent - 15; e > 0; --e) value *= 2.0f;
  for (int e = exponent - 15; e < 0; ++e) value /= 2.0f;
  return static_cast<float>(sign) * value;
}

}  // namespace hybridshard::core::testing
