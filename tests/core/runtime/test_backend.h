// The backend a multi-rank test runs its ranks (threads) on: Gloo with a CPU device per rank (label multirank), or,
// compiled with HYBRIDSHARD_TEST_NCCL, NCCL with one GPU per rank (label gpu; a case that needs more GPUs than the
// machine has is skipped, saying so).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/store.h"

#ifdef HYBRIDSHARD_TEST_NCCL
#include <cuda_runtime_api.h>
#endif

namespace hybridshard::core::testing {

#ifdef HYBRIDSHARD_TEST_NCCL
constexpr Backend kTestBackend = Backend::kNccl;

// Why a case of `world_size` ranks cannot run here ("" when it can).
inline std::string why_not_runnable(int world_size) {
  const int gpus = cuda_device_count();
  if (gpus < world_size) {
    return "needs " + std::to_string(world_size) + " GPUs, this machine has " + std::to_string(gpus);
  }
  return "";
}

inline std::unique_ptr<Device> make_rank_device(int rank, std::int64_t /*cpu_capacity*/) {
  return make_cuda_device(rank);
}

// Whether every pair of the first `world_size` GPUs can read each other's memory (the peer path).
inline bool gpus_read_each_other(int world_size) {
  for (int a = 0; a < world_size; ++a) {
    for (int b = 0; b < world_size; ++b) {
      int can = 0;
      if (a != b && (cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || can == 0)) return false;
    }
  }
  return true;
}

inline std::unique_ptr<Communicator> make_rank_communicator(Store& store, int rank, int world_size,
                                                            std::chrono::milliseconds timeout) {
  return make_nccl_communicator(store, rank, world_size, rank, timeout);
}
#else
constexpr Backend kTestBackend = Backend::kGloo;

inline std::string why_not_runnable(int /*world_size*/) { return gloo_available() ? "" : "built without Gloo"; }

inline std::unique_ptr<Device> make_rank_device(int /*rank*/, std::int64_t cpu_capacity) {
  return make_cpu_device(cpu_capacity);
}

inline bool gpus_read_each_other(int /*world_size*/) { return false; }

inline std::unique_ptr<Communicator> make_rank_communicator(Store& store, int rank, int world_size,
                                                            std::chrono::milliseconds timeout) {
  return make_gloo_communicator(store, rank, world_size, timeout);
}
#endif

}  // namespace hybridshard::core::testing
