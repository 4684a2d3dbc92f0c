// Host launchers of the CUDA kernels (core/src/cuda/*.cu). Plain pointers, counts and a stream; tables live in device
// memory. Chunk sizes are fixed so that the host can size grids and tables.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "detail/piece_entries.h"

namespace hybridshard::core::detail {

// Each thread block of the generate kernel writes one chunk of this many elements of one block.
inline constexpr std::int64_t kGenerateChunkElements = 8 * 1024;

// One generate entry (see generate_table.h) with its first chunk.
struct DeviceGenerateEntry {
  std::int64_t hf_row = 0;
  std::int64_t hf_col = 0;
  std::int64_t first_element = 0;
  std::int64_t row_elements = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t first_chunk = 0;
  std::int32_t hf_tensor = 0;
};

// Copies every entry of `chunks` (num_chunks of them), each its chunk of `pieces`: one block per chunk, or at most
// `max_blocks` blocks that take the chunks in turn (0: no limit).
void launch_copy_pieces(const DevicePiece* pieces, const DeviceChunk* chunks, std::int64_t num_chunks,
                        std::int64_t max_blocks, cudaStream_t stream);

void launch_generate(const DeviceGenerateEntry* entries, std::int32_t num_entries, std::int64_t num_chunks, void* base,
                     std::int32_t dtype_code, std::uint32_t version, cudaStream_t stream);

// Adds the number of differing `element_bytes`-wide elements to *counter (device memory).
void launch_count_mismatches(const void* actual, const void* expected, std::int64_t num_elements,
                             std::int32_t element_bytes, unsigned long long* counter, cudaStream_t stream);

}  // namespace hybridshard::core::detail
