// A real Prometheus server scrapes an Observer's endpoint, fed with a synthetic but realistic event sequence, and the
// series are read back through Prometheus's HTTP API. Prometheus also loads configs/alerts.yml and fires the rollout
// check alert when a check fails. The server is always killed at the end.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "event_sequence.h"
#include "hybridshard/service/serve/observer.h"
#include "prometheus_server.h"
#include "test_http_client.h"

#ifndef HYBRIDSHARD_ALERTS_FILE
#error "HYBRIDSHARD_ALERTS_FILE must name configs/alerts.yml"
#endif

namespace hybridshard::service {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::find_prometheus;
using testing::PrometheusServer;

class PrometheusScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = find_prometheus();
    if (binary_.empty()) GTEST_SKIP() << "prometheus is not installed (Debian package prometheus)";
    dir_ = fs::temp_directory_path() / ("hybridshard-prometheus-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Polls `promql` until `accept` holds for its result or 60 s pass; fails the test with the log otherwise.
  nlohmann::json wait_for(PrometheusServer& server, const std::string& promql,
                          const std::function<bool(const nlohmann::json&)>& accept) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    nlohmann::json result;
    while (Clock::now() < deadline) {
      if (server.exited()) {
        ADD_FAILURE() << "prometheus exited early:\n" << server.log();
        return nullptr;
      }
      result = server.query(promql);
      if (!result.is_null() && accept(result)) return result;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    ADD_FAILURE() << "timed out waiting for " << promql << "; last result " << result.dump() << "\nprometheus log:\n"
                  << server.log();
    return nullptr;
  }

  static double value_of(const nlohmann::json& result) { return std::stod(result[0]["value"][1].get<std::string>()); }
  static auto equals(double expected) {
    return [expected](const nlohmann::json& result) { return result.size() == 1 && value_of(result) == expected; };
  }

  std::string binary_;
  fs::path dir_;
};

TEST_F(PrometheusScrapeTest, prometheus_scrapes_the_observer_and_answers_with_the_series) {
  testing::SyntheticJob job;
  ObserverOptions options;
  options.listen = "127.0.0.1:0";
  Observer observer(options);
  for (const nlohmann::json& event : testing::job_opening(job)) observer.on_event(event);
  for (const nlohmann::json& event : testing::job_iteration(job, 0)) observer.on_event(event);

  PrometheusServer server(binary_, dir_, observer.port());

  // The scrape works and every metric family is there.
  wait_for(server, "up{job=\"hybridshard\"}", equals(1));
  wait_for(server, "hybridshard_build_info", [](const nlohmann::json& result) {
    return result.size() == 1 && result[0]["metric"]["version"] == hybridshard_version();
  });
  wait_for(server, "hybridshard_moved_bytes_total{rank=\"1\",path=\"network\"}", equals(job.network_bytes));
  wait_for(server, "hybridshard_buffer_bytes{rank=\"0\",kind=\"params\",residency=\"gpu\"}", equals(job.params_bytes));
  wait_for(server, "count(hybridshard_buffer_bytes)",
           equals(2 * 8 * 3));  // 2 ranks x 8 kinds (7 + cached) x 3 residencies
  wait_for(server, "hybridshard_phase_duration_seconds_count{rank=\"0\",phase=\"enter\"}", equals(1));
  wait_for(server, "hybridshard_rank_up", [](const nlohmann::json& result) {
    return result.size() == 2 && value_of(result) == 1 && std::stod(result[1]["value"][1].get<std::string>()) == 1;
  });
  // The documented headroom query.
  wait_for(server,
           "min by (rank) (1 - hybridshard_device_memory_used_bytes / hybridshard_device_memory_total_bytes)"
           " > 0.99",
           [](const nlohmann::json& result) { return result.size() == 2; });

  // The job goes on: the next iteration (with a failed rollout check) shows up in the next scrapes.
  for (const nlohmann::json& event : testing::job_iteration(job, 1, /*check_ok=*/false)) observer.on_event(event);
  wait_for(server, "hybridshard_iteration{rank=\"1\"}", equals(1));
  wait_for(server, "hybridshard_moved_bytes_total{rank=\"1\",path=\"network\"}", equals(2 * job.network_bytes));
  wait_for(server, "hybridshard_rollout_check_failures_total{rank=\"0\"}", equals(1));
  // The alert rules loaded from configs/alerts.yml fire on it.
  wait_for(server, "ALERTS{alertname=\"HybridshardRolloutCheckFailed\",alertstate=\"firing\"}",
           [](const nlohmann::json& result) { return result.size() == 2; });

  // A rank goes down and the job fails: rank_up and job_state say so.
  observer.on_event(rank_down_event(1, "127.0.0.1", "killed by signal 9", "rollout", job.start + 60));
  observer.on_event(job_end_event(false, "rank 1 on 127.0.0.1 died in rollout", 60, job.start + 61));
  wait_for(server, "hybridshard_rank_up{rank=\"1\"}", equals(0));
  wait_for(server, "hybridshard_job_state{state=\"failed\"}", equals(1));
}

}  // namespace
}  // namespace hybridshard::service
