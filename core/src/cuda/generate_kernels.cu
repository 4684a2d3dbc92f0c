// Writes weight_value() for every element of every block of a layout (the table from generate_table.h). Thread block
// b writes chunk b: kGenerateChunkElements consecutive elements of one block in row-major order. The value and bit
// pattern functions are the same host/device code the CPU device uses, so both write identical bytes.
#include <cstdint>

#include "detail/cuda_check.h"
#include "detail/dtype_bits.h"
#include "detail/kernels.h"
#include "hybridshard/core/weight_generator.h"

namespace hybridshard::core::detail {
namespace {

constexpr int kGenerateThreads = 256;

__device__ int find_entry(const DeviceGenerateEntry* entries, int num_entries, std::int64_t chunk) {
  int lo = 0;
  int hi = num_entries - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (entries[mid].first_chunk <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kGenerateThreads)
    generate_kernel(const DeviceGenerateEntry* entries, int num_entries, std::int64_t num_chunks, void* base,
                    int dtype_code, std::uint32_t version) {
  for (std::int64_t chunk = blockIdx.x; chunk < num_chunks; chunk += gridDim.x) {
    const DeviceGenerateEntry entry = entries[find_entry(entries, num_entries, chunk)];
    const std::int64_t total = entry.rows * entry.cols;
    const std::int64_t begin = (chunk - entry.first_chunk) * kGenerateChunkElements;
    const std::int64_t end = begin + kGenerateChunkElements < total ? begin + kGenerateChunkElements : total;
    for (std::int64_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
      const std::int64_t r = e / entry.cols;
      const std::int64_t c = e - r * entry.cols;
      const float value = weight_value(entry.hf_tensor, entry.hf_row + r, entry.hf_col + c, version);
      store_weight(base, entry.first_element + r * entry.row_elements + c, dtype_code, value);
    }
  }
}

}  // namespace

void launch_generate(const DeviceGenerateEntry* entries, std::int32_t num_entries, std::int64_t num_chunks, void* base,
                     std::int32_t dtype_code, std::uint32_t version, cudaStream_t stream) {
  if (num_entries <= 0 || num_chunks <= 0) return;
  constexpr std::int64_t kMaxBlocks = 1 << 30;
  const auto blocks = static_cast<unsigned int>(num_chunks < kMaxBlocks ? num_chunks : kMaxBlocks);
  generate_kernel<<<blocks, kGenerateThreads, 0, stream>>>(entries, num_entries, num_chunks, base, dtype_code, version);
  HS_CUDA_CHECK_LAUNCH();
}

}  // namespace hybridshard::core::detail
