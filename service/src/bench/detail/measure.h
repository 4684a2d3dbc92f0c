// What one rank measures, before the ranks' results are combined into a BenchReport.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/service/bench/bench.h"

namespace hybridshard::service::bench::detail {

// One measured quantity on one rank: a time per timed iteration and what it moved.
struct Series {
  std::vector<double> seconds;
  std::int64_t bytes = 0;
  std::int64_t extra_bytes = 0;   // enter: peak extra device bytes; exit: device bytes still held after it
  std::int64_t driver_bytes = 0;  // exit: device memory the driver counts as used after it, above the steady state
  std::int64_t host_bytes = 0;
  std::int64_t wrong = 0;
  bool checked = false;
  std::string what;  // bounds: what was measured
};

// (phase, strategy, "exit policy/release") for enter and exit, (phase, "-", "-") for the batch phases; (bound name,
// "", "") for bounds.
using SeriesKey = std::tuple<std::string, std::string, std::string>;

// The policy part of an enter or exit SeriesKey: "free/driver", "offload/cache", ...
inline std::string policy_key(core::ExitPolicy policy, core::ReleaseOnExit release) {
  return std::string(core::exit_policy_name(policy)) + "/" + std::string(core::release_on_exit_name(release));
}

// Time and bytes of one kind of engine step (from the transition's kTransfer events), summed over timed iterations.
struct StepTotal {
  double seconds = 0;
  std::int64_t bytes = 0;
};
// (strategy, phase, operation with its numbers replaced by '*', transfer path).
using StepKey = std::tuple<std::string, std::string, std::string, std::string>;

struct RankResult {
  std::map<SeriesKey, Series> phases;
  std::map<StepKey, StepTotal> steps;
  std::map<SeriesKey, Series> bounds;
  std::vector<std::string> notes;
  std::string device_description;
  std::int64_t shard_bytes = 0;  // the inference shard of this rank
  std::int64_t d2h_bytes = 0;    // bytes of the d2h bound's copies (per iteration)
};

// Runs every phase and bound on one rank. `world` is the job's communicator (gloo, nccl), or nullptr for loopback
// (this function then makes one loopback communicator per strategy and one for the batch).
RankResult run_rank(const BenchConfig& config, int rank, core::Device& device, core::Communicator* world);

// Combines ranks: per timed iteration the slowest rank's time, then the mean; bytes and extra bytes the largest of
// any rank; #wrong summed.
BenchReport combine_ranks(const BenchConfig& config, const std::vector<RankResult>& ranks);

// GB/s (1e9 bytes per second); 0 when the time is 0.
double gigabytes_per_second(std::int64_t bytes, double seconds);

}  // namespace hybridshard::service::bench::detail
