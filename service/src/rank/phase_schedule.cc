#include "hybridshard/service/rank/phase_schedule.h"

#include <array>
#include <atomic>
#include <string>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/transition.h"
#include "hybridshard/service/rank/phase_events.h"

namespace hybridshard::service {
namespace {

// The train state's kinds, in the order they move (the optimizer before the gradients, as a trainer frees them).
constexpr std::array<core::BufferKind, 3> kTrainStateKinds{core::BufferKind::kMasterParams,
                                                           core::BufferKind::kOptimizerState, core::BufferKind::kGrads};

// One rank's run of the schedule: the setup's buffers, the work, and the policy that moves them.
class Schedule {
 public:
  Schedule(RankSetup& setup, PhaseWork& work, const ScheduleOptions& options, core::EventSink& events,
           const ScheduleHooks& hooks)
      : setup_(setup),
        work_(work),
        options_(options),
        policy_(options.policy),
        events_(events),
        hooks_(hooks),
        rank_(setup.rank()),
        batches_(setup.options().train, setup.options().rollout, setup.world(), setup.device()) {}

  void train(int iteration) {
    PhaseScope phase(events_, rank_, iteration, "train", hooks_.phase_begin);
    move_train_state(PlanPhase::kExit, PlanPhase::kTrain);
    work_.train(iteration);
    setup_.device().synchronize();
  }

  core::FlatBuffer& enter(int iteration) {
    PhaseScope phase(events_, rank_, iteration, "enter", hooks_.phase_begin);
    move_train_state(PlanPhase::kTrain, PlanPhase::kEnter);
    core::FlatBuffer& shard = setup_.transition().enter(setup_.train_params());
    // The train params may leave only now: the transition read them.
    move_params(PlanPhase::kRollout);
    setup_.device().synchronize();
    return shard;
  }

  void rollout(int iteration, core::FlatBuffer& shard) {
    PhaseScope phase(events_, rank_, iteration, "rollout", hooks_.phase_begin);
    move_train_state(PlanPhase::kEnter, PlanPhase::kRollout);
    const core::TokenBatch replica_batch = options_.prompts(iteration);
    const core::TokenBatch prompts = batches_.preprocess(replica_batch, replica_batch.rows, replica_batch.cols);
    const core::TokenBatch generated = work_.generate(iteration, shard, prompts);
    emit_memory_sample(events_, setup_.device(), rank_, iteration);  // the KV cache at its fullest
    const core::TokenBatch outputs = batches_.postprocess(generated, replica_batch.rows);
    if (outputs.rows != replica_batch.rows) {
      HS_THROW(core::Error, "rank " + std::to_string(rank_) + ": batch re-distribution returned " +
                                std::to_string(outputs.rows) + " rows, expected " + std::to_string(replica_batch.rows));
    }
    if (policy_.placement(core::BufferKind::kKvCache, PlanPhase::kExit) == Placement::kNone) work_.release_kv_cache();
  }

  void exit(int iteration) {
    PhaseScope phase(events_, rank_, iteration, "exit", hooks_.phase_begin);
    move_train_state(PlanPhase::kRollout, PlanPhase::kExit);
    setup_.transition().exit(policy_.exit_policy());
    move_params(PlanPhase::kTrain);
    setup_.device().synchronize();
    // Last: what exit and the moves freed goes back to the driver, or stays cached for the next enter.
    core::release_after_exit(setup_.device(), policy_.release_on_exit());
  }

  ScheduleResult run() {
    std::atomic<int> current_iteration{-1};
    MemorySampler sampler(events_, setup_.device(), rank_, options_.sample_interval_seconds, current_iteration);
    emit_memory_sample(events_, setup_.device(), rank_, -1);
    ScheduleResult result;
    for (int iteration = 0; iteration < options_.iterations; ++iteration) {
      current_iteration = iteration;
      if (hooks_.iteration_begin) hooks_.iteration_begin(iteration);
      setup_.transition().set_iteration(iteration);
      setup_.train_weights().set_iteration(iteration);

      train(iteration);
      emit_memory_sample(events_, setup_.device(), rank_, iteration);
      core::FlatBuffer& shard = enter(iteration);
      emit_memory_sample(events_, setup_.device(), rank_, iteration);
      rollout(iteration, shard);
      emit_memory_sample(events_, setup_.device(), rank_, iteration);
      exit(iteration);
      emit_memory_sample(events_, setup_.device(), rank_, iteration);

      result.iterations_done = iteration + 1;
      if (hooks_.stop_after && hooks_.stop_after(iteration)) {
        result.stopped = true;
        break;
      }
    }
    setup_.world().barrier();
    return result;
  }

 private:
  // The train state's kinds whose placement differs between the phases go where `to` wants them.
  void move_train_state(PlanPhase from, PlanPhase to) {
    for (core::BufferKind kind : kTrainStateKinds) {
      const Placement target = policy_.placement(kind, to);
      if (target != policy_.placement(kind, from)) work_.place_train_state(kind, target);
    }
  }

  void move_params(PlanPhase phase) {
    const core::Residency target = residency_of(policy_.placement(core::BufferKind::kParams, phase));
    for (core::FlatBuffer* buffer : setup_.train_params()) {
      if (buffer->residency() != target) buffer->move_to(target, /*keep_contents=*/true);
    }
  }

  RankSetup& setup_;
  PhaseWork& work_;
  const ScheduleOptions& options_;
  const MemoryPolicy& policy_;
  core::EventSink& events_;
  const ScheduleHooks& hooks_;
  int rank_;
  core::BatchRedistribution batches_;
};

}  // namespace

ScheduleResult run_phase_schedule(RankSetup& setup, PhaseWork& work, const ScheduleOptions& options,
                                  core::EventSink& events, const ScheduleHooks& hooks) {
  HS_CHECK(options.prompts != nullptr, "run_phase_schedule: no prompts");
  return Schedule(setup, work, options, events, hooks).run();
}

}  // namespace hybridshard::service
