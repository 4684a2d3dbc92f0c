// Runs the benchmark: loopback in this thread, or every rank as a thread (Gloo on CPU devices, NCCL on GPUs) over a
// store on 127.0.0.1; then combines, prints and writes the JSON.
#include "hybridshard/service/bench/bench.h"

#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <thread>
#include <vector>

#include "detail/measure.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/files/descriptor_budget.h"
#include "hybridshard/service/files/private_directory.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service::bench {
namespace {

DeviceChoice device_of(const BenchConfig& config, int rank) {
  return DeviceChoice{config.use_cuda ? core::DeviceType::kCuda : core::DeviceType::kCpu, rank,
                      config.cpu_device_memory};
}

// Every rank's communicator while it is alive, so that a rank that fails can abort the others at once instead of
// leaving them to wait for their timeout.
class CommunicatorRegistry {
 public:
  void add(core::Communicator* communicator) {
    std::lock_guard lock(mutex_);
    if (aborted_) communicator->abort();
    live_.insert(communicator);
  }
  void remove(core::Communicator* communicator) {
    std::lock_guard lock(mutex_);
    live_.erase(communicator);
  }
  void abort_all() {
    std::lock_guard lock(mutex_);
    aborted_ = true;
    for (core::Communicator* communicator : live_) communicator->abort();
  }

 private:
  std::mutex mutex_;
  std::set<core::Communicator*> live_;
  bool aborted_ = false;
};

std::vector<detail::RankResult> run_ranks_as_threads(const BenchConfig& config) {
  const int world_size = config.train.world_size();
  // Gloo ranks as threads hold a socket to every peer each: checked before any starts (docs/reliability.md, Limits).
  if (config.backend == core::Backend::kGloo) {
    const std::string short_of = ensure_descriptors(
        thread_rank_descriptors(world_size, 1), "bench of " + std::to_string(world_size) + " Gloo ranks as threads");
    if (!short_of.empty()) HS_THROW(core::Error, short_of);
  }
  const std::chrono::milliseconds timeout(config.timeout_ms);
  // The ranks are threads of this process: they meet in a file store in a private directory (no port).
  const PrivateDirectory store_directory("bench-store");
  StoreAddress address;
  address.file = store_directory.store_file();
  address.prefix = "hybridshard-bench";

  std::vector<detail::RankResult> results(static_cast<std::size_t>(world_size));
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world_size));
  std::mutex first_error_mutex;
  int first_error_rank = -1;
  CommunicatorRegistry registry;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        const std::unique_ptr<core::Store> store = open_store(address, world_size, timeout);
        const DeviceChoice device_choice = device_of(config, rank);
        const std::unique_ptr<core::Device> device = open_device(device_choice);
        std::unique_ptr<core::Communicator> world = open_world(*store, device_choice, rank, world_size, timeout);
        registry.add(world.get());
        try {
          results[static_cast<std::size_t>(rank)] = detail::run_rank(config, rank, *device, world.get());
        } catch (...) {
          registry.remove(world.get());
          throw;
        }
        registry.remove(world.get());
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

}  // namespace

BenchReport run_bench_report(const BenchConfig& config) {
  if (config.peer_copy_min_row >= 0) {
    // Read by each CUDA device when it is made (core/src/cuda_device.cc).
    setenv("HYBRIDSHARD_PEER_COPY_MIN_ROW", std::to_string(config.peer_copy_min_row).c_str(), 1);
  }
  std::vector<detail::RankResult> results;
  if (config.work_only) return detail::combine_ranks(config, results);  // the header and the work table alone
  if (config.backend == core::Backend::kLoopback) {
    const std::unique_ptr<core::Device> device = open_device(device_of(config, 0));
    results.push_back(detail::run_rank(config, config.rank, *device, nullptr));
  } else {
    results = run_ranks_as_threads(config);
  }
  return detail::combine_ranks(config, results);
}

int run_bench(const BenchOptions& options, std::ostream& out) {
  BenchConfig config;
  try {
    config = resolve_bench_options(options);
  } catch (const core::ConfigError& error) {
    out << error.what() << '\n';
    return 2;
  }
  BenchReport report;
  try {
    report = run_bench_report(config);
  } catch (const core::Error& error) {
    out << "hybridshard bench: the run failed: " << error.what() << " (" << error.file() << ':' << error.line()
        << ")\n";
    return 3;
  } catch (const std::exception& error) {
    out << "hybridshard bench: the run failed: " << error.what() << '\n';
    return 3;
  }
  print_bench_report(report, out);
  if (!config.json_file.empty()) {
    std::ofstream json(config.json_file);
    json << bench_report_json(report);
    json.close();
    if (!json) {
      out << "hybridshard bench: cannot write --json " << config.json_file << '\n';
      return 3;
    }
  }
  return report.total_wrong() == 0 ? 0 : 1;
}

}  // namespace hybridshard::service::bench
