// A job's schedule options: what run_phase_schedule needs from the job file.
#include "hybridshard/core/weight_generator.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/rank/phase_schedule.h"

namespace hybridshard::service {

core::TokenBatch job_prompts(const JobConfig& job, int replica, int iteration) {
  const GenerationConfig& settings = job.generation;
  core::TokenBatch batch;
  if (!settings.prompts.empty()) {
    batch.rows = settings.prompts_per_train_replica;
    batch.cols = static_cast<std::int64_t>(settings.prompts.front().size());
    for (std::int64_t row = replica * batch.rows; row < (replica + 1) * batch.rows; ++row) {
      const auto& tokens = settings.prompts.at(static_cast<std::size_t>(row));
      batch.tokens.insert(batch.tokens.end(), tokens.begin(), tokens.end());
    }
    return batch;
  }
  batch.rows = settings.prompts_per_train_replica;
  batch.cols = settings.prompt_length;
  batch.tokens.resize(static_cast<std::size_t>(batch.rows * batch.cols));
  for (std::int64_t i = 0; i < batch.rows * batch.cols; ++i) {
    const std::uint64_t key = (std::uint64_t{job.model.seed} << 48) ^ (std::uint64_t(replica) << 32) ^
                              (std::uint64_t(iteration) << 24) ^ static_cast<std::uint64_t>(i);
    batch.tokens[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(core::mix64(key) % static_cast<std::uint64_t>(job.model.spec.vocab_size));
  }
  return batch;
}

ScheduleOptions schedule_options(const JobConfig& job, int rank) {
  ScheduleOptions options;
  options.iterations = job.schedule.iterations;
  options.policy = MemoryPolicy(job.memory);
  const int replica = job.train.coord(rank).dp_rank;
  options.prompts = [&job, replica](int iteration) { return job_prompts(job, replica, iteration); };
  options.sample_interval_seconds = job.metrics.sample_interval_seconds;
  return options;
}

}  // namespace hybridshard::service
