// One kernel for a whole table of 2-D piece copies. Thread block b copies chunk b: it finds its piece by binary search
// over first_chunk, then moves up to kCopyChunkBytes of the piece (row-major over rows x row_bytes) with the widest
// vector the piece's alignment allows. Launch count, not bandwidth, is what per-piece copies lose (GPU.md).
#include <cstdint>

#include "detail/cuda_check.h"
#include "detail/kernels.h"

namespace hybridshard::core::detail {
namespace {

constexpr int kCopyThreads = 256;
constexpr int kUnroll = 4;  // loads in flight per thread before their stores

__device__ int find_piece(const DevicePiece* pieces, int num_pieces, std::int64_t chunk) {
  int lo = 0;
  int hi = num_pieces - 1;
  while (lo < hi) {  // the last piece whose first_chunk <= chunk
    const int mid = (lo + hi + 1) / 2;
    if (pieces[mid].first_chunk <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

template <typename Vector>
__device__ void copy_chunk(const DevicePiece& piece, std::int64_t chunk_in_piece) {
  constexpr std::int64_t kWidth = sizeof(Vector);
  const std::int64_t row_vectors = piece.row_bytes / kWidth;
  const std::int64_t total_vectors = piece.rows * row_vectors;
  constexpr std::int64_t kChunkVectors = kCopyChunkBytes / kWidth;
  const std::int64_t begin = chunk_in_piece * kChunkVectors;
  const std::int64_t end = begin + kChunkVectors < total_vectors ? begin + kChunkVectors : total_vectors;

  // Each thread handles vectors begin + threadIdx.x + k * blockDim.x; kUnroll of them are loaded before any store.
  for (std::int64_t base = begin + threadIdx.x; base < end; base += static_cast<std::int64_t>(kUnroll) * blockDim.x) {
    Vector values[kUnroll];
    std::int64_t dst_offsets[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const std::int64_t v = base + static_cast<std::int64_t>(k) * blockDim.x;
      if (v < end) {
        const std::int64_t row = v / row_vectors;
        const std::int64_t col = v - row * row_vectors;
        values[k] = *reinterpret_cast<const Vector*>(piece.src + row * piece.src_stride + col * kWidth);
        dst_offsets[k] = row * piece.dst_stride + col * kWidth;
      } else {
        dst_offsets[k] = -1;
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (dst_offsets[k] >= 0) *reinterpret_cast<Vector*>(piece.dst + dst_offsets[k]) = values[k];
    }
  }
}

__global__ void __launch_bounds__(kCopyThreads)
    copy_pieces_kernel(const DevicePiece* pieces, int num_pieces, std::int64_t num_chunks) {
  for (std::int64_t chunk = blockIdx.x; chunk < num_chunks; chunk += gridDim.x) {
    const int index = find_piece(pieces, num_pieces, chunk);
    const DevicePiece piece = pieces[index];
    const std::int64_t chunk_in_piece = chunk - piece.first_chunk;
    switch (piece.vector_bytes) {
      case 16:
        copy_chunk<uint4>(piece, chunk_in_piece);
        break;
      case 8:
        copy_chunk<uint2>(piece, chunk_in_piece);
        break;
      case 4:
        copy_chunk<unsigned int>(piece, chunk_in_piece);
        break;
      case 2:
        copy_chunk<unsigned short>(piece, chunk_in_piece);
        break;
      default:
        copy_chunk<unsigned char>(piece, chunk_in_piece);
        break;
    }
  }
}

template <typename Element>
__global__ void count_mismatches_kernel(const Element* actual, const Element* expected, std::int64_t num_elements,
                                        unsigned long long* counter) {
  unsigned long long local = 0;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < num_elements;
       i += stride) {
    local += actual[i] != expected[i] ? 1ull : 0ull;
  }
  // Warp sum, then one atomic per warp.
  for (int offset = 16; offset > 0; offset /= 2) local += __shfl_down_sync(0xFFFFFFFFu, local, offset);
  if ((threadIdx.x & 31) == 0 && local != 0) atomicAdd(counter, local);
}

}  // namespace

void launch_copy_pieces(const DevicePiece* pieces, std::int32_t num_pieces, std::int64_t num_chunks,
                        cudaStream_t stream) {
  if (num_pieces <= 0 || num_chunks <= 0) return;
  constexpr std::int64_t kMaxBlocks = 1 << 30;
  const auto blocks = static_cast<unsigned int>(num_chunks < kMaxBlocks ? num_chunks : kMaxBlocks);
  copy_pieces_kernel<<<blocks, kCopyThreads, 0, stream>>>(pieces, num_pieces, num_chunks);
  HS_CUDA_CHECK_LAUNCH();
}

void launch_count_mismatches(const void* actual, const void* expected, std::int64_t num_elements,
                             std::int32_t element_bytes, unsigned long long* counter, cudaStream_t stream) {
  if (num_elements <= 0) return;
  constexpr int kThreads = 256;
  const std::int64_t wanted = (num_elements + kThreads - 1) / kThreads;
  const auto blocks = static_cast<unsigned int>(wanted < 4096 ? wanted : 4096);
  switch (element_bytes) {
    case 4:
      count_mismatches_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const std::uint32_t*>(actual),
                                                               static_cast<const std::uint32_t*>(expected),
                                                               num_elements, counter);
      break;
    case 2:
      count_mismatches_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const std::uint16_t*>(actual),
                                                               static_cast<const std::uint16_t*>(expected),
                                                               num_elements, counter);
      break;
    default:
      count_mismatches_kernel<<<blocks, kThreads, 0, stream>>>(
          static_cast<const std::uint8_t*>(actual), static_cast<const std::uint8_t*>(expected), num_elements, counter);
      break;
  }
  HS_CUDA_CHECK_LAUNCH();
}

}  // namespace hybridshard::core::detail
