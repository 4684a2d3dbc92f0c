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
#include "hybridshard/service/observe/observer.h"
#include "test_http_client.h"

#ifndef HYBRIDSHARD_ALERTS_FILE
#error "HYBRIDSHARD_ALERTS_FILE must name configs/alerts.yml"
#endif

namespace hybridshard::service {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string find_prometheus() {
  if (const char* path = std::getenv("HYBRIDSHARD_PROMETHEUS"); path != nullptr && *path != '\0') return path;
  for (const char* candidate : {"/usr/bin/prometheus", "/usr/local/bin/prometheus"}) {
    if (::access(candidate, X_OK) == 0) return candidate;
  }
  return "";
}

// A port that was free a moment ago (Prometheus cannot be told to pick one and report it).
int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    throw std::runtime_error("bind 127.0.0.1:0 failed");
  }
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string url_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// A Prometheus server process; the destructor stops it (SIGTERM, then SIGKILL after 10 s) and reaps it.
class PrometheusServer {
 public:
  PrometheusServer(const std::string& binary, const fs::path& dir, int target_port) : dir_(dir) {
    port_ = free_loopback_port();
    const fs::path config = dir / "prometheus.yml";
    std::ofstream(config) << "global:\n"
                          << "  scrape_interval: 1s\n"
                          << "  scrape_timeout: 1s\n"
                          << "  evaluation_interval: 1s\n"
                          << "rule_files:\n"
                          << "  - " << HYBRIDSHARD_ALERTS_FILE << "\n"
                          << "scrape_configs:\n"
                          << "  - job_name: hybridshard\n"
                          << "    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    const std::string config_arg = "--config.file=" + config.string();
    const std::string storage_arg = "--storage.tsdb.path=" + (dir / "tsdb").string();
    const std::string listen_arg = "--web.listen-address=127.0.0.1:" + std::to_string(port_);
    const std::string log = (dir / "prometheus.log").string();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      FILE* out = std::freopen(log.c_str(), "w", stdout);
      if (out != nullptr) ::dup2(::fileno(stdout), STDERR_FILENO);
      ::execl(binary.c_str(), binary.c_str(), config_arg.c_str(), storage_arg.c_str(), listen_arg.c_str(),
              "--log.level=warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }

  ~PrometheusServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  bool exited() {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }

  std::string log() const {
    std::ifstream in(dir_ / "prometheus.log");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  // The result vector of an instant query, or null when the API is not answering yet.
  nlohmann::json query(const std::string& promql) const {
    testing::RawHttpResponse response;
    try {
      response = testing::raw_http(
          port_, "GET /api/v1/query?query=" + url_encode(promql) + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    } catch (const std::exception&) {
      return nullptr;
    }
    if (response.status != 200) return nullptr;
    nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") return nullptr;
    return body["data"]["result"];
  }

  int port() const { return port_; }

 private:
  fs::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

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
  wait_for(server, "count(hybridshard_buffer_bytes)", equals(2 * 7 * 3));  // 2 ranks x 7 kinds x 3 residencies
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
  observer.on_event(rank_down_event_json(1, "127.0.0.1", "killed by signal 9", "rollout", job.start + 60));
  observer.on_event(job_end_event_json(false, "rank 1 on 127.0.0.1 died in rollout", 60, job.start + 61));
  wait_for(server, "hybridshard_rank_up{rank=\"1\"}", equals(0));
  wait_for(server, "hybridshard_job_state{state=\"failed\"}", equals(1));
}

}  // namespace
}  // namespace hybridshard::service
