// The cross-field checks of a job (JobConfig::validate), in three groups: the layouts (layout_checks.cc), the batch
// (batch_checks.cc) and the plain settings (job_validator.cc). Each problem names its key; ProblemList places it
// where that key (or else its section) was written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hybridshard/service/config/job_config.h"

namespace hybridshard::service::detail {

class ProblemList {
 public:
  explicit ProblemList(const JobConfig& job) : job_(job) {}

  // A problem with `key` ("train.tensor_model_parallel_size"); the same key and message twice count once.
  void error(const std::string& key, std::string message);
  // Reports "must be at least 1" unless `value` is; returns whether it is.
  bool positive(const std::string& key, std::int64_t value);
  std::vector<Diagnostic> take() { return std::move(diagnostics_); }

 private:
  const JobConfig& job_;
  std::vector<Diagnostic> diagnostics_;
};

// The model spec, the train and rollout layouts, the world size; the seed strategy's rule when `scope` is kRun.
void check_layouts(const JobConfig& job, ValidationScope scope, ProblemList& problems);
// The rollout batch and prompts: sizes, every rollout replica gets a row, prompts rectangular and in the vocabulary.
void check_batch(const JobConfig& job, ProblemList& problems);

}  // namespace hybridshard::service::detail
