// The rollout batch: its default size, and the checks of JobConfig::validate on it (sizes, a row for every rollout
// replica, prompts rectangular and inside the vocabulary, prompt + new tokens within the model's positions).
#include <algorithm>
#include <string>

#include "config_text.h"
#include "job_validator.h"

namespace hybridshard::service {

std::int64_t default_prompts_per_train_replica(std::int64_t train_dp, std::int64_t rollout_replicas) {
  if (train_dp < 1) return 2;
  return std::max<std::int64_t>(2, (rollout_replicas + train_dp - 1) / train_dp);
}

namespace detail {
namespace {

void check_prompts(const JobConfig& job, ProblemList& problems) {
  const GenerationConfig& generation = job.generation;
  const std::int64_t vocab_size = job.model.spec.vocab_size;
  const std::size_t length = generation.prompts.front().size();
  for (std::size_t row = 0; row < generation.prompts.size(); ++row) {
    const auto& tokens = generation.prompts[row];
    if (tokens.empty()) {
      problems.error("rollout.prompts",
                     "prompt " + std::to_string(row) + " is empty; every prompt needs at least one token");
    } else if (tokens.size() != length) {
      problems.error("rollout.prompts", "prompt " + std::to_string(row) + " has " + std::to_string(tokens.size()) +
                                            " tokens but prompt 0 has " + std::to_string(length) +
                                            "; every prompt must have the same length");
    }
    for (std::int32_t token : tokens) {
      if (vocab_size > 0 && (token < 0 || token >= vocab_size)) {
        problems.error("rollout.prompts", "prompt " + std::to_string(row) + " has token id " + std::to_string(token) +
                                              ", outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
        break;
      }
    }
  }
}

// The global batch (prompts_per_train_replica x train dp rows) against the explicit prompts and the rollout
// replicas; only for layouts that divide the world (check_layouts reports the others).
void check_batch_rows(const JobConfig& job, ProblemList& problems) {
  const GenerationConfig& generation = job.generation;
  const core::TrainLayout& train = job.train;
  const int world = job.runtime.world_size;
  if (train.tp < 1 || train.pp < 1 || world < 1 || job.rollout.tp < 1) return;
  if (world % (train.tp * train.pp) != 0 || world % job.rollout.tp != 0) return;
  const std::int64_t dp = world / (train.tp * train.pp);
  const std::int64_t per_train = generation.prompts_per_train_replica;
  const std::int64_t rows = per_train * dp;
  const auto prompts = static_cast<std::int64_t>(generation.prompts.size());
  if (prompts > 0 && prompts % dp != 0) {
    problems.error("rollout.prompts", std::to_string(prompts) +
                                          " prompts do not split evenly over the train data "
                                          "parallel size " +
                                          std::to_string(dp) + "; give a multiple of " + std::to_string(dp) +
                                          " prompts");
  } else if (prompts > 0 && prompts != rows) {
    problems.error("rollout.prompts", std::to_string(prompts) +
                                          " prompts given, but the batch has prompts_per_train_replica x train data "
                                          "parallel size = " +
                                          std::to_string(per_train) + " x " + std::to_string(dp) + " = " +
                                          std::to_string(rows) + " rows");
  }
  const std::int64_t rollout_replicas = world / job.rollout.tp;
  if (rows < rollout_replicas) {
    problems.error("rollout.prompts_per_train_replica",
                   "the batch has " + std::to_string(rows) + " rows (prompts_per_train_replica " +
                       std::to_string(per_train) + " x train data parallel size " + std::to_string(dp) + ") for " +
                       std::to_string(rollout_replicas) +
                       " rollout replicas (world_size / rollout tensor_model_parallel_size); every rollout replica "
                       "needs a row: use at least " +
                       std::to_string((rollout_replicas + dp - 1) / dp) + " (or leave the key out)");
  }
}

}  // namespace

void check_batch(const JobConfig& job, ProblemList& problems) {
  const GenerationConfig& generation = job.generation;
  if (!(generation.gpu_memory_utilization > 0.0 && generation.gpu_memory_utilization <= 1.0)) {
    problems.error("rollout.gpu_memory_utilization", format_number(generation.gpu_memory_utilization) +
                                                         " is out of range; use a fraction above 0 up to 1");
  }
  bool sizes_ok = problems.positive("rollout.max_new_tokens", generation.max_new_tokens);
  sizes_ok &= problems.positive("rollout.prompt_length", generation.prompt_length);
  sizes_ok &= problems.positive("rollout.prompts_per_train_replica", generation.prompts_per_train_replica);
  if (generation.kv_cache_bytes < 0) problems.error("rollout.kv_cache_bytes", "must not be negative");
  if (generation.check_max_parameters < 0) problems.error("rollout.check_max_parameters", "must not be negative");

  std::int64_t prompt_length = generation.prompt_length;
  if (!generation.prompts.empty()) {
    check_prompts(job, problems);
    prompt_length = static_cast<std::int64_t>(generation.prompts.front().size());
  }
  const std::int64_t positions = job.model.spec.max_position_embeddings;
  if (sizes_ok && prompt_length + generation.max_new_tokens > positions) {
    problems.error("rollout.max_new_tokens", "prompt length " + std::to_string(prompt_length) + " + max_new_tokens " +
                                                 std::to_string(generation.max_new_tokens) +
                                                 " exceeds the model's max_position_embeddings " +
                                                 std::to_string(positions));
  }
  if (sizes_ok) check_batch_rows(job, problems);
}

}  // namespace detail
}  // namespace hybridshard::service
