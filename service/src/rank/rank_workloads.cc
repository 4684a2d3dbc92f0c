#include "hybridshard/service/rank/rank_workloads.h"

#include <ostream>
#include <string>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/config/memory_policy.h"

namespace hybridshard::service {
namespace {

workloads::AdamOptions adam_of(const JobConfig& job) {
  workloads::AdamOptions adam;
  adam.learning_rate = job.schedule.learning_rate;
  return adam;
}

// The full model's weights for the reference: from the checkpoint when there is one (else the generator's, at the
// model's seed, as for the train shards).
workloads::FullModelLoader full_model_loader(const core::ModelSpec& spec, const HfCheckpoint* checkpoint,
                                             core::Device& device) {
  if (checkpoint == nullptr) return {};
  return [&spec, checkpoint, &device](const core::BufferLayout& full_layout, core::FlatBuffer& buffer) {
    std::vector<std::uint8_t> host(static_cast<std::size_t>(full_layout.bytes));
    checkpoint->read_buffer(spec, full_layout, host.data());
    device.copy(buffer.data(), buffer.residency(), host.data(), core::Residency::kCpu, full_layout.bytes);
    device.synchronize();
  };
}

}  // namespace

RankWorkloads::RankWorkloads(const JobConfig& job, RankSetup& setup, core::EventSink* events, std::ostream& log)
    : job_(job),
      setup_(setup),
      events_(events),
      train_(setup.plan().train_buffers, setup.train_params(), setup.device(), events, setup.rank(), adam_of(job)) {
  const core::ModelSpec& spec = job.model.spec;
  const GenerationConfig& settings = job.generation;
  const bool check = settings.check && spec.num_parameters() <= settings.check_max_parameters;
  if (settings.check && !check && setup.rank() == 0) {
    log << "[rank 0] note: the rollout reference check is off: " << spec.num_parameters()
        << " parameters exceed rollout.check_max_parameters " << settings.check_max_parameters << "\n";
  }
  if (check) {
    // The reference lives in the same device's memory: it is the referee, not part of the job's budget, but it is
    // tracked like everything else.
    reference_ = std::make_unique<workloads::ReferenceModel>(
        spec, setup.device(), events, setup.rank(), adam_of(job), job.model.seed,
        full_model_loader(spec, setup.checkpoint(), setup.device()));
  }
}

RankWorkloads::~RankWorkloads() = default;

void RankWorkloads::train(int iteration) {
  train_.step(iteration);
  if (reference_) reference_->step(iteration);
}

void RankWorkloads::place_train_state(core::BufferKind kind, Placement placement) {
  switch (placement) {
    case Placement::kDevice:
      train_.restore();  // everything of the train state back (freed gradients re-made as zeros)
      return;
    case Placement::kHost:
      if (kind == core::BufferKind::kGrads) {
        train_.offload_grads();
      } else {
        train_.offload_optimizer();  // master weights and moments move together
      }
      return;
    case Placement::kNone:
      HS_CHECK(kind == core::BufferKind::kGrads,
               "RankWorkloads: only gradients can be freed (the optimizer state "
               "cannot be rebuilt), not " +
                   std::string(core::buffer_kind_name(kind)));
      train_.free_grads();
      return;
  }
}

void RankWorkloads::make_rollout() {
  core::Device& device = setup_.device();
  const GenerationConfig& settings = job_.generation;
  // Blocks the device keeps cached are free for the KV cache to take.
  const std::int64_t budget = kv_cache_budget(settings, device.total_memory(),
                                              device.used_memory() - device.bytes_cached(core::Residency::kGpu));
  const KvCacheNeed need = kv_cache_needed(job_);
  if (settings.kv_cache_bytes <= 0 && budget < need.bytes) {
    HS_THROW(core::OutOfMemoryError,
             "rank " + std::to_string(setup_.rank()) + ": no room for the KV cache: rollout.gpu_memory_utilization " +
                 std::to_string(settings.gpu_memory_utilization) + " of " + std::to_string(device.total_memory()) +
                 " device bytes leaves " + std::to_string(budget) + " bytes after the weights, but the rollout needs " +
                 std::to_string(need.bytes) + " (" + std::to_string(need.rows) + " rows of " +
                 std::to_string(need.tokens_per_row) + " tokens)");
  }
  rollout_ = std::make_unique<workloads::Rollout>(job_.model.spec, job_.rollout, setup_.inference_tp_rank(),
                                                  setup_.rollout_group(), device, events_, setup_.rank(), budget);
}

core::TokenBatch RankWorkloads::generate(int iteration, core::FlatBuffer& shard, const core::TokenBatch& prompts) {
  if (!rollout_) make_rollout();
  rollout_->set_iteration(iteration);
  core::TokenBatch generated = rollout_->generate(shard, prompts, job_.generation.max_new_tokens);
  if (reference_) {
    reference_->set_iteration(iteration);
    const workloads::CheckResult result = reference_->check(prompts, generated, rollout_->last_token_logits());
    if (!result.ok) {
      HS_THROW(core::Error, "rank " + std::to_string(setup_.rank()) + ": the rollout of iteration " +
                                std::to_string(iteration + 1) +
                                " disagrees with the single-rank reference: " + result.detail);
    }
  }
  return generated;
}

void RankWorkloads::release_kv_cache() {
  if (rollout_) rollout_->release_kv_cache();
}

}  // namespace hybridshard::service
