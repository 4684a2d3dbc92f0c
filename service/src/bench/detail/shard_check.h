// Device memory held for a scope, and the bit-exact check of an inference shard against Device::generate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"

namespace hybridshard::service::bench::detail {

// Memory from Device::allocate, released on scope exit.
class DeviceMemory {
 public:
  DeviceMemory(core::Device& device, core::Residency where, std::int64_t bytes);
  ~DeviceMemory();
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  std::byte* data() { return static_cast<std::byte*>(data_); }

 private:
  core::Device& device_;
  core::Residency where_;
  std::int64_t bytes_;
  void* data_ = nullptr;
};

// Compares an inference shard with Device::generate of the expected layout (an independent path: no plan, no
// communication), a group of whole tensors at a time, so that the expected bytes never need more than
// `scratch_limit` (or the largest tensor) of device memory. Tensors are compared one by one: the alignment gaps
// between them hold nothing defined.
class ShardChecker {
 public:
  ShardChecker(core::Device& device, const core::BufferLayout& expected, std::uint32_t version,
               std::int64_t scratch_limit);

  // Elements of the shard at `actual` (device memory, the expected layout's offsets) that differ bitwise.
  std::int64_t count_wrong(const void* actual);

  std::size_t num_chunks() const { return chunks_.size(); }

 private:
  std::int64_t tensor_bytes(const core::LocalTensor& tensor) const;

  core::Device& device_;
  std::uint32_t version_;
  int element_bytes_;
  std::vector<core::BufferLayout> chunks_;
  std::vector<std::int64_t> chunk_starts_;
  std::int64_t scratch_bytes_ = 0;
  std::unique_ptr<DeviceMemory> scratch_;
};

}  // namespace hybridshard::service::bench::detail
