// The memory policy of a job (its `memory:` section): where each kind of a rank's buffers lives in each phase of the
// schedule, what the train step holds beside the parameters, and how large the KV cache gets. One object, read by
// both sides: the rank's phase schedule applies it (hybridshard/service/rank/phase_schedule.h), and `hybridshard
// plan` predicts memory from it (memory_plan.h).
#pragma once

#include <cstdint>
#include <string_view>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/core/transition.h"
#include "hybridshard/service/config/job_config.h"

namespace hybridshard::service {

// The phases of one iteration, in order.
enum class PlanPhase : std::uint8_t { kTrain, kEnter, kRollout, kExit };
inline constexpr int kNumPlanPhases = 4;
std::string_view plan_phase_name(PlanPhase phase);  // "train", "enter", "rollout", "exit"

// Where a kind of buffer is during a phase.
enum class Placement : std::uint8_t { kDevice, kHost, kNone };
std::string_view placement_name(Placement placement);  // "device", "host", "none"
core::Residency residency_of(Placement placement);     // kGpu, kCpu, kNone

// What the train step (workloads::TrainStep: Adam with fp32 master weights) holds beside one chunk's parameters:
// fp32 gradients, fp32 master weights and Adam's two fp32 moments, each at the offsets of the chunk's fp32 layout
// (its tensors re-placed at aligned fp32 offsets). Master weights are kept even for an fp32 model.
struct TrainStateBytes {
  std::int64_t grads = 0;
  std::int64_t master_params = 0;
  std::int64_t optimizer_state = 0;  // exp_avg + exp_avg_sq
};
TrainStateBytes train_state_bytes(const core::BufferLayout& params_chunk);

// KV cache bytes of one token position on one rank: every layer's keys and values of the rank's KV heads, in fp32
// (workloads::Rollout's cache).
std::int64_t kv_cache_bytes_per_token(const core::ModelSpec& spec, const core::InferenceLayout& layout);

class MemoryPolicy {
 public:
  MemoryPolicy() = default;  // MemoryConfig's defaults
  explicit MemoryPolicy(const MemoryConfig& memory) : memory_(memory) {}

  // Where `kind` is during `phase`, at the phase's peak: enter with the inference shard built and the train params
  // still on the device (they may leave for the host right after: offload_params_in_rollout); exit with the shard
  // still on the device. kStaging is enter's alone. The schedule moves buffers at the phase boundaries to match.
  Placement placement(core::BufferKind kind, PlanPhase phase) const;

  core::ExitPolicy exit_policy() const { return memory_.exit_policy; }
  core::ReleaseOnExit release_on_exit() const { return memory_.release_on_exit; }
  const MemoryConfig& config() const { return memory_; }

 private:
  MemoryConfig memory_;
};

// The KV cache a rollout gets: rollout.kv_cache_bytes when given, else vLLM's rule, gpu_memory_utilization of the
// device's `device_total` bytes minus the `device_in_use` bytes already there during rollout (at least 0).
std::int64_t kv_cache_budget(const GenerationConfig& generation, std::int64_t device_total, std::int64_t device_in_use);

// What the batch needs in KV cache on one rank: the rows of one rollout group (every train replica's prompts, spread
// over the rollout replicas) x (prompt + new tokens) positions.
struct KvCacheNeed {
  std::int64_t rows = 0;
  std::int64_t tokens_per_row = 0;
  std::int64_t bytes = 0;
};
KvCacheNeed kv_cache_needed(const JobConfig& job);

}  // namespace hybridshard::service
