// The CUDA device: cudaMalloc for "gpu", cudaHostAlloc (pinned) for "cpu", one non-blocking compute stream for every
// copy and kernel, and exact accounting of what this device allocated. Piece tables and generate tables are uploaded
// through a pinned staging area into a device scratch area; neither is counted in bytes_in_use (they are this
// device's working memory, not buffers), but both show in used_memory().
#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "detail/cuda_check.h"
#include "detail/generate_table.h"
#include "detail/kernels.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

std::string where_name(Residency where) { return std::string(residency_name(where)); }

// The widest of 16, 8, 4, 2, 1 that divides every value.
std::int32_t common_alignment(std::initializer_list<std::uint64_t> values) {
  for (std::int32_t width : {16, 8, 4, 2}) {
    bool all = true;
    for (std::uint64_t value : values) all = all && value % static_cast<std::uint64_t>(width) == 0;
    if (all) return width;
  }
  return 1;
}

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(int index) : index_(index) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    if (index < 0 || index >= count) {
      HS_THROW(Error, "cuda device " + std::to_string(index) + " requested but " + std::to_string(count) +
                          " CUDA device(s) are present");
    }
    HS_CUDA_CHECK(cudaSetDevice(index_));
    cudaDeviceProp properties{};
    HS_CUDA_CHECK(cudaGetDeviceProperties(&properties, index_));
    name_ = properties.name;
    HS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&staging_free_, cudaEventDisableTiming));
  }

  ~CudaDevice() override {
    cudaSetDevice(index_);
    cudaStreamSynchronize(stream_);
    // Buffers still allocated belong to owners that outlived their device: free them rather than leak.
    for (auto& [pointer, allocation] : allocations_) {
      if (allocation.where == Residency::kGpu) {
        cudaFree(pointer);
      } else {
        cudaFreeHost(pointer);
      }
    }
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (staging_ != nullptr) cudaFreeHost(staging_);
    cudaEventDestroy(staging_free_);
    cudaStreamDestroy(stream_);
  }

  DeviceType type() const override { return DeviceType::kCuda; }
  std::string description() const override { return "cuda:" + std::to_string(index_) + " " + name_; }

  void* allocate(Residency where, std::int64_t bytes) override {
    if (where == Residency::kNone) HS_THROW(Error, "cuda device: cannot allocate with residency none");
    if (bytes < 0) HS_THROW(Error, "cuda device: negative allocation of " + std::to_string(bytes) + " bytes");
    HS_CUDA_CHECK(cudaSetDevice(index_));
    void* pointer = nullptr;
    // A zero-byte buffer still gets a unique address (one byte, not counted).
    const auto size = static_cast<std::size_t>(std::max<std::int64_t>(bytes, 1));
    const cudaError_t error =
        where == Residency::kGpu ? cudaMalloc(&pointer, size) : cudaHostAlloc(&pointer, size, cudaHostAllocPortable);
    if (error != cudaSuccess) {
      cudaGetLastError();
      std::size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      const std::string message =
          "cuda device " + std::to_string(index_) + ": cannot allocate " + std::to_string(bytes) + " bytes (" +
          where_name(where) + "): " + std::to_string(bytes_in_use(where)) + " bytes in use by hybridshard, " +
          std::to_string(free_bytes) + " of " + std::to_string(total_bytes) + " device bytes free";
      if (error == cudaErrorMemoryAllocation) {
        throw OutOfMemoryError(message, __FILE__, __LINE__, where == Residency::kGpu ? "cudaMalloc" : "cudaHostAlloc",
                               cudaGetErrorString(error));
      }
      throw Error(message, __FILE__, __LINE__, where == Residency::kGpu ? "cudaMalloc" : "cudaHostAlloc",
                  cudaGetErrorString(error));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    allocations_[pointer] = Allocation{where, bytes};
    in_use_[index(where)] += bytes;
    return pointer;
  }

  void deallocate(Residency where, void* pointer, std::int64_t bytes) override {
    if (pointer == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto found = allocations_.find(pointer);
      if (found == allocations_.end()) {
        HS_THROW(Error, "cuda device: deallocate of a pointer this device did not allocate");
      }
      if (found->second.where != where || found->second.bytes != bytes) {
        HS_THROW(Error, "cuda device: deallocate(" + where_name(where) + ", " + std::to_string(bytes) +
                            " bytes) of an allocation made as (" + where_name(found->second.where) + ", " +
                            std::to_string(found->second.bytes) + " bytes)");
      }
      in_use_[index(where)] -= bytes;
      allocations_.erase(found);
    }
    HS_CUDA_CHECK(cudaSetDevice(index_));
    // Work queued on the stream may still read or write it.
    HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (where == Residency::kGpu) {
      HS_CUDA_CHECK(cudaFree(pointer));
    } else {
      HS_CUDA_CHECK(cudaFreeHost(pointer));
    }
  }

  std::int64_t bytes_in_use(Residency where) const override {
    if (where == Residency::kNone) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    return in_use_[index(where)];
  }

  std::int64_t total_memory() const override {
    std::size_t free_bytes = 0, total_bytes = 0;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<std::int64_t>(total_bytes);
  }

  std::int64_t used_memory() const override {
    std::size_t free_bytes = 0, total_bytes = 0;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<std::int64_t>(total_bytes - free_bytes);
  }

  void copy(void* dst, Residency dst_where, const void* src, Residency src_where, std::int64_t bytes) override {
    if (bytes < 0) HS_THROW(Error, "cuda device: copy of negative size " + std::to_string(bytes));
    if (bytes == 0) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDefault, stream_));
  }

  void fill_zero(void* dst, std::int64_t bytes) override {
    if (bytes <= 0) return;
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaMemsetAsync(dst, 0, static_cast<std::size_t>(bytes), stream_));
  }

  void copy_pieces(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                   void* dst_base) override {
    std::vector<detail::DevicePiece> table;
    table.reserve(pieces.size());
    std::int64_t num_chunks = 0;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      const Piece& piece = pieces[i];
      const void* base = nullptr;
      if (piece.src_buffer == -1) {
        base = message_base;
      } else if (piece.src_buffer >= 0 && static_cast<std::size_t>(piece.src_buffer) < src_bases.size()) {
        base = src_bases[static_cast<std::size_t>(piece.src_buffer)];
      } else {
        HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " reads source buffer " +
                            std::to_string(piece.src_buffer) + " of " + std::to_string(src_bases.size()));
      }
      if (piece.rows <= 0 || piece.row_bytes <= 0) continue;
      if (base == nullptr || dst_base == nullptr) {
        HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " has a null base");
      }
      detail::DevicePiece entry;
      entry.src = static_cast<const unsigned char*>(base) + piece.src_offset;
      entry.dst = static_cast<unsigned char*>(dst_base) + piece.dst_offset;
      entry.rows = piece.rows;
      entry.row_bytes = piece.row_bytes;
      entry.src_stride = piece.src_stride;
      entry.dst_stride = piece.dst_stride;
      const std::uint64_t src_stride = piece.rows > 1 ? static_cast<std::uint64_t>(piece.src_stride) : 0;
      const std::uint64_t dst_stride = piece.rows > 1 ? static_cast<std::uint64_t>(piece.dst_stride) : 0;
      entry.vector_bytes =
          common_alignment({reinterpret_cast<std::uintptr_t>(entry.src), reinterpret_cast<std::uintptr_t>(entry.dst),
                            static_cast<std::uint64_t>(piece.row_bytes), src_stride, dst_stride});
      entry.first_chunk = num_chunks;
      num_chunks += (piece.bytes() + detail::kCopyChunkBytes - 1) / detail::kCopyChunkBytes;
      table.push_back(entry);
    }
    if (table.empty()) return;
    const auto* device_table =
        static_cast<const detail::DevicePiece*>(upload(table.data(), table.size() * sizeof(table[0])));
    detail::launch_copy_pieces(device_table, static_cast<std::int32_t>(table.size()), num_chunks, stream_);
  }

  void generate(const BufferLayout& layout, std::uint32_t version, void* base) override {
    const std::vector<detail::GenerateEntry> entries = detail::make_generate_table(layout);
    fill_zero(base, layout.bytes);
    std::vector<detail::DeviceGenerateEntry> table;
    table.reserve(entries.size());
    std::int64_t num_chunks = 0;
    for (const detail::GenerateEntry& entry : entries) {
      detail::DeviceGenerateEntry device_entry;
      device_entry.hf_tensor = entry.hf_tensor;
      device_entry.hf_row = entry.hf_row;
      device_entry.hf_col = entry.hf_col;
      device_entry.first_element = entry.first_element;
      device_entry.row_elements = entry.row_elements;
      device_entry.rows = entry.rows;
      device_entry.cols = entry.cols;
      device_entry.first_chunk = num_chunks;
      num_chunks += (entry.rows * entry.cols + detail::kGenerateChunkElements - 1) / detail::kGenerateChunkElements;
      table.push_back(device_entry);
    }
    if (table.empty()) return;
    const auto* device_table =
        static_cast<const detail::DeviceGenerateEntry*>(upload(table.data(), table.size() * sizeof(table[0])));
    detail::launch_generate(device_table, static_cast<std::int32_t>(table.size()), num_chunks, base,
                            detail::dtype_code(layout.dtype), version, stream_);
  }

  std::int64_t count_mismatches(const void* actual, const void* expected, std::int64_t bytes,
                                int element_bytes) override {
    if (element_bytes != 1 && element_bytes != 2 && element_bytes != 4) {
      HS_THROW(Error, "count_mismatches: element size " + std::to_string(element_bytes) + " is not 1, 2 or 4");
    }
    if (bytes < 0 || bytes % element_bytes != 0) {
      HS_THROW(Error, "count_mismatches: " + std::to_string(bytes) + " bytes is not a whole number of " +
                          std::to_string(element_bytes) + "-byte elements");
    }
    const std::uint64_t address_bits =
        reinterpret_cast<std::uintptr_t>(actual) | reinterpret_cast<std::uintptr_t>(expected);
    if (address_bits % static_cast<std::uint64_t>(element_bytes) != 0) {
      HS_THROW(Error, "count_mismatches: pointers are not aligned to " + std::to_string(element_bytes) + " bytes");
    }
    const unsigned long long zero = 0;
    auto* counter = static_cast<unsigned long long*>(upload(&zero, sizeof zero));
    detail::launch_count_mismatches(actual, expected, bytes / element_bytes, element_bytes, counter, stream_);
    unsigned long long result = 0;
    HS_CUDA_CHECK(cudaMemcpyAsync(&result, counter, sizeof result, cudaMemcpyDeviceToHost, stream_));
    HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return static_cast<std::int64_t>(result);
  }

  void synchronize() override {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void* stream() override { return stream_; }

 private:
  struct Allocation {
    Residency where = Residency::kNone;
    std::int64_t bytes = 0;
  };
  static std::size_t index(Residency where) { return where == Residency::kGpu ? 0 : 1; }

  // Copies `bytes` from host memory into the device scratch area, ordered on the stream; returns the device address.
  // The pinned staging area is reused only after the previous upload left it (staging_free_).
  void* upload(const void* host, std::size_t bytes) {
    HS_CUDA_CHECK(cudaSetDevice(index_));
    HS_CUDA_CHECK(cudaEventSynchronize(staging_free_));
    if (bytes > capacity_) {
      HS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (scratch_ != nullptr) HS_CUDA_CHECK(cudaFree(scratch_));
      if (staging_ != nullptr) HS_CUDA_CHECK(cudaFreeHost(staging_));
      scratch_ = nullptr;
      staging_ = nullptr;
      capacity_ = 0;
      const std::size_t size = std::max<std::size_t>(bytes, std::size_t{64} << 10);
      HS_CUDA_CHECK(cudaMalloc(&scratch_, size));
      HS_CUDA_CHECK(cudaHostAlloc(&staging_, size, cudaHostAllocDefault));
      capacity_ = size;
    }
    std::memcpy(staging_, host, bytes);
    HS_CUDA_CHECK(cudaMemcpyAsync(scratch_, staging_, bytes, cudaMemcpyHostToDevice, stream_));
    HS_CUDA_CHECK(cudaEventRecord(staging_free_, stream_));
    return scratch_;
  }

  const int index_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t staging_free_ = nullptr;
  void* scratch_ = nullptr;
  void* staging_ = nullptr;
  std::size_t capacity_ = 0;
  mutable std::mutex mutex_;
  std::int64_t in_use_[2] = {0, 0};
  std::unordered_map<void*, Allocation> allocations_;
};

}  // namespace

std::unique_ptr<Device> make_cuda_device(int index) { return std::make_unique<CudaDevice>(index); }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error here
    return 0;
  }
  return count;
}

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace hybridshard::core
