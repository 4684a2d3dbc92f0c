#include "hybridshard/service/serve/endpoints.h"

#include <algorithm>
#include <thread>

#include "hybridshard/core/error.h"

namespace hybridshard::service {
namespace {

std::string dump(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HttpResponse json_response(int status, std::string body) {
  return HttpResponse{status, "application/json", std::move(body)};
}

}  // namespace

Endpoints::Endpoints(EndpointOptions options, WatchedJobs jobs) : options_(std::move(options)), jobs_(std::move(jobs)) {
  // Rendered on the cache's own thread (response_cache.h): normal stack size, the serving priority.
  metrics_cache_ = std::make_unique<ResponseCache>(
      [this] {
        std::vector<std::shared_ptr<const ObservedJob>> listed = jobs_.list();
        std::vector<MetricsJob> named;
        for (const auto& job : listed) named.push_back(MetricsJob{job->name(), &job->state()});
        return metrics_text(named, options_.version);
      },
      options_.max_age, options_.http.priority);
  std::map<std::string, HttpHandler> routes;
  routes["/metrics"] = [this](const HttpRequest&) {
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", *metrics_cache_->get(jobs_.generation())};
  };
  routes["/status"] = [this](const HttpRequest& request) { return status(request); };
  routes["/jobs"] = [this](const HttpRequest&) { return json_response(200, jobs_json()); };
  routes["/healthz"] = [](const HttpRequest&) { return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"}; };
  server_ = std::make_unique<HttpServer>(options_.http, std::move(routes));
}

Endpoints::~Endpoints() { stop(); }

void Endpoints::stop() {
  if (server_) server_->stop();
}

std::uint64_t Endpoints::renders() const {
  std::uint64_t renders = metrics_cache_->renders();
  std::lock_guard lock(status_mutex_);
  for (const auto& [name, cache] : status_caches_) renders += cache->renders();
  return renders;
}

std::string Endpoints::jobs_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& job : jobs_.list()) {
    nlohmann::json entry = jobs_.describe ? jobs_.describe(*job) : nlohmann::json::object();
    entry["name"] = job->name();
    job->state().read([&](const JobFold& fold) {
      entry["state"] = fold.state;
      entry["world_size"] = fold.world_size;
      entry["started"] = fold.started;
      entry["time"] = fold.time;
    });
    list.push_back(std::move(entry));
  }
  return dump(nlohmann::json{{"jobs", std::move(list)}});
}

HttpResponse Endpoints::status(const HttpRequest& request) {
  const std::string wanted = query_parameter(request.query, "job");
  const std::vector<std::shared_ptr<const ObservedJob>> jobs = jobs_.list();
  std::shared_ptr<const ObservedJob> job;
  if (wanted.empty()) {
    if (!jobs.empty()) job = jobs.back();
  } else {
    for (const auto& candidate : jobs) {
      if (candidate->name() == wanted) job = candidate;
    }
  }
  if (!job) {
    return json_response(404,
                         dump(nlohmann::json{{"error", wanted.empty() ? "no job yet" : "no job named '" + wanted + "'"},
                                             {"jobs", nlohmann::json::parse(jobs_json())["jobs"]}}));
  }
  // A changes-since answer is small (about one poll interval's events) and each reader has its own cursor, so it is
  // rendered for the request, not cached; the whole document, the expensive one, stays behind the cache.
  const std::string since = query_parameter(request.query, "since");
  if (!since.empty()) {
    std::uint64_t epoch = 0;
    std::uint64_t sequence = 0;
    if (!parse_status_cursor(since, &epoch, &sequence)) {
      return json_response(400, dump(nlohmann::json{{"error", "since=" + since +
                                                                  ": not a cursor (expected <epoch>-<sequence>, the "
                                                                  "\"cursor\" of a status document)"}}));
    }
    // Built and rendered on a thread of its own: civetweb's workers run on small fixed stacks (100 KiB in Debian's
    // build), which the recursive JSON render outgrew under AddressSanitizer (observer_test).
    std::string body;
    std::thread([&] { body = dump(job->state().status_json_since(since)); }).join();
    return json_response(200, std::move(body));
  }
  std::shared_ptr<ResponseCache> cache;
  {
    std::lock_guard lock(status_mutex_);
    // Caches of jobs that are gone go with them.
    std::erase_if(status_caches_, [&](const auto& entry) {
      return std::none_of(jobs.begin(), jobs.end(), [&](const auto& listed) { return listed.get() == entry.first; });
    });
    std::shared_ptr<ResponseCache>& slot = status_caches_[job.get()];
    if (!slot) {
      slot = std::make_shared<ResponseCache>([job] { return dump(job->state().status_json()); }, options_.max_age);
    }
    cache = slot;
  }
  return json_response(200, *cache->get(job->generation()));
}

}  // namespace hybridshard::service
