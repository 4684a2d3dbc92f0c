// Prometheus metrics of jobs, rendered from their folded state (JobState): `rank` as a label, base units, and a
// `job` label on every series of a named job (`hybridshard serve`; the one job of `hybridshard run` has no name and
// no label). Every metric is listed in docs/metrics.md; per-buffer detail goes to the status endpoint, not to labels.
#pragma once

#include <string>
#include <vector>

#include "hybridshard/service/observe/job_state.h"

namespace hybridshard::service {

// The version build_info reports (the project's version).
std::string hybridshard_version();

struct MetricsJob {
  std::string name;  // the job label's value; "" for no job label
  const JobState* state = nullptr;
};

// The Prometheus text exposition format (0.0.4): build_info, then every series of every job.
std::string metrics_text(const std::vector<MetricsJob>& jobs, const std::string& version = hybridshard_version());

}  // namespace hybridshard::service
