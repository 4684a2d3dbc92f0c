// JobConfig::validate: where each problem is placed, which checks a scope runs, and the checks of the plain settings
// (memory, schedule, runtime, metrics).
#include "job_validator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>

#include "config_text.h"
#include "hybridshard/service/config/units.h"
#include "hybridshard/service/events/host_port.h"

namespace hybridshard::service {
namespace detail {

void ProblemList::error(const std::string& key, std::string message) {
  for (const Diagnostic& existing : diagnostics_) {
    if (existing.key == key && existing.message == message) return;
  }
  Diagnostic diagnostic{job_.file, 0, 0, key, std::move(message)};
  // Where the key was written; else its section; else no place.
  std::string lookup = key;
  while (!lookup.empty()) {
    auto it = job_.positions.find(lookup);
    if (it != job_.positions.end()) {
      diagnostic.line = it->second.line;
      diagnostic.column = it->second.column;
      if (lookup == key && !it->second.key.empty()) diagnostic.key = it->second.key;
      break;
    }
    const std::size_t dot = lookup.rfind('.');
    lookup = dot == std::string::npos ? std::string() : lookup.substr(0, dot);
  }
  diagnostics_.push_back(std::move(diagnostic));
}

bool ProblemList::positive(const std::string& key, std::int64_t value) {
  if (value >= 1) return true;
  error(key, "must be at least 1, got " + std::to_string(value));
  return false;
}

namespace {

// Lower bounds of the rates and intervals (docs/configuration.md).
constexpr std::chrono::milliseconds kMinTimeout{1000};
constexpr double kMinSampleIntervalSeconds = 0.01;
constexpr double kMinRequestsPerSecond = 1.0;

std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

void check_memory(const MemoryConfig& memory, ProblemList& problems) {
  if (memory.bucket_bytes < 4096) {
    problems.error("memory.bucket_bytes",
                   format_bytes(memory.bucket_bytes) + " is too small; use at least 4KiB (256MiB is the default)");
  }
}

void check_schedule(const ScheduleConfig& schedule, ProblemList& problems) {
  problems.positive("schedule.iterations", schedule.iterations);
  if (!(schedule.learning_rate > 0.0) || !std::isfinite(schedule.learning_rate)) {
    problems.error("schedule.learning_rate", "must be a positive number");
  }
}

void check_runtime(const RuntimeConfig& runtime, ProblemList& problems) {
  std::set<int> seen;
  for (int device : runtime.devices) {
    if (device < 0) problems.error("runtime.devices", "device " + std::to_string(device) + " is negative");
    if (!seen.insert(device).second) {
      problems.error("runtime.devices", "device " + std::to_string(device) + " is listed twice; one rank per device");
    }
  }
  if (runtime.master_addr.empty()) problems.error("runtime.master_addr", "must name a host, e.g. 127.0.0.1");
  if (runtime.master_port < 0 || runtime.master_port > 65535) {
    problems.error("runtime.master_port", std::to_string(runtime.master_port) + " is not a port (0-65535)");
  }
  if (runtime.timeout.count() <= 0) {
    problems.error("runtime.timeout", "must be positive, e.g. 30s");
  } else if (runtime.timeout < kMinTimeout) {
    problems.error("runtime.timeout", std::to_string(runtime.timeout.count()) +
                                          "ms is too short: ranks report every 0.5 s and a rank silent this long is "
                                          "declared dead; use at least 1s (30s is the default)");
  }
  if (runtime.cpu_device_memory <= 0) problems.error("runtime.cpu_device_memory", "must be positive, e.g. 1GiB");
  if (runtime.device_memory < 0) {
    problems.error("runtime.device_memory", "must not be negative (0: ask the device)");
  }
}

void check_metrics(const MetricsConfig& metrics, ProblemList& problems) {
  if (!metrics.listen.empty()) {
    if (const std::string problem = host_port_problem(metrics.listen); !problem.empty()) {
      problems.error("metrics.listen",
                     "'" + metrics.listen + "' is not HOST:PORT: " + problem + "; \"\" for no endpoint");
    }
  }
  if (!(metrics.sample_interval_seconds > 0.0) || !std::isfinite(metrics.sample_interval_seconds)) {
    problems.error("metrics.sample_interval_seconds", "must be a positive number of seconds");
  } else if (metrics.sample_interval_seconds < kMinSampleIntervalSeconds) {
    problems.error("metrics.sample_interval_seconds",
                   number_text(metrics.sample_interval_seconds) +
                       " s is too short: each sample is an event on every rank; use at least 0.01 (0.5 is the "
                       "default)");
  }
  // 0 is "no limit"; below 1 a second every request waits its turn for seconds and most are answered 503.
  if (metrics.max_requests_per_second > 0.0 && metrics.max_requests_per_second < kMinRequestsPerSecond) {
    problems.error("metrics.max_requests_per_second",
                   number_text(metrics.max_requests_per_second) +
                       " is too low: requests beyond it wait their turn and one more than 8 s away is refused, so "
                       "Prometheus and the dashboard would be refused; use at least 1 (50 is the default) or 0 for "
                       "no limit");
  }
}

}  // namespace
}  // namespace detail

std::vector<Diagnostic> JobConfig::validate(ValidationScope scope) const {
  detail::ProblemList problems(*this);
  detail::check_layouts(*this, scope, problems);
  detail::check_memory(memory, problems);
  if (scope == ValidationScope::kRun) {
    detail::check_batch(*this, problems);
    detail::check_schedule(schedule, problems);
    detail::check_runtime(runtime, problems);
    detail::check_metrics(metrics, problems);
  }
  return problems.take();
}

}  // namespace hybridshard::service
