// The host standing in for a device: "gpu" residency is host memory limited to a configured capacity, "cpu" residency
// is plain (unpinned) host memory. Everything is synchronous. Freed blocks are cached like the CUDA device's (without
// its rounding), so that CPU ranks account for cached memory, and obey memory.release_on_exit, as GPU ranks do.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "detail/dtype_bits.h"
#include "detail/generate_table.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

// Host allocations are aligned like CUDA's, so that views and vector-width decisions match the CUDA device.
constexpr std::size_t kHostAlignment = 256;

std::string where_name(Residency where) { return std::string(residency_name(where)); }

class CpuDevice final : public Device {
 public:
  explicit CpuDevice(std::int64_t capacity_bytes) : capacity_(capacity_bytes) {
    if (capacity_bytes < 0) HS_THROW(ConfigError, "cpu device: negative capacity " + std::to_string(capacity_bytes));
  }

  ~CpuDevice() override {
    for (auto& [pointer, allocation] : allocations_) std::free(pointer);
    for (auto& cache : cache_) {
      for (auto& [bytes, pointer] : cache) std::free(pointer);
    }
  }

  DeviceType type() const override { return DeviceType::kCpu; }
  std::string description() const override {
    return "cpu (host memory as device, capacity " + std::to_string(capacity_) + " bytes)";
  }

  void* allocate(Residency where, std::int64_t bytes) override {
    if (where == Residency::kNone) HS_THROW(Error, "cpu device: cannot allocate with residency none");
    if (bytes < 0) HS_THROW(Error, "cpu device: negative allocation of " + std::to_string(bytes) + " bytes");
    std::lock_guard<std::mutex> lock(mutex_);
    const std::size_t i = index(where);
    Block block;
    // Like the CUDA device's cache: the smallest cached block of at least `bytes` and at most a quarter above it.
    const auto cached = cache_[i].lower_bound(bytes);
    if (cached != cache_[i].end() && cached->first <= bytes + bytes / 4) {
      block = Block{cached->second, cached->first};
      cache_[i].erase(cached);
    } else {
      if (where == Residency::kGpu && held_[i] + bytes > capacity_) release_cached(i);
      if (where == Residency::kGpu && held_[i] + bytes > capacity_) {
        HS_THROW(OutOfMemoryError, "cpu device: cannot allocate " + std::to_string(bytes) + " bytes (" +
                                       where_name(where) + "): " + std::to_string(in_use_[i]) + " of " +
                                       std::to_string(capacity_) + " bytes in use");
      }
      // aligned_alloc needs a size that is a multiple of the alignment; a zero-byte buffer still gets a unique
      // address.
      const std::size_t rounded =
          (static_cast<std::size_t>(bytes) + kHostAlignment - 1) / kHostAlignment * kHostAlignment +
          (bytes == 0 ? kHostAlignment : 0);
      block = Block{std::aligned_alloc(kHostAlignment, rounded), bytes};
      if (block.pointer == nullptr) {
        HS_THROW(OutOfMemoryError, "cpu device: host allocation of " + std::to_string(bytes) + " bytes (" +
                                       where_name(where) + ") failed; " + std::to_string(in_use_[i]) + " bytes in use");
      }
      held_[i] += bytes;
    }
    allocations_[block.pointer] = Allocation{where, bytes, block.bytes};
    in_use_[i] += bytes;
    return block.pointer;
  }

  void deallocate(Residency where, void* pointer, std::int64_t bytes) override {
    if (pointer == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = allocations_.find(pointer);
    if (found == allocations_.end())
      HS_THROW(Error, "cpu device: deallocate of a pointer this device did not allocate");
    if (found->second.where != where || found->second.bytes != bytes) {
      HS_THROW(Error, "cpu device: deallocate(" + where_name(where) + ", " + std::to_string(bytes) +
                          " bytes) of an allocation made as (" + where_name(found->second.where) + ", " +
                          std::to_string(found->second.bytes) + " bytes)");
    }
    cache_[index(where)].emplace(found->second.held, pointer);
    in_use_[index(where)] -= bytes;
    allocations_.erase(found);
  }

  std::int64_t bytes_in_use(Residency where) const override {
    if (where == Residency::kNone) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    return in_use_[index(where)];
  }

  std::int64_t bytes_cached(Residency where) const override {
    if (where == Residency::kNone) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    return held_[index(where)] - in_use_[index(where)];
  }

  using Device::empty_cache;
  void empty_cache(Residency where) override {
    if (where == Residency::kNone) return;
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached(index(where));
  }

  DeviceMemory memory() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceMemory memory;
    memory.total = capacity_;
    memory.used = held_[0];
    memory.tracked = in_use_[0];
    memory.cached = held_[0] - in_use_[0];
    memory.cached_host = held_[1] - in_use_[1];
    return memory;
  }

  std::int64_t total_memory() const override { return capacity_; }
  std::int64_t used_memory() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_[0];  // live and cached: what a driver would see as used
  }

  void copy(void* dst, Residency dst_where, const void* src, Residency src_where, std::int64_t bytes) override {
    if (bytes < 0) HS_THROW(Error, "cpu device: copy of negative size " + std::to_string(bytes));
    if (bytes == 0) return;
    if (dst == nullptr || src == nullptr)
      HS_THROW(Error, "cpu device: copy of " + std::to_string(bytes) + " bytes with a null pointer");
    std::memcpy(dst, src, static_cast<std::size_t>(bytes));
  }

  void fill_zero(void* dst, std::int64_t bytes) override {
    if (bytes > 0) std::memset(dst, 0, static_cast<std::size_t>(bytes));
  }

  void copy_pieces(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                   void* dst_base) override {
    auto* dst = static_cast<std::byte*>(dst_base);
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      const Piece& piece = pieces[i];
      const std::byte* src = nullptr;
      if (piece.src_buffer == -1) {
        src = static_cast<const std::byte*>(message_base);
      } else if (piece.src_buffer >= 0 && static_cast<std::size_t>(piece.src_buffer) < src_bases.size()) {
        src = static_cast<const std::byte*>(src_bases[static_cast<std::size_t>(piece.src_buffer)]);
      } else {
        HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " reads source buffer " +
                            std::to_string(piece.src_buffer) + " of " + std::to_string(src_bases.size()));
      }
      if (piece.rows <= 0 || piece.row_bytes <= 0) continue;
      if (src == nullptr || dst == nullptr)
        HS_THROW(Error, "copy_pieces: piece " + std::to_string(i) + " has a null base");
      for (std::int64_t row = 0; row < piece.rows; ++row) {
        std::memcpy(dst + piece.dst_offset + row * piece.dst_stride, src + piece.src_offset + row * piece.src_stride,
                    static_cast<std::size_t>(piece.row_bytes));
      }
    }
  }

  void generate(const BufferLayout& layout, std::uint32_t version, void* base) override {
    const std::vector<detail::GenerateEntry> table = detail::make_generate_table(layout);
    fill_zero(base, layout.bytes);  // padding rows and alignment gaps
    const int code = detail::dtype_code(layout.dtype);
    for (const detail::GenerateEntry& entry : table) {
      for (std::int64_t r = 0; r < entry.rows; ++r) {
        const std::int64_t row_start = entry.first_element + r * entry.row_elements;
        for (std::int64_t c = 0; c < entry.cols; ++c) {
          detail::store_weight(base, row_start + c, code,
                               weight_value(entry.hf_tensor, entry.hf_row + r, entry.hf_col + c, version));
        }
      }
    }
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
    const auto* a = static_cast<const unsigned char*>(actual);
    const auto* e = static_cast<const unsigned char*>(expected);
    std::int64_t mismatches = 0;
    for (std::int64_t i = 0; i < bytes; i += element_bytes) {
      if (std::memcmp(a + i, e + i, static_cast<std::size_t>(element_bytes)) != 0) ++mismatches;
    }
    return mismatches;
  }

  void synchronize() override {}
  void* stream() override { return nullptr; }

 private:
  struct Allocation {
    Residency where = Residency::kNone;
    std::int64_t bytes = 0;  // asked for
    std::int64_t held = 0;   // the block's size (a reused cached block may be larger)
  };
  struct Block {
    void* pointer = nullptr;
    std::int64_t bytes = 0;
  };
  static std::size_t index(Residency where) { return where == Residency::kGpu ? 0 : 1; }

  // Frees every cached block of residency index `i`. Caller holds mutex_.
  void release_cached(std::size_t i) {
    for (auto& [bytes, pointer] : cache_[i]) {
      std::free(pointer);
      held_[i] -= bytes;
    }
    cache_[i].clear();
  }

  const std::int64_t capacity_;
  mutable std::mutex mutex_;
  std::int64_t in_use_[2] = {0, 0};  // bytes asked for by live buffers, per residency index
  std::int64_t held_[2] = {0, 0};    // bytes of every block held: live and cached
  std::unordered_map<void*, Allocation> allocations_;
  std::multimap<std::int64_t, void*> cache_[2];  // free blocks by size, per residency index
};

}  // namespace

std::unique_ptr<Device> make_cpu_device(std::int64_t capacity_bytes) {
  return std::make_unique<CpuDevice>(capacity_bytes);
}

}  // namespace hybridshard::core
