// The bookkeeping of a device's caching allocator, shared by the CPU and the CUDA device: the live allocations (what
// each asked for, the block it holds), the free blocks by size per residency, and the counters every memory figure
// reads (bytes in use, bytes held from the system: live and cached). The device makes the system calls (aligned_alloc
// / free, cudaMalloc / cudaFree and their events) and holds the lock; this class decides reuse and keeps the counts.
//
// Reuse rule (like PyTorch's caching allocator, without splitting blocks): a request of `size` takes the smallest free
// block of its residency of at least `size` and at most a quarter above it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "hybridshard/core/error.h"
#include "hybridshard/core/residency.h"

namespace hybridshard::core::detail {

// `Block` is what a free block keeps besides its size: the CPU device its pointer, the CUDA device its pointer and the
// event its last use was recorded with.
template <typename Block>
class BlockCache {
 public:
  struct Taken {
    std::size_t size = 0;  // the block's size, at least the size asked for
    Block block;
  };

  // The free block `size` may reuse, taken out of the cache; nullopt when none fits.
  std::optional<Taken> take(Residency where, std::size_t size) {
    auto& free = free_[index(where)];
    const auto found = free.lower_bound(size);
    if (found == free.end() || found->first > size + size / 4) return std::nullopt;
    Taken taken{found->first, std::move(found->second)};
    free.erase(found);
    return taken;
  }

  // A block of `size` newly obtained from the system (not from take()).
  void obtained(Residency where, std::size_t size) { held_[index(where)] += static_cast<std::int64_t>(size); }

  // `pointer` (a block of `size`) now serves an allocation of `bytes`.
  void lend(Residency where, void* pointer, std::int64_t bytes, std::size_t size) {
    allocations_[pointer] = Allocation{where, bytes, size};
    in_use_[index(where)] += bytes;
  }

  // The allocation behind `pointer` ends: checked against what its owner says it is (throws Error naming `device`
  // when this cache did not lend `pointer` or lent it as something else), then its block joins the free list as
  // `make_block()` (called only once the check has passed; when it throws, the allocation stays live).
  template <typename MakeBlock>
  void give_back(const std::string& device, Residency where, void* pointer, std::int64_t bytes, MakeBlock make_block) {
    const auto found = allocations_.find(pointer);
    if (found == allocations_.end()) HS_THROW(Error, device + ": deallocate of a pointer this device did not allocate");
    const Allocation allocation = found->second;
    if (allocation.where != where || allocation.bytes != bytes) {
      HS_THROW(Error, device + ": deallocate(" + std::string(residency_name(where)) + ", " + std::to_string(bytes) +
                          " bytes) of an allocation made as (" + std::string(residency_name(allocation.where)) + ", " +
                          std::to_string(allocation.bytes) + " bytes)");
    }
    Block block = make_block();
    allocations_.erase(found);
    in_use_[index(allocation.where)] -= allocation.bytes;
    free_[index(allocation.where)].emplace(allocation.size, std::move(block));
  }

  // Hands every free block of `where` to `release(block)` (which returns it to the system) and forgets it.
  template <typename Release>
  void release_free(Residency where, Release release) {
    const std::size_t i = index(where);
    for (auto& [size, block] : free_[i]) {
      release(block);
      held_[i] -= static_cast<std::int64_t>(size);
    }
    free_[i].clear();
  }

  // Every block still held, live ones as (residency, pointer) and free ones as (residency, block): for a destructor.
  template <typename Live, typename Free>
  void for_each_held(Live live, Free free) const {
    for (const auto& [pointer, allocation] : allocations_) live(allocation.where, pointer);
    for (std::size_t i = 0; i < 2; ++i) {
      for (const auto& [size, block] : free_[i]) free(i == 0 ? Residency::kGpu : Residency::kCpu, block);
    }
  }

  bool has_free(Residency where) const { return !free_[index(where)].empty(); }
  std::int64_t in_use(Residency where) const { return in_use_[index(where)]; }
  std::int64_t held(Residency where) const { return held_[index(where)]; }
  std::int64_t cached(Residency where) const { return held(where) - in_use(where); }

 private:
  struct Allocation {
    Residency where = Residency::kNone;
    std::int64_t bytes = 0;  // asked for
    std::size_t size = 0;    // the block's size
  };
  static std::size_t index(Residency where) { return where == Residency::kGpu ? 0 : 1; }

  std::int64_t in_use_[2] = {0, 0};  // bytes asked for by live allocations, per residency index
  std::int64_t held_[2] = {0, 0};    // bytes of every block held from the system: live and free
  std::unordered_map<void*, Allocation> allocations_;
  std::multimap<std::size_t, Block> free_[2];  // free blocks by size, per residency index
};

}  // namespace hybridshard::core::detail
