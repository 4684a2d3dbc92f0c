// The layout checks of JobConfig::validate: core's problems, each tagged with its field, placed at the job key of
// that field; the world size against tp x pp and the rollout tp; the values that would work instead.
#include <algorithm>
#include <string>
#include <vector>

#include "config_text.h"
#include "job_validator.h"

namespace hybridshard::service::detail {
namespace {

using ModelField = core::ModelSpec::Field;
using TrainField = core::TrainLayout::Field;
using RolloutField = core::InferenceLayout::Field;

// The job key of each field core can find a problem with. A new field must be given its key here (-Wswitch).
std::string key_of(ModelField field) { return "model." + std::string(core::ModelSpec::field_name(field)); }

std::string key_of(TrainField field) {
  switch (field) {
    case TrainField::kTp:
    case TrainField::kPp:
    case TrainField::kVpp:
    case TrainField::kMakeVocabSizeDivisibleBy:
    case TrainField::kEp:
    case TrainField::kEtp:
      return "train." + std::string(core::TrainLayout::field_name(field));
    case TrainField::kDp:
      return "runtime.world_size";  // dp = world_size / (tp x pp)
  }
  return "train";
}

std::string key_of(RolloutField field) {
  switch (field) {
    case RolloutField::kTp:
      return "rollout.tensor_model_parallel_size";
    case RolloutField::kWorldSize:
      return "runtime.world_size";  // the rollout spans the job's ranks
    case RolloutField::kPadVocabTo:
      return "rollout";  // vLLM's padding: not a job key
    case RolloutField::kExpertParallel:
      return "rollout.enable_expert_parallel";
  }
  return "rollout";
}

std::string suggestion(const std::string& what, const std::vector<long long>& values) {
  if (values.empty()) return "";
  return "; " + what + " values that work here: " + join_numbers(values, "or");
}

// Train tensor-parallel sizes (`field` kTp) or pipeline sizes (kPp) that would work with everything else unchanged:
// only the varied field's own problems count, so a bad pipeline size does not hide the tensor-parallel sizes that work.
std::vector<long long> working_train(const JobConfig& job, TrainField field) {
  std::vector<long long> values;
  const int world = job.runtime.world_size;
  for (int candidate = 1; candidate <= std::min(world, 1024); ++candidate) {
    core::TrainLayout layout = job.train;
    (field == TrainField::kTp ? layout.tp : layout.pp) = candidate;
    if (world % (layout.tp * layout.pp) != 0) continue;
    layout.dp = world / (layout.tp * layout.pp);
    const auto problems = layout.validate(job.model.spec);
    if (std::none_of(problems.begin(), problems.end(),
                     [field](const core::TrainLayout::Problem& problem) { return problem.field == field; })) {
      values.push_back(candidate);
    }
  }
  return values;
}

std::vector<long long> working_rollout(const JobConfig& job) {
  std::vector<long long> values;
  const int world = job.runtime.world_size;
  for (int candidate = 1; candidate <= std::min(world, 1024); ++candidate) {
    if (world % candidate != 0) continue;
    core::InferenceLayout layout = job.rollout;
    layout.tp = candidate;
    layout.world_size = world;
    if (!layout.validate(job.model.spec).empty()) continue;
    if (job.runtime.strategy == core::Strategy::kSeed &&
        !core::strategy_applies(job.runtime.strategy, job.train, layout)) {
      continue;
    }
    values.push_back(candidate);
  }
  return values;
}

// The world size must be a multiple of train tp x pp; false (reported) when it is not.
bool check_world_divides(const JobConfig& job, ProblemList& problems) {
  const int world = job.runtime.world_size;
  const int group = job.train.tp * job.train.pp;
  if (world % group == 0) return true;
  std::vector<long long> worlds;
  for (int k = 1; k <= 4; ++k) worlds.push_back(static_cast<long long>(group) * k);
  const std::vector<long long> train_tps = working_train(job, TrainField::kTp);
  problems.error("runtime.world_size",
                 std::to_string(world) +
                     " is not a multiple of train tensor_model_parallel_size x pipeline_model_parallel_size = " +
                     std::to_string(group) + "; use " + join_numbers(worlds, "or") +
                     suggestion(" (or a train tensor_model_parallel_size", train_tps) + (train_tps.empty() ? "" : ")"));
  return false;
}

}  // namespace

void check_layouts(const JobConfig& job, ValidationScope scope, ProblemList& problems) {
  const core::ModelSpec& spec = job.model.spec;
  const core::TrainLayout& train = job.train;
  const int world = job.runtime.world_size;
  bool usable = problems.positive("runtime.world_size", world);
  usable &= problems.positive("train.tensor_model_parallel_size", train.tp);
  usable &= problems.positive("train.pipeline_model_parallel_size", train.pp);
  usable &= problems.positive("train.virtual_pipeline_model_parallel_size", train.vpp);
  usable &= problems.positive("train.make_vocab_size_divisible_by", train.make_vocab_size_divisible_by);
  usable &= problems.positive("rollout.tensor_model_parallel_size", job.rollout.tp);

  // A spec read from a checkpoint is the checkpoint's: its problems belong to that key.
  const auto spec_problems = spec.validate();
  for (const core::ModelSpec::Problem& problem : spec_problems) {
    problems.error(job.model.checkpoint.empty() ? key_of(problem.field) : "model.checkpoint", problem.message);
  }
  if (!usable || !spec_problems.empty() || !check_world_divides(job, problems)) return;

  if (train.world_size() != world) {
    problems.error("train", "data parallel size " + std::to_string(train.dp) + " does not match world_size " +
                                std::to_string(world) +
                                " / (tp x pp) = " + std::to_string(world / (train.tp * train.pp)));
  }
  if (job.rollout.world_size != world) {
    problems.error("rollout", "the rollout layout spans " + std::to_string(job.rollout.world_size) +
                                  " ranks but runtime.world_size is " + std::to_string(world) +
                                  "; rollout and training share the same ranks");
  }
  for (const core::TrainLayout::Problem& problem : train.validate(spec)) {
    const bool varies = problem.field == TrainField::kTp || problem.field == TrainField::kPp;
    problems.error(key_of(problem.field),
                   problem.message + (varies ? suggestion(std::string(core::TrainLayout::field_name(problem.field)),
                                                          working_train(job, problem.field))
                                             : ""));
  }
  if (world % job.rollout.tp != 0) {
    problems.error("rollout.tensor_model_parallel_size",
                   std::to_string(job.rollout.tp) + " does not divide world_size " + std::to_string(world) +
                       suggestion("tensor_model_parallel_size", working_rollout(job)));
    return;
  }
  for (const core::InferenceLayout::Problem& problem : job.rollout.validate(spec)) {
    problems.error(
        key_of(problem.field),
        problem.message +
            (problem.field == RolloutField::kTp ? suggestion("tensor_model_parallel_size", working_rollout(job)) : ""));
  }
  // `export` always moves the weights the hybridshard way: the seed strategy's rules are the run's.
  if (scope != ValidationScope::kRun || job.runtime.strategy != core::Strategy::kSeed) return;
  if (spec.is_moe()) {
    problems.error("runtime.strategy", "the seed strategy has no Mixture-of-Experts path (" +
                                           std::string(core::architecture_name(spec.architecture)) +
                                           "); use strategy: hybridshard");
  }
  if (!core::strategy_applies(job.runtime.strategy, train, job.rollout)) {
    problems.error("runtime.strategy",
                   "the seed strategy needs the rollout tensor_model_parallel_size to divide the train one (" +
                       std::to_string(job.rollout.tp) + " does not divide " + std::to_string(train.tp) +
                       "); use strategy: hybridshard");
  }
}

}  // namespace hybridshard::service::detail
