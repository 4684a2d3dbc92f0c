// The rollout's referee: the same model on one rank, from the FULL weights (core's tp=1, pp=1 train layout), trained
// in step with the sharded model by the very same TrainStep updates, so that its weights equal the shards bit for
// bit. check() runs a teacher-forced forward over prompt + generated tokens and accepts a generated token only when
// it is the reference's argmax, or within `margin_epsilon` of it (a near-tie); stale or wrong weights fail.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hybridshard/core/batch.h"
#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/service/workloads/train_step.h"

namespace hybridshard::service::workloads {

// The full model's parameter buffer: core::train_param_buffers for tp=1, pp=1, vpp=1 (Megatron-Core names).
core::BufferLayout full_model_layout(const core::ModelSpec& spec);

// Fills `target` (any layout of `spec` in the same dtype: a train chunk, an inference shard) from the full model in
// `full`, through the blocks of both layouts; padding and alignment bytes become zero. Both buffers resident on
// `device`. This is how a checkpoint seeds both the train shards and the reference.
void copy_from_full(const core::ModelSpec& spec, const core::BufferLayout& full_layout, core::FlatBuffer& full,
                    const core::BufferLayout& target_layout, core::FlatBuffer& target, core::Device& device);

// Fills the full model's buffer (resident on the device, full_model_layout(spec)), e.g. from a checkpoint.
using FullModelLoader = std::function<void(const core::BufferLayout& full_layout, core::FlatBuffer& buffer)>;

struct CheckOptions {
  // A generated token passes when reference_logit(token) >= reference max - margin_epsilon.
  float margin_epsilon = 1e-3f;
  // With the rollout's logits given: |rollout logit - reference logit| of each chosen token must stay below this.
  float logit_tolerance = 1e-2f;
};

struct CheckResult {
  bool ok = false;
  std::string detail;
  std::int64_t tokens_checked = 0;
  std::int64_t tokens_wrong = 0;
  std::int64_t near_ties = 0;  // accepted tokens that were not the reference's argmax
  double max_logit_diff = 0;   // over chosen tokens; 0 when the rollout's logits were not given
  double min_margin = 0;       // smallest top-2 margin of the reference over the checked positions
};

class ReferenceModel {
 public:
  // Weights: `loader` when given, else core::weight_value(..., seed_version) (what Device::generate writes, as for
  // the train shards). Buffers "reference.params" and the TrainStep's "reference.*" live on `device`.
  ReferenceModel(const core::ModelSpec& spec, core::Device& device, core::EventSink* events, int rank, AdamOptions adam,
                 std::uint32_t seed_version, const FullModelLoader& loader = {});
  ~ReferenceModel();
  ReferenceModel(const ReferenceModel&) = delete;
  ReferenceModel& operator=(const ReferenceModel&) = delete;

  // The same update TrainStep::step(iteration) makes on every shard.
  void step(int iteration);

  // `generated` holds prompts.rows rows of new tokens; `token_logits` (optional: empty) the rollout's logit of each
  // (Rollout::last_token_logits()). Emits a kCheck event (operation "rollout_reference") when events are on.
  CheckResult check(const core::TokenBatch& prompts, const core::TokenBatch& generated,
                    const std::vector<float>& token_logits = {}, const CheckOptions& options = {});

  // Greedy generation without a KV cache (a full forward per token): the reference's own tokens.
  core::TokenBatch generate(const core::TokenBatch& prompts, std::int64_t max_new_tokens);

  const core::BufferLayout& layout() const;
  core::FlatBuffer& params();
  TrainStep& train_step();
  void set_iteration(int iteration) { iteration_ = iteration; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int iteration_ = -1;
};

}  // namespace hybridshard::service::workloads
