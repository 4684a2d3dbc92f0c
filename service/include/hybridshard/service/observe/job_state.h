// The live state of a job, built from its events: what GET /status returns (docs/record-format.md, "Status").
#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hybridshard/core/events.h"

namespace hybridshard::service {

struct JobStateLimits {
  std::size_t memory_samples_per_rank = 600;  // newest kept
  std::size_t phases_per_rank = 200;          // newest phase intervals kept
};

// Thread-safe: apply() from the event stream, status_json() from the HTTP server's threads.
class JobState {
 public:
  explicit JobState(JobStateLimits limits = {});

  // Applies one event (engine or launcher level). Throws core::Error, changing nothing, when it is malformed.
  void apply(const nlohmann::json& event);
  void apply(const core::Event& event);

  // The status document. "time" is the time of the newest event applied (so a replay gives the same document).
  nlohmann::json status_json() const;

  // Bytes resident on the device per buffer kind for `rank` ({"params": 123, ...}; every kind present, 0 if none):
  // the by_kind of a memory sample, for samples that come without one.
  nlohmann::json gpu_bytes_by_kind(int rank) const;

  std::string state() const;  // "starting", "running", "finished", "failed"

 private:
  struct Buffer {
    std::string name;
    std::string kind;
    std::string dtype;
    std::int64_t bytes = 0;
    std::string residency = "none";
    double since = 0;
    std::string shape;
  };
  struct Phase {
    int iteration = -1;
    std::string phase;
    double begin = 0;
    double end = -1;  // < 0: still running
  };
  struct Rank {
    int rank = 0;
    std::string host;
    long pid = 0;
    bool up = false;
    std::string device;
    std::string down_reason;
    std::string phase;
    double phase_since = 0;
    int iteration = -1;
    std::int64_t device_used = 0;
    std::int64_t device_total = 0;
    std::int64_t tracked = 0;
    double last_enter_seconds = 0;
    double last_exit_seconds = 0;
    std::int64_t last_enter_network_bytes = 0;
    std::int64_t enter_network_bytes = 0;  // of the enter in progress
    bool in_enter = false;
    std::int64_t check_failures = 0;
    nlohmann::json last_check;    // null until a check ran
    std::vector<Buffer> buffers;  // in creation order
    std::deque<nlohmann::json> memory;
    std::deque<Phase> phases;
  };

  Rank& rank_locked(int rank);
  Buffer& buffer_locked(Rank& rank, const std::string& name);
  nlohmann::json by_kind_locked(const Rank& rank) const;
  void apply_locked(const nlohmann::json& event);

  JobStateLimits limits_;
  mutable std::mutex mutex_;
  nlohmann::json job_;  // the job event's fields, null until it arrives
  std::string state_ = "starting";
  std::string message_;
  double time_ = 0;
  double started_ = 0;
  std::map<int, Rank> ranks_;
};

}  // namespace hybridshard::service
