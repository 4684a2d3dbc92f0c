// The phase schedule of one rank: for every iteration train -> enter -> rollout -> exit, with the memory policy
// moving buffers at the phase boundaries, a phase_begin / phase_end event around every phase, a memory sample after
// every phase (and at the KV cache's fullest), and all ranks agreeing after each iteration whether to stop.
//
// What the phases compute (the train step, generation, its check) is behind PhaseWork: the rank program binds the
// workloads (rank_workloads.h), tests bind their own. What they move (train params, the inference shard, the batch)
// is the RankSetup's. No libtorch headers.
#pragma once

#include <functional>
#include <string_view>

#include "hybridshard/core/batch.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/service/config/memory_policy.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service {

class PhaseWork {
 public:
  virtual ~PhaseWork() = default;
  // train: one optimizer step on the train params (the train state is on the device).
  virtual void train(int iteration) = 0;
  // The train state's buffers of `kind` (kGrads, kMasterParams or kOptimizerState) to `placement`; called when the
  // policy's placement changes at a phase boundary (before the phase's work).
  virtual void place_train_state(core::BufferKind kind, Placement placement) = 0;
  // rollout: `max_new_tokens` new tokens after every row of `prompts` (this rank's rollout group's rows) with the
  // inference shard; throws when a check of the result fails.
  virtual core::TokenBatch generate(int iteration, core::FlatBuffer& shard, const core::TokenBatch& prompts) = 0;
  // The KV cache goes (the policy drops it between rollouts).
  virtual void release_kv_cache() = 0;
};

// Where a caller follows the schedule or steers it; every member may be empty.
struct ScheduleHooks {
  std::function<void(int iteration)> iteration_begin;
  // Right after a phase's phase_begin event (the rank program injects faults here). Phase "train", "enter", ...
  std::function<void(int iteration, std::string_view phase)> phase_begin;
  // After every iteration: whether every rank stops now. Must give the same answer on every rank.
  std::function<bool(int iteration)> stop_after;
};

struct ScheduleOptions {
  int iterations = 1;
  MemoryPolicy policy;
  // This train replica's prompts at `iteration` (the same on every rank of the replica; rows x cols).
  std::function<core::TokenBatch(int iteration)> prompts;
  double sample_interval_seconds = 0.5;  // memory samples from a thread of their own, besides those after phases
};

struct ScheduleResult {
  int iterations_done = 0;
  bool stopped = false;  // stop_after said so
};

// A job's schedule for `rank`: schedule.iterations, the policy of its memory section, the prompts of the rank's train
// replica (job_prompts; `job` must outlive the options) and metrics.sample_interval_seconds.
ScheduleOptions schedule_options(const JobConfig& job, int rank);

// The prompts of train replica `replica` at `iteration`: its rows of rollout.prompts when the job gives them (they are
// the global batch: replica d holds rows [d * P, (d + 1) * P), P = prompts_per_train_replica), else P rows of
// prompt_length token ids, seeded by (model.seed, replica, iteration).
core::TokenBatch job_prompts(const JobConfig& job, int replica, int iteration);

// Runs the schedule on a set-up rank (collective: every rank runs it). Events go to `events` (phases, memory
// samples); the setup's own sink gets the buffers' and the transition's. Ends with a barrier of the world. Throws
// whatever a phase throws; core::Error when the batch does not come back whole.
ScheduleResult run_phase_schedule(RankSetup& setup, PhaseWork& work, const ScheduleOptions& options,
                                  core::EventSink& events, const ScheduleHooks& hooks = {});

}  // namespace hybridshard::service
