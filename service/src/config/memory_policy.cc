#include "hybridshard/service/config/memory_policy.h"

#include <algorithm>

namespace hybridshard::service {

std::string_view plan_phase_name(PlanPhase phase) {
  switch (phase) {
    case PlanPhase::kTrain:
      return "train";
    case PlanPhase::kEnter:
      return "enter";
    case PlanPhase::kRollout:
      return "rollout";
    case PlanPhase::kExit:
      return "exit";
  }
  return "?";
}

std::string_view placement_name(Placement placement) {
  switch (placement) {
    case Placement::kDevice:
      return "device";
    case Placement::kHost:
      return "host";
    case Placement::kNone:
      return "none";
  }
  return "?";
}

core::Residency residency_of(Placement placement) {
  switch (placement) {
    case Placement::kDevice:
      return core::Residency::kGpu;
    case Placement::kHost:
      return core::Residency::kCpu;
    case Placement::kNone:
      return core::Residency::kNone;
  }
  return core::Residency::kNone;
}

TrainStateBytes train_state_bytes(const core::BufferLayout& params_chunk) {
  core::BufferLayout fp32;
  fp32.dtype = core::DType::kFloat32;
  for (const core::LocalTensor& tensor : params_chunk.tensors) core::append_tensor(fp32, tensor);
  TrainStateBytes bytes;
  bytes.grads = fp32.bytes;
  bytes.master_params = fp32.bytes;
  bytes.optimizer_state = 2 * fp32.bytes;
  return bytes;
}

std::int64_t kv_cache_bytes_per_token(const core::ModelSpec& spec, const core::InferenceLayout& layout) {
  return spec.num_hidden_layers * 2 * layout.kv_heads_per_rank(spec) * spec.resolved_head_dim() *
         static_cast<std::int64_t>(sizeof(float));
}

Placement MemoryPolicy::placement(core::BufferKind kind, PlanPhase phase) const {
  const bool training = phase == PlanPhase::kTrain;
  switch (kind) {
    case core::BufferKind::kParams:
      // Offloaded params leave after enter has read them and come back at the end of exit.
      return memory_.offload_params_in_rollout && (phase == PlanPhase::kRollout || phase == PlanPhase::kExit)
                 ? Placement::kHost
                 : Placement::kDevice;
    case core::BufferKind::kGrads:
      if (training) return Placement::kDevice;
      if (memory_.free_grads_in_rollout) return Placement::kNone;
      return memory_.offload_grads_in_rollout ? Placement::kHost : Placement::kDevice;
    case core::BufferKind::kMasterParams:
    case core::BufferKind::kOptimizerState:
      return !training && memory_.offload_optimizer_in_rollout ? Placement::kHost : Placement::kDevice;
    case core::BufferKind::kInferenceParams:
      if (!training) return Placement::kDevice;
      return memory_.exit_policy == core::ExitPolicy::kOffload ? Placement::kHost : Placement::kNone;
    case core::BufferKind::kKvCache:
      // Made at the first rollout; with free_kv_cache_in_train it is dropped as the rollout ends.
      if (phase == PlanPhase::kRollout) return Placement::kDevice;
      return memory_.free_kv_cache_in_train ? Placement::kNone : Placement::kDevice;
    case core::BufferKind::kStaging:
      return phase == PlanPhase::kEnter ? Placement::kDevice : Placement::kNone;
  }
  return Placement::kNone;
}

std::int64_t kv_cache_budget(const GenerationConfig& generation, std::int64_t device_total,
                             std::int64_t device_in_use) {
  if (generation.kv_cache_bytes > 0) return generation.kv_cache_bytes;
  const auto allowed = static_cast<std::int64_t>(generation.gpu_memory_utilization * static_cast<double>(device_total));
  return std::max<std::int64_t>(0, allowed - device_in_use);
}

KvCacheNeed kv_cache_needed(const JobConfig& job) {
  const GenerationConfig& settings = job.generation;
  const std::int64_t rows_per_replica = settings.prompts_per_train_replica;  // explicit prompts are the global batch
  const std::int64_t prompt_length =
      settings.prompts.empty() ? settings.prompt_length : static_cast<std::int64_t>(settings.prompts.front().size());
  const std::int64_t rollout_replicas = std::max(1, job.rollout.dp());
  KvCacheNeed need;
  need.rows = (rows_per_replica * job.train.dp + rollout_replicas - 1) / rollout_replicas;
  need.tokens_per_row = prompt_length + settings.max_new_tokens;
  need.bytes = need.rows * need.tokens_per_row * kv_cache_bytes_per_token(job.model.spec, job.rollout);
  return need;
}

}  // namespace hybridshard::service
