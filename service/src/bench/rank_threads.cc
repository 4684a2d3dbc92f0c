// The ranks of a gloo or nccl bench as threads of this process, and the body of one rank that threads and rank
// processes share.
#include <chrono>
#include <cstdlib>
#include <exception>
#include <thread>

#include "detail/ranks.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/files/descriptor_budget.h"
#include "hybridshard/service/files/private_directory.h"

namespace hybridshard::service::bench::detail {

DeviceChoice device_of(const BenchConfig& config, int rank) {
  return DeviceChoice{config.use_cuda ? core::DeviceType::kCuda : core::DeviceType::kCpu, rank,
                      config.cpu_device_memory};
}

void export_device_settings(const BenchConfig& config) {
  if (config.peer_copy_min_row >= 0) {
    // Read by each CUDA device when it is made (core/src/cuda_device.cc).
    setenv("HYBRIDSHARD_PEER_COPY_MIN_ROW", std::to_string(config.peer_copy_min_row).c_str(), 1);
  }
}

void CommunicatorRegistry::add(core::Communicator* communicator) {
  std::lock_guard lock(mutex_);
  if (aborted_) communicator->abort();
  live_.insert(communicator);
}

void CommunicatorRegistry::remove(core::Communicator* communicator) {
  std::lock_guard lock(mutex_);
  live_.erase(communicator);
}

void CommunicatorRegistry::abort_all() {
  std::lock_guard lock(mutex_);
  aborted_ = true;
  for (core::Communicator* communicator : live_) communicator->abort();
}

RankResult run_world_rank(const BenchConfig& config, int rank, const std::string& store_file,
                          CommunicatorRegistry* registry) {
  const int world_size = config.train.world_size();
  const std::chrono::milliseconds timeout(config.timeout_ms);
  StoreAddress address;
  address.file = store_file;
  address.prefix = "hybridshard-bench";
  const std::unique_ptr<core::Store> store = open_store(address, world_size, timeout);
  const DeviceChoice device_choice = device_of(config, rank);
  const std::unique_ptr<core::Device> device = open_device(device_choice);
  std::unique_ptr<core::Communicator> world = open_world(*store, device_choice, rank, world_size, timeout);
  if (registry == nullptr) return run_rank(config, rank, *device, world.get());
  registry->add(world.get());
  try {
    RankResult result = run_rank(config, rank, *device, world.get());
    registry->remove(world.get());
    return result;
  } catch (...) {
    registry->remove(world.get());
    throw;
  }
}

std::vector<RankResult> run_ranks_as_threads(const BenchConfig& config) {
  const int world_size = config.train.world_size();
  // Gloo ranks as threads hold a socket to every peer each: checked before any starts (docs/reliability.md, Limits).
  if (config.backend == core::Backend::kGloo) {
    const std::string short_of = ensure_descriptors(
        thread_rank_descriptors(world_size, 1), "bench of " + std::to_string(world_size) + " Gloo ranks as threads");
    if (!short_of.empty()) HS_THROW(core::Error, short_of);
  }
  // The ranks are threads of this process: they meet in a file store in a private directory (no port).
  const PrivateDirectory store_directory("bench-store");
  const std::string store_file = store_directory.store_file();

  std::vector<RankResult> results(static_cast<std::size_t>(world_size));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world_size));
  std::mutex first_error_mutex;
  int first_error_rank = -1;
  CommunicatorRegistry registry;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        results[static_cast<std::size_t>(rank)] = run_world_rank(config, rank, store_file, &registry);
      } catch (...) {
        errors[static_cast<std::size_t>(rank)] = std::current_exception();
        {
          std::lock_guard lock(first_error_mutex);
          if (first_error_rank < 0) first_error_rank = rank;
        }
        registry.abort_all();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  if (first_error_rank >= 0) std::rethrow_exception(errors[static_cast<std::size_t>(first_error_rank)]);
  return results;
}

}  // namespace hybridshard::service::bench::detail
