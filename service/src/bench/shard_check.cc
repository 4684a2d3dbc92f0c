#include "detail/shard_check.h"

#include <algorithm>
#include <utility>

namespace hybridshard::service::bench::detail {

DeviceMemory::DeviceMemory(core::Device& device, core::Residency where, std::int64_t bytes)
    : device_(device), where_(where), bytes_(bytes) {
  if (bytes_ > 0) data_ = device_.allocate(where_, bytes_);
}

DeviceMemory::~DeviceMemory() {
  if (data_ != nullptr) device_.deallocate(where_, data_, bytes_);
}

ShardChecker::ShardChecker(core::Device& device, const core::BufferLayout& expected, std::uint32_t version,
                           std::int64_t scratch_limit)
    : device_(device), version_(version), element_bytes_(static_cast<int>(core::dtype_size(expected.dtype))) {
  std::int64_t largest = 0;
  for (const core::LocalTensor& tensor : expected.tensors) largest = std::max(largest, tensor_bytes(tensor));
  const std::int64_t limit = std::max(scratch_limit, largest);
  core::BufferLayout chunk;
  std::int64_t chunk_start = 0;
  const auto close_chunk = [&] {
    if (chunk.tensors.empty()) return;
    chunk_starts_.push_back(chunk_start);
    scratch_bytes_ = std::max(scratch_bytes_, chunk.bytes);
    chunks_.push_back(std::move(chunk));
    chunk = {};
  };
  // After this loop every tensor of `expected` is in exactly one chunk, at its offset minus the chunk's start.
  for (const core::LocalTensor& tensor : expected.tensors) {
    const std::int64_t end = tensor.offset_bytes + tensor_bytes(tensor);
    if (!chunk.tensors.empty() && end - chunk_start > limit) close_chunk();
    if (chunk.tensors.empty()) {
      chunk.name = expected.name + ".expected";
      chunk.dtype = expected.dtype;
      chunk_start = tensor.offset_bytes;
    }
    core::LocalTensor rebased = tensor;
    rebased.offset_bytes -= chunk_start;
    chunk.tensors.push_back(std::move(rebased));
    chunk.bytes = (end - chunk_start + core::kTensorAlignment - 1) / core::kTensorAlignment * core::kTensorAlignment;
  }
  close_chunk();
  scratch_ = std::make_unique<DeviceMemory>(device_, core::Residency::kGpu, scratch_bytes_);
}

std::int64_t ShardChecker::tensor_bytes(const core::LocalTensor& tensor) const {
  return tensor.numel() * static_cast<std::int64_t>(element_bytes_);
}

std::int64_t ShardChecker::count_wrong(const void* actual) {
  std::int64_t wrong = 0;
  for (std::size_t c = 0; c < chunks_.size(); ++c) {
    device_.generate(chunks_[c], version_, scratch_->data());
    for (const core::LocalTensor& tensor : chunks_[c].tensors) {
      const auto* actual_tensor = static_cast<const std::byte*>(actual) + chunk_starts_[c] + tensor.offset_bytes;
      wrong += device_.count_mismatches(actual_tensor, scratch_->data() + tensor.offset_bytes, tensor_bytes(tensor),
                                        element_bytes_);
    }
  }
  return wrong;
}

}  // namespace hybridshard::service::bench::detail
