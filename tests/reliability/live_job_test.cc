// A real job, watched from outside (label integration):
//  - `hybridshard run` on the quickstart with --linger, a real Prometheus scraping its /metrics every second: the
//    buffer bytes and phase durations of all 4 ranks come back through Prometheus's HTTP API, and GET /status shows
//    4 ranks with their buffers;
//  - scrape load: wrk (Debian package) with many connections on /metrics and on /status for
//    HYBRIDSHARD_LOAD_SECONDS (default 10; docs/reliability.md has the 30 s figures) while a job runs: every request
//    answered (no socket errors, no non-2xx), and the job's enter time with and without the load is printed (not
//    asserted: this is a 2-core machine, see docs/reliability.md).
// Skipped when prometheus or wrk is not installed.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "child_process.h"
#include "test_http_client.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string find_program(std::initializer_list<const char*> candidates) {
  for (const char* candidate : candidates) {
    if (::access(candidate, X_OK) == 0) return candidate;
  }
  return "";
}

std::string url_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', hex[c >> 4], hex[c & 15]};
    }
  }
  return out;
}

// The ranks (label values) of an instant query's result, each with a value > 0.
std::set<std::string> ranks_with_positive_values(const nlohmann::json& result) {
  std::set<std::string> ranks;
  if (!result.is_array()) return ranks;
  for (const nlohmann::json& series : result) {
    const double value = std::stod(series["value"][1].get<std::string>());
    if (value > 0) ranks.insert(series["metric"].value("rank", ""));
  }
  return ranks;
}

class LiveJobTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { become_child_subreaper(); }
};

TEST_F(LiveJobTest, prometheus_and_status_see_all_four_ranks_of_a_real_job) {
  const std::string prometheus = find_program({"/usr/bin/prometheus", "/usr/local/bin/prometheus"});
  if (prometheus.empty()) GTEST_SKIP() << "prometheus is not installed (Debian package prometheus)";
  ScratchDir dir("live-prometheus");
  const int metrics_port = free_loopback_port();
  const int prometheus_port = free_loopback_port();
  std::ofstream(dir / "prometheus.yml") << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                                        << "scrape_configs:\n  - job_name: hybridshard\n    static_configs:\n"
                                        << "      - targets: ['127.0.0.1:" << metrics_port << "']\n";
  ChildProcess server({prometheus, "--config.file=" + (dir / "prometheus.yml").string(),
                       "--storage.tsdb.path=" + (dir / "tsdb").string(),
                       "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port), "--log.level=warn"},
                      {}, dir / "prometheus");

  // Prometheus first (it takes seconds to start), so that it scrapes the whole job.
  auto query = [&](const std::string& promql) -> nlohmann::json {
    try {
      const RawHttpResponse response = raw_http(
          prometheus_port, "GET /api/v1/query?query=" + url_encode(promql) + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
      if (response.status != 200) return nullptr;
      const nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
      if (body.is_discarded() || body.value("status", "") != "success") return nullptr;
      return body["data"]["result"];
    } catch (const std::exception&) {
      return nullptr;
    }
  };
  const auto ready_deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < ready_deadline && query("up").is_null() && !server.poll()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_FALSE(query("up").is_null()) << "prometheus did not answer\n" << server.err() << server.out();

  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << quickstart_with({{"iterations", "10"}});
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--metrics-listen",
                         "127.0.0.1:" + std::to_string(metrics_port), "--linger", "120"},
                        {}, dir / "launcher");

  // GET /status while the job runs: 4 ranks, each with its buffers (at the end they are all freed).
  nlohmann::json document;
  auto four_ranks_with_buffers = [](const nlohmann::json& status) {
    if (!status.is_object() || !status.contains("ranks") || status["ranks"].size() != 4) return false;
    for (const nlohmann::json& rank : status["ranks"]) {
      std::int64_t bytes = 0;
      for (const nlohmann::json& buffer : rank.value("buffers", nlohmann::json::array())) {
        bytes += buffer.value("bytes", std::int64_t{0});
      }
      if (bytes <= 0) return false;
    }
    return true;
  };
  const auto status_deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < status_deadline && !launcher.poll()) {
    try {
      const RawHttpResponse status = http_get(metrics_port, "/status");
      if (status.status == 200) document = nlohmann::json::parse(status.body, nullptr, false);
    } catch (const std::exception&) {
      // not listening yet
    }
    if (four_ranks_with_buffers(document)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(four_ranks_with_buffers(document)) << document.dump(1);

  ASSERT_TRUE(launcher.wait_for_output(
      [](const std::string& out) { return out.find("hybridshard: serving") != std::string::npos; },
      std::chrono::seconds(120)))
      << launcher.wait(std::chrono::seconds(1)).describe();
  ASSERT_NE(launcher.out().find("hybridshard: done"), std::string::npos) << launcher.out() << launcher.err();

  // Through Prometheus: buffer bytes (the most each rank held: at the end every buffer is freed) and phase durations
  // of every rank (polled until scraped, 60 s at most).
  const std::set<std::string> all = {"0", "1", "2", "3"};
  for (const std::string& promql :
       {std::string("sum by (rank) (max_over_time(hybridshard_buffer_bytes[10m]))"),
        std::string("sum by (rank) (hybridshard_phase_duration_seconds_count{phase=\"enter\"})"),
        std::string("sum by (rank) (hybridshard_phase_duration_seconds_sum{phase=\"train\"})")}) {
    std::set<std::string> seen;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline && seen != all) {
      seen = ranks_with_positive_values(query(promql));
      if (seen != all) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    EXPECT_EQ(seen, all) << promql << "\nprometheus log:\n" << server.err() << server.out();
  }
  // Once scraped after the end: every rank's 10 enters, no more, no less.
  nlohmann::json enters;
  auto ten_each = [](const nlohmann::json& result) {
    if (!result.is_array() || result.size() != 4) return false;
    for (const nlohmann::json& series : result) {
      if (series["value"][1].get<std::string>() != "10") return false;
    }
    return true;
  };
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline &&
         !ten_each(enters = query("hybridshard_phase_duration_seconds_count{phase=\"enter\"}"))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_TRUE(ten_each(enters)) << enters.dump(1);
}

// wrk's summary: requests, and the failure lines it prints only when there were failures.
struct WrkReport {
  long requests = 0;
  long socket_errors = 0;
  long non_2xx = 0;
  std::string text;
};

WrkReport parse_wrk(const std::string& text) {
  WrkReport report;
  report.text = text;
  std::smatch match;
  if (std::regex_search(text, match, std::regex(R"((\d+) requests in)"))) report.requests = std::stol(match[1]);
  if (std::regex_search(text, match,
                        std::regex(R"(Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+))"))) {
    report.socket_errors = std::stol(match[1]) + std::stol(match[2]) + std::stol(match[3]) + std::stol(match[4]);
  }
  if (std::regex_search(text, match, std::regex(R"(Non-2xx or 3xx responses: (\d+))"))) {
    report.non_2xx = std::stol(match[1]);
  }
  return report;
}

double epoch_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The enter phase's duration (slowest rank) of each iteration in the record that ended in [from, to] (epoch
// seconds), in milliseconds.
std::vector<double> enter_milliseconds(const fs::path& record, double from, double to) {
  std::map<int, double> slowest;
  std::ifstream in(record);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
    if (event.is_discarded() || event.value("type", "") != "phase_end" || event.value("phase", "") != "enter") continue;
    if (event.value("time", 0.0) < from || event.value("time", 0.0) > to) continue;
    double& value = slowest[event.value("iteration", -1)];
    value = std::max(value, event.value("seconds", 0.0) * 1e3);
  }
  std::vector<double> values;
  for (const auto& [iteration, value] : slowest) {
    if (iteration > 0) values.push_back(value);  // the first enter warms up
  }
  return values;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Runs the quickstart for `iterations` with its endpoint on `port`; with `load` set, starts wrk on /metrics and
// /status once the first iteration is done. Returns the enter times; fills `reports` with wrk's.
std::vector<double> run_job(const ScratchDir& dir, const std::string& name, int iterations, int port,
                            const std::string& wrk, int load_seconds, std::vector<WrkReport>* reports) {
  const fs::path job = dir / (name + ".yaml");
  std::ofstream(job) << quickstart_with({{"iterations", std::to_string(iterations)}});
  const fs::path record = dir / (name + ".jsonl");
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--metrics-listen",
                         "127.0.0.1:" + std::to_string(port), "--record", record.string()},
                        {}, dir / name);
  std::vector<std::unique_ptr<ChildProcess>> loads;
  double from = 0;
  double to = 1e300;
  if (reports != nullptr) {
    EXPECT_TRUE(launcher.wait_for_output(
        [&](const std::string& out) {
          return out.find("iter 1/" + std::to_string(iterations) + "  exit") != std::string::npos;
        },
        std::chrono::seconds(120)));
    from = epoch_seconds();
    const std::string base = "http://127.0.0.1:" + std::to_string(port);
    for (const char* path : {"/metrics", "/status"}) {
      loads.push_back(std::make_unique<ChildProcess>(
          std::vector<std::string>{wrk, "-t", "1", "-c", "64", "-d", std::to_string(load_seconds) + "s", "--timeout",
                                   "5s", base + path},
          std::map<std::string, std::string>{}, dir / (name + "-wrk" + (path + 1))));
    }
    for (auto& load : loads) {
      const ChildResult result = load->wait(std::chrono::seconds(load_seconds + 60));
      EXPECT_EQ(result.exit_code, 0) << result.describe();
      reports->push_back(parse_wrk(result.out));
    }
    to = epoch_seconds();
    // The job must still be running for the load to have met it.
    EXPECT_FALSE(launcher.poll()) << "the job ended before the load did; give it more iterations";
  }
  const ChildResult result = launcher.wait(std::chrono::seconds(600));
  EXPECT_EQ(result.exit_code, 0) << result.describe();
  return enter_milliseconds(record, from, to);
}

TEST_F(LiveJobTest, scrape_load_on_metrics_and_status_is_answered_while_a_job_runs) {
  const std::string wrk = find_program({"/usr/bin/wrk", "/usr/local/bin/wrk"});
  if (wrk.empty()) GTEST_SKIP() << "wrk is not installed (Debian package wrk)";
  const char* seconds_text = std::getenv("HYBRIDSHARD_LOAD_SECONDS");
  const int load_seconds = seconds_text != nullptr && std::atoi(seconds_text) > 0 ? std::atoi(seconds_text) : 10;
  // Enough iterations to outlast the load (about 0.25 s each here, more under load).
  const int iterations = 20 + load_seconds * 6;
  ScratchDir dir("live-load");

  const std::vector<double> quiet = run_job(dir, "quiet", iterations, free_loopback_port(), wrk, 0, nullptr);
  std::vector<WrkReport> reports;
  const std::vector<double> loaded =
      run_job(dir, "loaded", iterations, free_loopback_port(), wrk, load_seconds, &reports);

  ASSERT_EQ(reports.size(), 2u);
  for (const WrkReport& report : reports) {
    EXPECT_GT(report.requests, 0) << report.text;
    EXPECT_EQ(report.socket_errors, 0) << report.text;
    EXPECT_EQ(report.non_2xx, 0) << report.text;
  }
  const double quiet_ms = median(quiet);
  const double loaded_ms = median(loaded);
  std::printf(
      "load: %d s, 64 connections each on /metrics (%ld requests) and /status (%ld requests); enter median "
      "%.2f ms quiet, %.2f ms under load (%+.1f%%)\n",
      load_seconds, reports[0].requests, reports[1].requests, quiet_ms, loaded_ms,
      quiet_ms > 0 ? (loaded_ms / quiet_ms - 1) * 100 : 0.0);
  RecordProperty("enter_ms_quiet", std::to_string(quiet_ms));
  RecordProperty("enter_ms_loaded", std::to_string(loaded_ms));
  EXPECT_FALSE(quiet.empty());
  EXPECT_FALSE(loaded.empty());
}

}  // namespace
}  // namespace hybridshard::testing
