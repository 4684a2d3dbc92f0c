// What `hybridshard plan` prints: per rank and per phase (train, enter, rollout, exit), the bytes of each buffer kind
// on the device and in pinned host memory, the device peak, the network bytes of enter, and whether it all fits.
// Computed from the job alone (layouts, core::make_rank_plan, the memory policy); nothing runs. Also the predicted
// enter time of every rank on the job's topology (core/enter_time.h).
//
// Where each kind is in each phase is MemoryPolicy::placement, the object the rank's schedule applies. Sizes, per
// rank:
//   params        the rank's train chunks (train.params.pp<P>.vpp<V>, model dtype)
//   grads, master_params, optimizer   train_state_bytes: what the train step holds in fp32 beside each chunk
//   inference_params  the rank's inference shard (vLLM layout)
//   kv_cache      kv_cache_budget: rollout.kv_cache_bytes, else gpu_memory_utilization * device memory - everything
//                 else on the device during rollout (vLLM's rule); it must hold what the batch needs
//   staging       enter's send + receive staging of the largest round (hybridshard); the seed strategy instead keeps
//                 the other pipeline stages' params (on the host between phases) and per-tensor gather temporaries
//                 (estimates of core's seed transition)
// Phases: train (steady state), enter (peak of the transition), rollout (generation), exit (peak of the exit: the
// inference shard is still on the device while it is freed or copied to the host).
// Cached: device memory the device's cache holds beside the live buffers (freed blocks kept for reuse; the driver
// counts them as used, a colocated trainer cannot have them). Per kind, what the kind held on the device earlier and
// does not hold now, since the last release: memory.release_on_exit driver empties the cache at the end of exit (the
// cycle starts at train), cache keeps it (every kind holds its largest size all the time). An upper bound: a block
// reused by another kind of a like size is counted twice, and an allocation that does not fit releases the cache (so
// it is at most what the device has beyond the live buffers).
#pragma once

#include <array>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "hybridshard/core/residency.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/config/memory_policy.h"

namespace hybridshard::service {

inline constexpr int kNumBufferKinds = 7;  // core::BufferKind values

struct PhaseMemory {
  PlanPhase phase = PlanPhase::kTrain;
  std::array<std::int64_t, kNumBufferKinds> device{};  // by core::BufferKind
  std::array<std::int64_t, kNumBufferKinds> host{};    // pinned host, by core::BufferKind
  std::int64_t cached = 0;                             // device memory in the device's cache (at most)
  std::int64_t device_total() const;                   // the live buffers (cached not included: the cache gives way)
  std::int64_t host_total() const;
};

struct RankMemoryPlan {
  int rank = 0;
  core::TrainLayout::Coord train;
  core::InferenceLayout::Coord rollout;
  std::vector<std::int64_t> params_per_chunk;  // bytes of each vpp chunk's parameter buffer
  std::array<PhaseMemory, kNumPlanPhases> phases;
  std::int64_t kv_cache_needed = 0;  // what the batch needs (rows x (prompt + new tokens) x layers x K and V)
  std::int64_t peak_device = 0;      // the largest phase total
  std::int64_t peak_host = 0;
  std::int64_t enter_network_received = 0;
  std::int64_t enter_network_sent = 0;
  bool network_estimated = false;  // seed strategy: a formula, not a plan
  bool fits = true;
  std::vector<std::string> notes;      // why it does not fit, what was assumed
  core::EnterTimeEstimate enter_time;  // predicted on job.topology (hybridshard strategy; zero for the seed)
};

struct MemoryPlan {
  std::string title;               // the model and the layouts, for the table's head
  std::int64_t device_memory = 0;  // bytes per device the plan was checked against
  bool device_is_cpu = false;      // CPU ranks (gloo): runtime.cpu_device_memory
  std::vector<RankMemoryPlan> ranks;
  bool fits = true;                    // every rank fits
  double predicted_enter_seconds = 0;  // the slowest rank's predicted enter (enter ends with a world barrier)
  int slowest_rank = 0;
  core::Topology topology;  // what the prediction assumed
  core::Transport transport = core::Transport::kAuto;
};

// `device_memory`: bytes per device to check against; 0 takes runtime.device_memory, else (gloo backend)
// runtime.cpu_device_memory, else 80 GB. Throws core::ConfigError when the job's layouts are unusable (validate
// first).
// One reshard plan per class of ranks that share a plan shape (core/plan_classes.h), copied to its members.
MemoryPlan make_memory_plan(const JobConfig& job, std::int64_t device_memory = 0);
// The plan of `rank` alone (ranks holds it only): what a rank checks at start-up, in time that does not grow with the
// world. Throws core::ConfigError for a rank outside the world.
MemoryPlan make_rank_memory_plan(const JobConfig& job, int rank, std::int64_t device_memory = 0);

// A readable table: one block per distinct rank shape (ranks with identical numbers are listed together), a row per
// buffer kind, columns per phase (device / host), then the peak, enter's network bytes and the verdict.
std::string format_memory_plan(const MemoryPlan& plan);
void print_memory_plan(const MemoryPlan& plan, std::ostream& out);  // format_memory_plan to `out`

}  // namespace hybridshard::service
