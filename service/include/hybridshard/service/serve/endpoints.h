// The HTTP endpoints over the jobs being watched: GET /metrics (every job; a `job` label on the series of named jobs),
// GET /status (one job: ?job=NAME, or the newest), GET /jobs (the list), GET /healthz. Answers come from caches
// (ResponseCache) rendered on their own threads at the serving priority.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hybridshard/service/observe/observed_job.h"
#include "hybridshard/service/serve/http_server.h"
#include "hybridshard/service/serve/metrics.h"
#include "hybridshard/service/serve/response_cache.h"

namespace hybridshard::service {

struct EndpointOptions {
  HttpServerOptions http;
  // How old an answer of /metrics or /status may be when events came since it was rendered: under a scrape load
  // each endpoint renders at most once per max_age, every other request gets the cached text. (At 100 ms the renders
  // of a ~230 KB /status alone slowed the quickstart's enter by ~5 % on 2 cores under wrk; at 1 s, nothing seen.)
  std::chrono::milliseconds max_age{1000};
  std::string version = hybridshard_version();
};

// The jobs the endpoints show, oldest first, and a counter that changes whenever any of them (or the list) changes.
struct WatchedJobs {
  std::function<std::vector<std::shared_ptr<const ObservedJob>>()> list;
  std::function<std::uint64_t()> generation;
  // Extra fields of a job's entry in GET /jobs ({"ended": ..., "instance": ...}); may be empty.
  std::function<nlohmann::json(const ObservedJob&)> describe;
};

class Endpoints {
 public:
  // Starts serving; throws core::Error naming the address when it cannot listen.
  Endpoints(EndpointOptions options, WatchedJobs jobs);
  ~Endpoints();  // stop()
  Endpoints(const Endpoints&) = delete;
  Endpoints& operator=(const Endpoints&) = delete;

  int port() const { return server_->port(); }
  std::string url() const { return server_->url(); }
  std::uint64_t renders() const;  // renders of /metrics and /status so far
  void stop();

 private:
  HttpResponse status(const HttpRequest& request);
  std::string jobs_json() const;

  EndpointOptions options_;
  WatchedJobs jobs_;
  std::unique_ptr<ResponseCache> metrics_cache_;
  mutable std::mutex status_mutex_;
  std::map<const ObservedJob*, std::shared_ptr<ResponseCache>> status_caches_;  // by job
  std::unique_ptr<HttpServer> server_;  // last: stopped (destroyed) before the caches and the jobs it reads
};

}  // namespace hybridshard::service
