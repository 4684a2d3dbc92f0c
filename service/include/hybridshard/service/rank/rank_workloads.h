// The work behind a job's phases (PhaseWork for run_phase_schedule): the Adam train step on the rank's train params,
// the tensor-parallel rollout with its KV cache sized by the memory policy's rule, and, with rollout.check, the
// single-rank reference that trains in step and checks every generated token.
#pragma once

#include <iosfwd>
#include <memory>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/rank/phase_schedule.h"
#include "hybridshard/service/rank/rank_setup.h"
#include "hybridshard/service/workloads/reference_model.h"
#include "hybridshard/service/workloads/rollout.h"
#include "hybridshard/service/workloads/train_step.h"

namespace hybridshard::service {

class RankWorkloads : public PhaseWork {
 public:
  // Allocates the train state (and the reference, when the job checks and the model is small enough; otherwise rank
  // 0 says on `log` that the check is off). `job` and `setup` must outlive this.
  RankWorkloads(const JobConfig& job, RankSetup& setup, core::EventSink* events, std::ostream& log);
  ~RankWorkloads() override;

  void train(int iteration) override;
  void place_train_state(core::BufferKind kind, Placement placement) override;
  // The first call makes the rollout: its KV cache is rollout.kv_cache_bytes, else kv_cache_budget over what the
  // device holds now; OutOfMemoryError when that is less than the batch needs.
  core::TokenBatch generate(int iteration, core::FlatBuffer& shard, const core::TokenBatch& prompts) override;
  void release_kv_cache() override;

  workloads::TrainStep& train_step() { return train_; }
  bool checks() const { return reference_ != nullptr; }

 private:
  void make_rollout();

  const JobConfig& job_;
  RankSetup& setup_;
  core::EventSink* events_;
  workloads::TrainStep train_;
  std::unique_ptr<workloads::ReferenceModel> reference_;
  std::unique_ptr<workloads::Rollout> rollout_;
};

}  // namespace hybridshard::service
