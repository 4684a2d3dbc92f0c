// One kernel for a whole table of 2-D piece copies. The host gives every thread block its chunk (piece and chunk
// within the piece) in a per-block table, so no block searches. A block copies up to kCopyChunkBytes of one piece
// (row-major over rows x row_bytes) with the widest vector the piece's alignment allows; each thread divides once to
// find its first (row, column) and then advances by the block's width with adds only. Launch count and per-vector
// integer division, not bandwidth, are what a gather kernel loses against a plain copy (GPU.md).
#include <cstdint>

#include "detail/cuda_check.h"
#include "detail/kernels.h"

namespace hybridshard::core::detail {
namespace {

constexpr int kCopyThreads = 256;
constexpr int kUnroll = 4;  // loads in flight per thread before their stores

// a / b for non-negative values; 32-bit division (a few times cheaper on the GPU) when both fit.
__device__ __forceinline__ std::int64_t divide(std::int64_t a, std::int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<std::uint32_t>(a) / static_cast<std::uint32_t>(b);
  return a / b;
}

template <typename Vector>
__device__ void copy_chunk(const DevicePiece& piece, std::int64_t chunk_in_piece) {
  constexpr std::int64_t kWidth = sizeof(Vector);
  constexpr std::int64_t kChunkVectors = kCopyChunkBytes / kWidth;
  const std::int64_t row_vectors = piece.row_bytes / kWidth;
  const std::int64_t total_vectors = piece.rows * row_vectors;
  const std::int64_t begin = chunk_in_piece * kChunkVectors;
  const std::int64_t end = begin + kChunkVectors < total_vectors ? begin + kChunkVectors : total_vectors;

  std::int64_t v = begin + threadIdx.x;
  if (v >= end) return;
  // Invariant at the top of each step: vector v sits at (row, col) of the piece, at src_offset / dst_offset.
  const std::int64_t row = divide(v, row_vectors);
  std::int64_t col = v - row * row_vectors;
  std::int64_t src_offset = row * piece.src_stride + col * kWidth;
  std::int64_t dst_offset = row * piece.dst_stride + col * kWidth;
  // Moving on by kCopyThreads vectors is step_rows rows and step_cols columns, plus one row when the column wraps.
  const std::int64_t step_rows = divide(kCopyThreads, row_vectors);
  const std::int64_t step_cols = kCopyThreads - step_rows * row_vectors;
  const std::int64_t src_step = step_rows * piece.src_stride + step_cols * kWidth;
  const std::int64_t dst_step = step_rows * piece.dst_stride + step_cols * kWidth;
  const std::int64_t src_wrap = piece.src_stride - row_vectors * kWidth;
  const std::int64_t dst_wrap = piece.dst_stride - row_vectors * kWidth;

  for (; v < end; v += static_cast<std::int64_t>(kUnroll) * kCopyThreads) {
    Vector values[kUnroll];
    std::int64_t dst_offsets[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (v + static_cast<std::int64_t>(k) * kCopyThreads < end) {
        values[k] = *reinterpret_cast<const Vector*>(piece.src + src_offset);
        dst_offsets[k] = dst_offset;
      } else {
        dst_offsets[k] = -1;
      }
      col += step_cols;
      src_offset += src_step;
      dst_offset += dst_step;
      if (col >= row_vectors) {
        col -= row_vectors;
        src_offset += src_wrap;
        dst_offset += dst_wrap;
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (dst_offsets[k] >= 0) *reinterpret_cast<Vector*>(piece.dst + dst_offsets[k]) = values[k];
    }
  }
}

__global__ void __launch_bounds__(kCopyThreads)
    copy_pieces_kernel(const DevicePiece* pieces, const DeviceChunk* chunks, std::int64_t num_chunks) {
  for (std::int64_t block = blockIdx.x; block < num_chunks; block += gridDim.x) {
    const DeviceChunk chunk = chunks[block];
    const DevicePiece piece = pieces[chunk.piece];
    switch (piece.vector_bytes) {
      case 16:
        copy_chunk<uint4>(piece, chunk.chunk);
        break;
      case 8:
        copy_chunk<uint2>(piece, chunk.chunk);
        break;
      case 4:
        copy_chunk<unsigned int>(piece, chunk.chunk);
        break;
      case 2:
        copy_chunk<unsigned short>(piece, chunk.chunk);
        break;
      default:
        copy_chunk<unsigned char>(piece, chunk.chunk);
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

void launch_copy_pieces(const DevicePiece* pieces, const DeviceChunk* chunks, std::int64_t num_chunks,
                        std::int64_t max_blocks, cudaStream_t stream) {
  if (num_chunks <= 0) return;
  constexpr std::int64_t kMaxBlocks = 1 << 30;
  const std::int64_t most = max_blocks > 0 && max_blocks < kMaxBlocks ? max_blocks : kMaxBlocks;
  const auto blocks = static_cast<unsigned int>(num_chunks < most ? num_chunks : most);
  copy_pieces_kernel<<<blocks, kCopyThreads, 0, stream>>>(pieces, chunks, num_chunks);
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
