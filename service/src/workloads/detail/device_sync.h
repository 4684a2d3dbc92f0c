// Ordering between core::Device work (its own CUDA stream) and ATen work (torch's current stream), without CUDA
// headers in the ATen translation units.
#pragma once

#include "hybridshard/core/device.h"

namespace hybridshard::service::workloads::detail {

// Waits for everything queued on the device: the Device's own stream and, on CUDA, every stream of the current
// CUDA device (ATen's included). Call between Device operations and ATen operations on the same memory, and before
// a collective reads what ATen wrote.
void synchronize_all(core::Device& device);

// The CUDA device index that owns `pointer` (device memory); 0 without CUDA.
int cuda_device_of(const void* pointer);

}  // namespace hybridshard::service::workloads::detail
