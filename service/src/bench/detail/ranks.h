// The ranks of a gloo or nccl bench (RankMode): threads of this process, or one process per rank (this program
// started again with the hidden flags --run-rank and --rank-dir). Either way the ranks meet in a file store in a
// private directory and each returns its RankResult, which combine_ranks merges.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "detail/measure.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/service/bench/bench.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service::bench::detail {

// The device of `rank`: its GPU (nccl, loopback on CUDA) or host memory standing in for one.
DeviceChoice device_of(const BenchConfig& config, int rank);

// Every rank's communicator while it is alive (ranks as threads), so that a rank that fails can abort the others at
// once instead of leaving them to wait for their timeout.
class CommunicatorRegistry {
 public:
  void add(core::Communicator* communicator);
  void remove(core::Communicator* communicator);
  void abort_all();

 private:
  std::mutex mutex_;
  std::set<core::Communicator*> live_;
  bool aborted_ = false;
};

// One rank of a gloo or nccl bench: meets the others in the file store `store_file`, opens its device and its world
// communicator (registered in `registry` while it lives, when given), and runs run_rank.
RankResult run_world_rank(const BenchConfig& config, int rank, const std::string& store_file,
                          CommunicatorRegistry* registry);

// Every rank as a thread of this process. Rethrows the error of the rank that failed first.
std::vector<RankResult> run_ranks_as_threads(const BenchConfig& config);

// Every rank as a process: this program (/proc/self/exe) with this process's arguments and the hidden flags. Waits
// for all; when one fails or dies, stops the others at once and throws core::Error naming the rank and its error.
std::vector<RankResult> run_ranks_as_processes(const BenchConfig& config);

// A rank process's side (options.run_rank >= 0): resolves the options, runs that rank and writes its result, or its
// error, into options.rank_dir. Returns the process's exit code: 0, 1 (its own error), 2 (bad options),
// kExitCommFailure (a collective or the store failed: most often a peer's failure).
int run_rank_process(const BenchOptions& options);

// Sets what the devices read from the environment (HYBRIDSHARD_PEER_COPY_MIN_ROW) before any is made; the rank
// processes inherit it.
void export_device_settings(const BenchConfig& config);

}  // namespace hybridshard::service::bench::detail
