// The piece kernel's table entries, shared by the kernel (core/src/cuda/piece_kernels.cu) and the host code that
// builds its tables (detail/piece_table.h). Plain types only: nvcc and the host compiler both read this.
#pragma once

#include <cstdint>

namespace hybridshard::core::detail {

// Each thread block of the piece kernel copies one chunk of this many bytes of one piece (the last chunk of a piece
// may be shorter).
inline constexpr std::int64_t kCopyChunkBytes = 64 * 1024;

// One 2-D piece with resolved addresses. `vector_bytes` (16, 8, 4, 2 or 1) divides both addresses, row_bytes and the
// strides.
struct DevicePiece {
  const unsigned char* src = nullptr;
  unsigned char* dst = nullptr;
  std::int64_t rows = 0;
  std::int64_t row_bytes = 0;
  std::int64_t src_stride = 0;
  std::int64_t dst_stride = 0;
  std::int32_t vector_bytes = 1;
};

// The per-block table of the piece kernel: block b copies chunk `chunk` (counted from 0 within the piece, each
// kCopyChunkBytes of the piece's row-major bytes) of piece `piece`. Computed on the host, so no block searches.
struct DeviceChunk {
  std::int32_t piece = 0;
  std::int32_t chunk = 0;
};

}  // namespace hybridshard::core::detail
