// The host standing in for a device: "gpu" residency is host memory limited to a configured capacity, "cpu" residency
// is plain (unpinned) host memory. Everything is synchronous. Freed blocks are cached like the CUDA device's (without
// its rounding), so that CPU ranks account for cached memory, and obey memory.release_on_exit, as GPU ranks do.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "detail/caching_device.h"
#include "detail/dtype_bits.h"
#include "detail/generate_table.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

// Host allocations are aligned like CUDA's, so that views and vector-width decisions match the CUDA device.
constexpr std::size_t kHostAlignment = 256;

std::string where_name(Residency where) { return std::string(residency_name(where)); }

class CpuDevice final : public detail::CachingDevice<void*> {
 public:
  explicit CpuDevice(std::int64_t capacity_bytes) : capacity_(capacity_bytes) {
    if (capacity_bytes < 0) HS_THROW(ConfigError, "cpu device: negative capacity " + std::to_string(capacity_bytes));
  }

  ~CpuDevice() override {
    blocks_.for_each_held([](Residency, void* pointer) { std::free(pointer); },
                          [](Residency, void* pointer) { std::free(pointer); });
  }

  DeviceType type() const override { return DeviceType::kCpu; }
  std::string description() const override {
    return "cpu (host memory as device, capacity " + std::to_string(capacity_) + " bytes)";
  }

  void* allocate(Residency where, std::int64_t bytes) override {
    if (where == Residency::kNone) HS_THROW(Error, "cpu device: cannot allocate with residency none");
    if (bytes < 0) HS_THROW(Error, "cpu device: negative allocation of " + std::to_string(bytes) + " bytes");
    std::lock_guard<std::mutex> lock(mutex_);
    const auto size = static_cast<std::size_t>(bytes);
    void* pointer = nullptr;
    std::size_t held = size;
    if (auto taken = blocks_.take(where, size)) {
      pointer = taken->block;
      held = taken->size;
    } else {
      if (where == Residency::kGpu && blocks_.held(where) + bytes > capacity_) release_cached(where);
      if (where == Residency::kGpu && blocks_.held(where) + bytes > capacity_) {
        HS_THROW(OutOfMemoryError, "cpu device: cannot allocate " + std::to_string(bytes) + " bytes (" +
                                       where_name(where) + "): " + std::to_string(blocks_.in_use(where)) + " of " +
                                       std::to_string(capacity_) + " bytes in use");
      }
      // aligned_alloc needs a size that is a multiple of the alignment; a zero-byte buffer still gets a unique
      // address.
      const std::size_t rounded =
          (static_cast<std::size_t>(bytes) + kHostAlignment - 1) / kHostAlignment * kHostAlignment +
          (bytes == 0 ? kHostAlignment : 0);
      pointer = std::aligned_alloc(kHostAlignment, rounded);
      if (pointer == nullptr) {
        HS_THROW(OutOfMemoryError, "cpu device: host allocation of " + std::to_string(bytes) + " bytes (" +
                                       where_name(where) + ") failed; " + std::to_string(blocks_.in_use(where)) +
                                       " bytes in use");
      }
      blocks_.obtained(where, size);
    }
    blocks_.lend(where, pointer, bytes, held);
    return pointer;
  }

  void deallocate(Residency where, void* pointer, std::int64_t bytes) override {
    if (pointer == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_.give_back("cpu device", where, pointer, bytes, [pointer] { return pointer; });
  }

  using Device::empty_cache;
  void empty_cache(Residency where) override {
    if (where == Residency::kNone) return;
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached(where);
  }

  DeviceMemory memory() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceMemory memory;
    memory.total = capacity_;
    memory.used = blocks_.held(Residency::kGpu);
    read_cache(memory);
    return memory;
  }

  std::int64_t total_memory() const override { return capacity_; }
  std::int64_t used_memory() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return blocks_.held(Residency::kGpu);  // live and cached: what a driver would see as used
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

  std::int64_t count_mismatching_elements(const void* actual, const void* expected, std::int64_t bytes,
                                          int element_bytes) override {
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
  // Frees every cached block of `where`. Caller holds mutex_.
  void release_cached(Residency where) {
    blocks_.release_free(where, [](void* pointer) { std::free(pointer); });
  }

  const std::int64_t capacity_;  // blocks_ (the base's) keeps blocks by the size asked for: no rounding here
};

}  // namespace

std::unique_ptr<Device> make_cpu_device(std::int64_t capacity_bytes) {
  return std::make_unique<CpuDevice>(capacity_bytes);
}

}  // namespace hybridshard::core
