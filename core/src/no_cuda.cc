// Built without CUDA: no CUDA device, no NCCL.
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {

bool cuda_available() { return false; }
int cuda_device_count() { return 0; }

std::unique_ptr<Device> make_cuda_device(int index) {
  HS_THROW(Error, "cuda device " + std::to_string(index) +
                      " requested but hybridshard was built without CUDA (HYBRIDSHARD_WITH_CUDA=OFF)");
}

std::unique_ptr<Communicator> make_nccl_communicator(Store& store, int rank, int world_size, int device_index,
                                                     std::chrono::milliseconds timeout, void* stream) {
  HS_THROW(Error, "nccl communicator requested (rank " + std::to_string(rank) + " of " + std::to_string(world_size) +
                      ") but hybridshard was built without CUDA (HYBRIDSHARD_WITH_CUDA=OFF)");
}

}  // namespace hybridshard::core
