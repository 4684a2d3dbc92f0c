// Tensors of the engine's flat buffers as DLPack tensors (ATen/dlpack.h's plain C structs, no libtorch code): torch
// turns one into a tensor on the same memory with torch.utils.dlpack.from_dlpack, for bf16/fp16/fp32 on CPU or CUDA.
// Nothing is copied. The DLPack deleter, run when torch drops the last tensor on that memory (from any thread),
// releases the view's lease.
#pragma once

#include <ATen/dlpack.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hybridshard/core/device.h"
#include "hybridshard/core/dtype.h"
#include "view_lease.h"

namespace hybridshard::python {

struct TensorView {
  void* data = nullptr;
  std::vector<std::int64_t> shape;  // row-major, contiguous
  core::DType dtype = core::DType::kBFloat16;
  core::DeviceType device_type = core::DeviceType::kCpu;
  int device_index = 0;
  std::shared_ptr<ViewLease> lease;
  std::size_t index = 0;  // the tensor's place in lease->names()
};

// A DLManagedTensor on `view`'s memory; acquires the lease now and releases it in the deleter. The caller owns the
// result (a capsule named "dltensor" hands it to torch, which calls the deleter).
DLManagedTensor* to_dlpack(const TensorView& view);

// The bytes of a DLPack tensor handed in from torch (torch.utils.dlpack.to_dlpack), for copying them: throws
// core::ConfigError naming `name` unless it is contiguous, of `dtype`, with `numel` elements, on `device_type`.
const void* dlpack_bytes(const DLTensor& tensor, const std::string& name, core::DType dtype, std::int64_t numel,
                         core::DeviceType device_type);

}  // namespace hybridshard::python
