// Prometheus metrics of a job, fed by the same events as JobState: one registry per job, `rank` as a label, base
// units. Every metric is listed in docs/metrics.md; per-buffer detail goes to the status endpoint, not to labels.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hybridshard/core/events.h"

namespace prometheus {
class Registry;
}

namespace hybridshard::service {

// The version build_info reports (the project's version).
std::string hybridshard_version();

// Buckets of hybridshard_phase_duration_seconds: 1 ms to 60 s.
const std::vector<double>& phase_duration_buckets();

class Metrics {
 public:
  explicit Metrics(const std::string& version = hybridshard_version());
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Applies one event (engine or launcher level). Throws core::Error, changing nothing, when it is malformed.
  // Thread-safe.
  void apply(const nlohmann::json& event);
  void apply(const core::Event& event);

  // The Prometheus text exposition format (0.0.4) of every metric. Thread-safe.
  std::string text() const;

  // The registry, for callers that add metrics of their own.
  std::shared_ptr<prometheus::Registry> registry() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hybridshard::service
