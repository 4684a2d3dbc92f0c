// The event vocabulary of a job: what ranks report (engine events, rank_up) and what the launcher or `serve` adds
// (job, rank_down, job_end), as one typed value. Every consumer (the fold, the record, the launcher's progress line)
// reads this type; JSON exists only on the wire and in the record (event_json.h, docs/record-format.md).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "hybridshard/core/events.h"
#include "hybridshard/service/events/limits.h"

namespace hybridshard::service {

enum class JobEventType : std::uint8_t {
  kEngine,     // a core::Event of a rank (buffer_created, residency, transfer, phase_begin, memory, check, ...)
  kJob,        // the job's description; opens the job (world_size known from here on)
  kRankUp,     // a rank process is up: host, pid, device
  kRankDown,   // a rank process ended or stopped answering: reason, the phase it was last seen in
  kJobEnd,     // the job ended: ok, message, seconds
  kHeartbeat,  // a rank is alive (the event stream only: never folded, never recorded)
};

// Bytes resident on the device per buffer kind ("params" -> 123, ...): a memory sample's by_kind.
using BytesByKind = std::map<std::string, std::int64_t>;

// A job event is kJob or kJobEnd and has no rank; every other event belongs to the rank `engine.rank`.
struct JobEvent {
  JobEventType type = JobEventType::kEngine;
  // time, rank and iteration of every event; the fields of the engine event when type is kEngine.
  core::Event engine;

  // kJob: the size of the job and its description (model, train, rollout, backend, strategy, iterations, job_file),
  // shown as it came, never interpreted beyond world_size.
  int world_size = 0;
  nlohmann::json description = nlohmann::json::object();

  // kRankUp and kRankDown.
  std::string host;
  long pid = 0;        // kRankUp
  std::string device;  // kRankUp
  std::string reason;  // kRankDown
  std::string phase;   // kRankDown: the phase the rank was last seen in ("" when unknown)

  // kJobEnd.
  bool ok = true;
  std::string message;
  double seconds = 0;

  // Memory samples: gpu bytes per buffer kind, when known (the observer fills it in from the fold before recording).
  std::optional<BytesByKind> by_kind;

  double time() const { return engine.time; }
  int rank() const { return engine.rank; }
  int iteration() const { return engine.iteration; }
  bool has_rank() const { return type != JobEventType::kJob && type != JobEventType::kJobEnd; }
  bool is_engine(core::EventType engine_type) const {
    return type == JobEventType::kEngine && engine.type == engine_type;
  }
};

// The events the launcher (or serve) makes. `description` of the job event: see job_description() in launch.
JobEvent engine_event(const core::Event& event);
JobEvent job_event(int world_size, nlohmann::json description, double time);
JobEvent rank_up_event(int rank, const std::string& host, long pid, const std::string& device, double time);
JobEvent rank_down_event(int rank, const std::string& host, const std::string& reason, const std::string& phase,
                         double time, int iteration = -1);
JobEvent job_end_event(bool ok, const std::string& message, double seconds, double time);
JobEvent heartbeat_event(int rank, double time);

}  // namespace hybridshard::service
