// The memory and copy engine one rank works with: a CUDA device (with pinned host memory) or the host alone (CPU
// ranks, where "gpu" residency is host memory standing in for the device, with a configured capacity).
//
// All byte accounting goes through here: bytes_in_use(kind) is what the allocators hold at this moment, to the byte.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/core/weight_generator.h"

namespace hybridshard::core {

enum class DeviceType : std::uint8_t { kCpu, kCuda };

// A device's memory at one moment, in bytes. used = tracked + cached + untracked(), where untracked() is what others
// hold on the device: the CUDA context, NCCL, libraries, other processes, this device's own scratch areas (0 on CPU
// devices, whose "device" is only what they allocate).
struct DeviceMemory {
  std::int64_t total = 0;        // capacity (CUDA: cudaMemGetInfo; CPU: the configured capacity)
  std::int64_t used = 0;         // in use on the device, all users (CUDA: total - free of cudaMemGetInfo)
  std::int64_t tracked = 0;      // held by the engine's live allocations: bytes_in_use(kGpu)
  std::int64_t cached = 0;       // held in the device's cache, free for the engine, not for others: bytes_cached(kGpu)
  std::int64_t cached_host = 0;  // pinned host memory in the cache: bytes_cached(kCpu) (host memory, not in used)
  std::int64_t untracked() const { return used - tracked - cached; }
};

// What an exit does with the device memory it frees (memory.release_on_exit): kDriver hands the device cache back to
// the driver (empty_cache(kGpu): a colocated trainer's allocator can use it; the next enter allocates again), kCache
// keeps it for the next enter (faster, but no one else can use it meanwhile). Pinned host blocks stay cached either
// way (host memory; cudaHostAlloc is slow).
enum class ReleaseOnExit : std::uint8_t { kDriver, kCache };
std::string_view release_on_exit_name(ReleaseOnExit release);  // "driver", "cache"
std::optional<ReleaseOnExit> parse_release_on_exit(std::string_view name);

class Device {
 public:
  virtual ~Device() = default;

  virtual DeviceType type() const = 0;
  virtual std::string description() const = 0;  // "cuda:0 NVIDIA H100 80GB HBM3", "cpu (host memory as device)"

  // Memory. `where` is kGpu (device memory) or kCpu (pinned host memory; plain host memory on CPU devices).
  // allocate throws OutOfMemoryError naming the bytes, the residency and what is in use.
  virtual void* allocate(Residency where, std::int64_t bytes) = 0;
  virtual void deallocate(Residency where, void* pointer, std::int64_t bytes) = 0;
  virtual std::int64_t bytes_in_use(Residency where) const = 0;

  // Caching: deallocate keeps the block for the next allocate of a like size instead of handing it back to the driver
  // (CUDA: cudaFree / cudaFreeHost; CPU: free), so freeing is ~free and the next phase reuses the memory without
  // cudaMalloc / cudaHostAlloc. bytes_cached(where) is what the device holds from the driver beyond
  // bytes_in_use(where): free cached blocks plus the slack of live ones (a block larger than asked for: CUDA's
  // rounding, a reused larger block), so bytes_in_use + bytes_cached = all that is held. used_memory() counts cached
  // device blocks too (the driver sees them as used). An allocate that does not fit releases the cache of its
  // residency and retries before it throws; empty_cache(where) hands every cached block of `where` back now (e.g.
  // at exit, so that a colocated trainer's allocator can have the memory: ReleaseOnExit::kDriver).
  virtual std::int64_t bytes_cached(Residency where) const = 0;
  virtual void empty_cache(Residency where) = 0;
  void empty_cache() {
    empty_cache(Residency::kGpu);
    empty_cache(Residency::kCpu);
  }

  // What the device reports: total and used memory (CUDA: cudaMemGetInfo; CPU: the configured capacity and what
  // this process's device-standing allocations hold, cached blocks included).
  virtual std::int64_t total_memory() const = 0;
  virtual std::int64_t used_memory() const = 0;

  // One reading of all of the above, taken under the device's allocation lock, so that an allocation on another
  // thread cannot fall between its numbers (memory samples; docs/metrics.md says what each is).
  virtual DeviceMemory memory() const = 0;

  // Copies; asynchronous on the device's compute stream for CUDA, synchronous on CPU. `synchronize()` waits.
  virtual void copy(void* dst, Residency dst_where, const void* src, Residency src_where, std::int64_t bytes) = 0;
  virtual void fill_zero(void* dst, std::int64_t bytes) = 0;  // device memory

  // Runs many 2-D piece copies in one go (one kernel on CUDA). Piece::src_buffer indexes `src_bases`; a piece with
  // src_buffer == -1 reads from `message_base`. Destinations are relative to `dst_base`. Device memory only.
  virtual void copy_pieces(std::span<const Piece> pieces, std::span<void* const> src_bases, const void* message_base,
                           void* dst_base) = 0;

  // A second lane of device work (CUDA: a second stream), so that landing one round's bucket overlaps the next
  // round's exchange. copy_pieces_aside is copy_pieces on that lane: it starts after everything queued on either lane
  // before it, and work queued on the main lane later does not wait for it. mark_aside(slot) marks the aside lane's
  // work queued so far (slot 0 or 1); await_aside(slot) makes the main lane's later work wait for that mark.
  // synchronize() waits for the main lane only. These defaults (CPU devices) copy at once; the marks are no-ops.
  virtual void copy_pieces_aside(std::span<const Piece> pieces, std::span<void* const> src_bases,
                                 const void* message_base, void* dst_base) {
    copy_pieces(pieces, src_bases, message_base, dst_base);
  }
  virtual void mark_aside(int slot) { (void)slot; }
  virtual void await_aside(int slot) { (void)slot; }
  // The aside lane as a cudaStream_t (made on first use), so that a communicator's queued rounds can order it after
  // them (Communicator::queue_exchange); nullptr on devices without streams.
  virtual void* aside_stream() { return nullptr; }

  // Writes weight_value(...) for every block of `layout`, at `version`, into the buffer at `base` (device memory);
  // padding rows are zero. Used to make train weights and expected inference shards without communication.
  virtual void generate(const BufferLayout& layout, std::uint32_t version, void* base) = 0;

  // Counts elements of `actual` that differ bitwise from `expected` (both device memory, same layout). Elements are
  // `element_bytes` wide (1, 2 or 4: dtype_size() of the buffer's dtype); `bytes` must be a multiple of it (Error
  // otherwise, from here for every device).
  std::int64_t count_mismatches(const void* actual, const void* expected, std::int64_t bytes, int element_bytes = 1);

  virtual void synchronize() = 0;

  // Lets the caller's stream order follow this device's work (CUDA: the compute stream, as a cudaStream_t).
  virtual void* stream() = 0;

 protected:
  // count_mismatches once its arguments are checked.
  virtual std::int64_t count_mismatching_elements(const void* actual, const void* expected, std::int64_t bytes,
                                                  int element_bytes) = 0;
};

// Host memory only; `capacity_bytes` is what total_memory() reports (the "device" size of a CPU rank).
std::unique_ptr<Device> make_cpu_device(std::int64_t capacity_bytes);

// CUDA device `index`; throws Error when built without CUDA or no such device.
std::unique_ptr<Device> make_cuda_device(int index);

// Applies `release` after an exit: kDriver waits for the device's work and empties its device cache; kCache does
// nothing.
void release_after_exit(Device& device, ReleaseOnExit release);

bool cuda_available();  // built with CUDA and at least one device present
int cuda_device_count();

}  // namespace hybridshard::core
