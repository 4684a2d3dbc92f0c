#include "hybridshard/service/serve/observer.h"

#include <cstdio>

#include "hybridshard/core/error.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {

ObserverOptions observer_options(const MetricsConfig& metrics) {
  ObserverOptions options;
  options.listen = metrics.listen;
  options.record = metrics.record;
  options.http.priority = serve_priority_from_name(metrics.serve_priority);
  options.http.max_requests_per_second = metrics.max_requests_per_second;
  options.http.listen_what = "metrics.listen / --metrics-listen";
  return options;
}

Observer::Observer(ObserverOptions options)
    : version_(options.version),
      job_(std::make_shared<ObservedJob>("", options.limits, options.record, options.record_options)) {
  if (!options.listen.empty()) {
    EndpointOptions endpoint_options;
    endpoint_options.http = options.http;
    endpoint_options.http.listen = options.listen;
    endpoint_options.max_age = options.max_age;
    endpoint_options.version = options.version;
    WatchedJobs jobs;
    jobs.list = [job = job_] { return std::vector<std::shared_ptr<const ObservedJob>>{job}; };
    jobs.generation = [job = job_.get()] { return job->generation(); };
    endpoints_ = std::make_unique<Endpoints>(std::move(endpoint_options), std::move(jobs));
  }
}

Observer::~Observer() {
  try {
    close();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hybridshard: observer: %s\n", error.what());
  }
}

std::optional<PhaseRound> Observer::on_event(const JobEvent& event) { return job_->apply(event); }

void Observer::on_event(const nlohmann::json& event) { job_->apply(decode_event(event)); }

void Observer::on_event(const core::Event& event) { job_->apply(engine_event(event)); }

void Observer::on_line(std::string_view line, std::string_view source) {
  try {
    job_->apply(decode_event_line(line));
  } catch (const core::Error& error) {
    HS_THROW(core::Error, std::string(source) + ": " + error_message(error));
  }
}

std::string Observer::metrics_text() const { return service::metrics_text({{"", &job_->state()}}, version_); }

int Observer::port() const { return endpoints_ ? endpoints_->port() : 0; }

std::string Observer::url() const { return endpoints_ ? endpoints_->url() : ""; }

std::uint64_t Observer::renders() const { return endpoints_ ? endpoints_->renders() : 0; }

std::string Observer::record_path() const { return job_->record_path(); }

void Observer::close() {
  if (endpoints_) endpoints_->stop();
  job_->close();
}

}  // namespace hybridshard::service
