// Everything the launcher does with the job's events: keeps the job state (GET /status), the Prometheus metrics
// (GET /metrics) and the run record, and serves the endpoints. One Observer per job, in the launcher process (which
// links no torch_cuda: see docs/architecture.md).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "hybridshard/core/events.h"
#include "hybridshard/service/observe/http_server.h"
#include "hybridshard/service/observe/job_state.h"
#include "hybridshard/service/observe/metrics.h"
#include "hybridshard/service/observe/record.h"
#include "hybridshard/service/observe/response_cache.h"

namespace hybridshard::service {

struct MetricsConfig;

struct ObserverOptions {
  std::string listen;  // "" for no HTTP endpoint; else HOST:PORT (port 0 picks one)
  std::string record;  // "" for no run record
  JobStateLimits limits;
  HttpServerOptions http;  // http.listen is replaced by `listen`
  // How old an answer of /metrics or /status may be when events came since it was rendered: under a scrape load
  // each endpoint renders at most once per max_age, every other request gets the cached text. (At 100 ms the renders
  // of a ~230 KB /status alone slowed the quickstart's enter by ~5 % on 2 cores under wrk; at 1 s, nothing seen.)
  std::chrono::milliseconds max_age{1000};
  std::string version = hybridshard_version();
};

// The options a job's `metrics:` section asks for.
ObserverOptions observer_options(const MetricsConfig& metrics);

// Thread-safe: on_event() may be called from several threads (one reader per rank), the endpoints answer on the
// server's threads. Each event reaches the state, the metrics and the record in the order on_event() was called.
// The endpoints answer from caches (ResponseCache) rendered on their own threads at the serving priority.
class Observer : public core::EventSink {
 public:
  explicit Observer(ObserverOptions options);
  ~Observer() override;  // close()

  // One event, engine or launcher level (docs/record-format.md). A memory event without by_kind gets it filled in
  // from the rank's buffers. Throws core::Error, recording nothing, when the event is malformed.
  void on_event(const nlohmann::json& event);
  void on_event(const core::Event& event) override;
  // One line of a rank's event stream (JSON). Throws core::Error naming `source` when it is not a valid event.
  void on_line(std::string_view line, std::string_view source = "event stream");

  nlohmann::json status_json() const { return state_.status_json(); }
  std::string metrics_text() const { return metrics_.text(); }
  const JobState& state() const { return state_; }
  const Metrics& metrics() const { return metrics_; }

  int port() const;                 // 0 without an HTTP endpoint
  std::string url() const;          // "" without an HTTP endpoint
  std::string record_path() const;  // "" without a record
  std::uint64_t renders() const;    // renders of /metrics and /status so far (each request without one was cached)

  // Stops the HTTP server and closes (renames into place) the record. Idempotent; throws when the record cannot be
  // finished.
  void close();

 private:
  JobState state_;
  Metrics metrics_;
  std::unique_ptr<RecordWriter> record_;
  std::mutex order_mutex_;
  std::atomic<std::uint64_t> generation_{1};  // bumped by every event applied
  std::unique_ptr<ResponseCache> metrics_cache_;
  std::unique_ptr<ResponseCache> status_cache_;
  std::unique_ptr<HttpServer> server_;  // last: stopped (destroyed) before the caches and the state it reads
};

}  // namespace hybridshard::service
