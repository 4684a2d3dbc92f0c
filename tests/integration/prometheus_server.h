// A real Prometheus server (Debian's package prometheus) for the integration tests: scrapes one target every second
// with configs/alerts.yml loaded, answers queries through its HTTP API, and is stopped by its destructor.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "free_port.h"
#include "test_http_client.h"

#ifndef HYBRIDSHARD_ALERTS_FILE
#error "HYBRIDSHARD_ALERTS_FILE must name configs/alerts.yml"
#endif

namespace hybridshard::testing {

namespace fs = std::filesystem;

inline std::string find_prometheus() {
  if (const char* path = std::getenv("HYBRIDSHARD_PROMETHEUS"); path != nullptr && *path != '\0') return path;
  for (const char* candidate : {"/usr/bin/prometheus", "/usr/local/bin/prometheus"}) {
    if (::access(candidate, X_OK) == 0) return candidate;
  }
  return "";
}

// A Prometheus server process; the destructor stops it (SIGTERM, then SIGKILL after 10 s) and reaps it.
class PrometheusServer {
 public:
  // `honor_labels`: keep the target's own `job` label (`hybridshard serve` labels every series with its job).
  PrometheusServer(const std::string& binary, const fs::path& dir, int target_port, bool honor_labels = false)
      : dir_(dir) {
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
                          << "    honor_labels: " << (honor_labels ? "true" : "false") << "\n"
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
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
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
    nlohmann::json data = api("/api/v1/query?query=" + url_encode(promql));
    return data.is_null() ? data : data["result"];
  }

  // The "data" of a GET of the HTTP API (e.g. "/api/v1/rules"), or null when it does not answer with success.
  nlohmann::json api(const std::string& path_and_query) const {
    RawHttpResponse response;
    try {
      response = raw_http(port_, "GET " + path_and_query + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    } catch (const std::exception&) {
      return nullptr;
    }
    if (response.status != 200) return nullptr;
    nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") return nullptr;
    return body["data"];
  }

  int port() const { return port_; }

 private:
  fs::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace hybridshard::testing
