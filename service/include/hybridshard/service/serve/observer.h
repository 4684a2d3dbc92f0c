// One job watched and served: its fold and record (ObservedJob) behind the HTTP endpoints (Endpoints). What
// `hybridshard run` uses for its one job (no job name, no `job` label), in the launcher process (which links no
// torch_cuda: see docs/architecture.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "hybridshard/core/events.h"
#include "hybridshard/service/events/job_event.h"
#include "hybridshard/service/observe/observed_job.h"
#include "hybridshard/service/serve/endpoints.h"

namespace hybridshard::service {

struct MetricsConfig;

struct ObserverOptions {
  std::string listen;            // "" for no HTTP endpoint; else HOST:PORT (port 0 picks one)
  std::string record;            // "" for no run record
  RecordOptions record_options;  // replace an existing record (`run --force`)
  JobStateLimits limits;
  HttpServerOptions http;                   // http.listen is replaced by `listen`
  std::chrono::milliseconds max_age{1000};  // see EndpointOptions
  std::string version = hybridshard_version();
};

// The options a job's `metrics:` section asks for.
ObserverOptions observer_options(const MetricsConfig& metrics);

// Thread-safe: events may come from several threads; each reaches the state and the record in the order of the calls.
class Observer : public core::EventSink {
 public:
  explicit Observer(ObserverOptions options);
  ~Observer() override;  // close()

  // One decoded event (the path of the event stream). Throws core::Error, recording nothing, when it contradicts
  // the job.
  std::optional<PhaseRound> on_event(const JobEvent& event);
  // One event as JSON: decoded, then as above. Throws core::Error, recording nothing, when malformed.
  void on_event(const nlohmann::json& event);
  void on_event(const core::Event& event) override;
  // One line of JSON. Throws core::Error naming `source` when it is not a valid event.
  void on_line(std::string_view line, std::string_view source = "event stream");

  ObservedJob& job() { return *job_; }
  nlohmann::json status_json() const { return job_->state().status_json(); }
  std::string metrics_text() const;
  const JobState& state() const { return job_->state(); }

  int port() const;                 // 0 without an HTTP endpoint
  std::string url() const;          // "" without an HTTP endpoint
  std::string record_path() const;  // "" without a record
  std::uint64_t renders() const;    // renders of /metrics and /status so far (each request without one was cached)

  // Stops the HTTP server and closes (renames into place) the record. Idempotent; throws when the record cannot be
  // finished.
  void close();

 private:
  std::string version_;
  std::shared_ptr<ObservedJob> job_;
  std::unique_ptr<Endpoints> endpoints_;  // last: stopped before the job it reads
};

}  // namespace hybridshard::service
