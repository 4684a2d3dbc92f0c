#include "detail/device_sync.h"

#include <string>

#include "hybridshard/core/error.h"

#if defined(HYBRIDSHARD_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace hybridshard::service::workloads::detail {

void synchronize_all(core::Device& device) {
  device.synchronize();
#if defined(HYBRIDSHARD_WITH_CUDA)
  if (device.type() == core::DeviceType::kCuda) {
    const cudaError_t status = cudaDeviceSynchronize();
    if (status != cudaSuccess) {
      throw core::Error("waiting for the device's work to finish failed", __FILE__, __LINE__, "cudaDeviceSynchronize()",
                        cudaGetErrorString(status));
    }
  }
#endif
}

int cuda_device_of(const void* pointer) {
#if defined(HYBRIDSHARD_WITH_CUDA)
  cudaPointerAttributes attributes{};
  const cudaError_t status = cudaPointerGetAttributes(&attributes, pointer);
  if (status != cudaSuccess) {
    throw core::Error("cannot tell which CUDA device owns a buffer", __FILE__, __LINE__, "cudaPointerGetAttributes()",
                      cudaGetErrorString(status));
  }
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    throw core::Error("a buffer resident on the device is not CUDA device memory", __FILE__, __LINE__);
  }
  return attributes.device;
#else
  (void)pointer;
  return 0;
#endif
}

}  // namespace hybridshard::service::workloads::detail
