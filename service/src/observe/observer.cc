#include "hybridshard/service/observe/observer.h"

#include <cstdio>

#include "hybridshard/core/error.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/observe/event_json.h"

namespace hybridshard::service {

ObserverOptions observer_options(const MetricsConfig& metrics) {
  ObserverOptions options;
  options.listen = metrics.listen;
  options.record = metrics.record;
  options.http.priority = serve_priority_from_name(metrics.serve_priority);
  options.http.max_requests_per_second = metrics.max_requests_per_second;
  return options;
}

Observer::Observer(ObserverOptions options) : state_(options.limits), metrics_(options.version) {
  if (!options.record.empty()) record_ = std::make_unique<RecordWriter>(options.record);
  if (!options.listen.empty()) {
    options.http.listen = options.listen;
    // Rendered on the caches' own threads (response_cache.h): normal stack size, the serving priority.
    metrics_cache_ =
        std::make_unique<ResponseCache>([this] { return metrics_.text(); }, options.max_age, options.http.priority);
    status_cache_ = std::make_unique<ResponseCache>(
        [this] { return state_.status_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); },
        options.max_age);
    std::map<std::string, HttpHandler> routes;
    routes["/metrics"] = [this] {
      return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", *metrics_cache_->get(generation_.load())};
    };
    routes["/status"] = [this] {
      return HttpResponse{200, "application/json", *status_cache_->get(generation_.load())};
    };
    routes["/healthz"] = [] { return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"}; };
    server_ = std::make_unique<HttpServer>(options.http, std::move(routes));
  }
}

Observer::~Observer() {
  try {
    close();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hybridshard: observer: %s\n", error.what());
  }
}

void Observer::on_event(const nlohmann::json& event) {
  validate_event_json(event);
  std::lock_guard<std::mutex> lock(order_mutex_);
  const nlohmann::json* applied = &event;
  nlohmann::json enriched;
  if (event["type"] == core::event_type_name(core::EventType::kMemorySample) && !event.contains("by_kind")) {
    enriched = event;
    enriched["by_kind"] = state_.gpu_bytes_by_kind(event["rank"].get<int>());
    applied = &enriched;
  }
  state_.apply(*applied);
  metrics_.apply(*applied);
  generation_.fetch_add(1);
  if (record_) record_->write(*applied);
}

void Observer::on_event(const core::Event& event) { on_event(event_to_json(event)); }

void Observer::on_line(std::string_view line, std::string_view source) {
  try {
    on_event(parse_event_line(line));
  } catch (const core::Error& error) {
    HS_THROW(core::Error, std::string(source) + ": " + error_message(error));
  }
}

int Observer::port() const { return server_ ? server_->port() : 0; }

std::string Observer::url() const { return server_ ? server_->url() : ""; }

std::uint64_t Observer::renders() const {
  return (metrics_cache_ ? metrics_cache_->renders() : 0) + (status_cache_ ? status_cache_->renders() : 0);
}

std::string Observer::record_path() const { return record_ ? record_->path() : ""; }

void Observer::close() {
  if (server_) server_->stop();
  if (record_) record_->close();
}

}  // namespace hybridshard::service
