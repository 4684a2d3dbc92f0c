// A device whose memory goes through a BlockCache under one lock: the CPU and the CUDA device. What the cache knows is
// answered here once (bytes in use and cached per residency, the cache's part of a memory() reading); each device
// keeps its system calls and decides what else its lock covers.
#pragma once

#include <cstdint>
#include <mutex>

#include "detail/block_cache.h"
#include "hybridshard/core/device.h"

namespace hybridshard::core::detail {

template <typename Block>
class CachingDevice : public Device {
 public:
  std::int64_t bytes_in_use(Residency where) const override {
    if (where == Residency::kNone) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    return blocks_.in_use(where);
  }

  std::int64_t bytes_cached(Residency where) const override {
    if (where == Residency::kNone) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    return blocks_.cached(where);
  }

 protected:
  // Fills what the cache knows of a memory() reading (tracked, cached, cached_host); the device fills total and used.
  // Caller holds mutex_.
  void read_cache(DeviceMemory& memory) const {
    memory.tracked = blocks_.in_use(Residency::kGpu);
    memory.cached = blocks_.cached(Residency::kGpu);
    memory.cached_host = blocks_.cached(Residency::kCpu);
  }

  mutable std::mutex mutex_;
  BlockCache<Block> blocks_;  // under mutex_
};

}  // namespace hybridshard::core::detail
