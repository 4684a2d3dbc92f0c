// A real job, watched from outside (label integration):
//  - `hybridshard run` on the quickstart (run until Ctrl-C, then --linger), a real Prometheus scraping its /metrics
//    every second: GET /status shows 4 ranks with their buffers, the buffer bytes and phase durations of all 4 ranks
//    come back through Prometheus's HTTP API while the job runs, and after Ctrl-C Prometheus holds exactly the enter
//    counts of the record;
//  - scrape load: wrk (Debian package, at idle CPU priority) with 64 connections on /metrics and 64 on /status for
//    HYBRIDSHARD_LOAD_SECONDS (default 30, in 6 windows between 7 quiet ones) while a job runs: every request
//    answered (no socket errors, no non-2xx); the enter change per load window against the quiet windows around it
//    must stay under 5 % on a host of 8 or more cores, under 25 % on fewer (see the assertion).
//    HYBRIDSHARD_LOAD_JOB runs another job file (configs/single-gpu.yaml on the GPU host), HYBRIDSHARD_WRK names wrk.
// Skipped when prometheus or wrk is not installed.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "free_port.h"
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

  // A job that runs until it is stopped, so that Prometheus scrapes it while it holds its buffers.
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << quickstart_with({{"iterations", "1000000"}});
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--metrics-listen",
                         "127.0.0.1:" + std::to_string(metrics_port), "--record", record.string(), "--linger", "300"},
                        {}, dir / "launcher");

  // GET /status while the job runs: 4 ranks, each with its buffers.
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
  const auto status_deadline = Clock::now() + std::chrono::seconds(180);
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
  ASSERT_TRUE(four_ranks_with_buffers(document)) << document.dump(1) << launcher.out() << launcher.err();

  // Through Prometheus while the job runs: buffer bytes, enter counts and train durations of every rank (polled
  // until scraped, 90 s at most).
  const std::set<std::string> all = {"0", "1", "2", "3"};
  for (const std::string& promql :
       {std::string("sum by (rank) (hybridshard_buffer_bytes)"),
        std::string("sum by (rank) (hybridshard_phase_duration_seconds_count{phase=\"enter\"})"),
        std::string("sum by (rank) (hybridshard_phase_duration_seconds_sum{phase=\"train\"})")}) {
    std::set<std::string> seen;
    const auto deadline = Clock::now() + std::chrono::seconds(90);
    while (Clock::now() < deadline && seen != all && !launcher.poll()) {
      seen = ranks_with_positive_values(query(promql));
      if (seen != all) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    EXPECT_EQ(seen, all) << promql << "\nprometheus log:\n" << server.err() << server.out();
  }

  // Ctrl-C: the job stops at the next boundary, the endpoint stays (--linger) with the final figures.
  launcher.signal(SIGINT);
  ASSERT_TRUE(launcher.wait_for_output(
      [](const std::string& out) { return out.find("hybridshard: serving") != std::string::npos; },
      std::chrono::seconds(120)))
      << launcher.wait(std::chrono::seconds(1)).describe();
  EXPECT_NE(launcher.out().find("stopped by the operator"), std::string::npos) << launcher.out();

  // Every rank's enters, as the record counts them, reach Prometheus: no more, no less.
  std::map<std::string, int> recorded;
  {
    std::ifstream in(record.string() + ".partial");
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
      if (!event.is_discarded() && event.value("type", "") == "phase_end" && event.value("phase", "") == "enter") {
        ++recorded[std::to_string(event.value("rank", -1))];
      }
    }
  }
  ASSERT_EQ(recorded.size(), 4u);
  std::map<std::string, int> scraped;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && scraped != recorded) {
    scraped.clear();
    const nlohmann::json result = query("sum by (rank) (hybridshard_phase_duration_seconds_count{phase=\"enter\"})");
    for (const nlohmann::json& series : result.is_array() ? result : nlohmann::json::array()) {
      scraped[series["metric"].value("rank", "")] = std::stoi(series["value"][1].get<std::string>());
    }
    if (scraped != recorded) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_EQ(scraped, recorded);

  // A second Ctrl-C ends the linger; the record is closed (renamed into place).
  launcher.signal(SIGINT);
  const ChildResult result = launcher.wait(std::chrono::seconds(60));
  EXPECT_EQ(result.exit_code, 130) << result.describe();
  EXPECT_TRUE(fs::exists(record));
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
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

// The enter phase's duration (slowest rank) of each iteration that ended in [from, to] (epoch seconds), in ms.
std::vector<double> enter_milliseconds(const fs::path& record, double from, double to) {
  std::map<int, double> slowest;
  std::map<int, double> ended;
  std::ifstream in(record);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
    if (event.is_discarded() || event.value("type", "") != "phase_end" || event.value("phase", "") != "enter") continue;
    const int iteration = event.value("iteration", -1);
    slowest[iteration] = std::max(slowest[iteration], event.value("seconds", 0.0) * 1e3);
    ended[iteration] = std::max(ended[iteration], event.value("time", 0.0));
  }
  std::vector<double> values;
  for (const auto& [iteration, value] : slowest) {
    if (ended[iteration] >= from && ended[iteration] <= to) values.push_back(value);
  }
  return values;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// wrk at the lowest CPU priority (SCHED_IDLE): the load generator shares this machine's cores with the job, which a
// Prometheus server on another host would not; the load's cost to the job is what the server does (see
// docs/reliability.md for the figures with wrk at normal priority).
std::vector<std::string> idle_priority(std::vector<std::string> argv) {
  const std::string chrt = find_program({"/usr/bin/chrt", "/bin/chrt"});
  if (!chrt.empty()) argv.insert(argv.begin(), {chrt, "--idle", "0"});
  return argv;
}

// One job, watched in alternating windows: 7 quiet ones and between them 6 under load, each a sixth of `seconds` long
// (so the load lasts `seconds` in all, 64 connections each on /metrics and /status). Alternating spreads any drift
// of the machine over both kinds of window; then Ctrl-C (SIGINT: the job ends at the next boundary, exit 130).
TEST_F(LiveJobTest, scrape_load_on_metrics_and_status_is_answered_and_barely_changes_enter) {
  // HYBRIDSHARD_WRK: wrk elsewhere (the GPU machine carries it in .gpu-deps).
  const char* wrk_override = std::getenv("HYBRIDSHARD_WRK");
  const std::string wrk =
      wrk_override != nullptr ? std::string(wrk_override) : find_program({"/usr/bin/wrk", "/usr/local/bin/wrk"});
  if (wrk.empty()) GTEST_SKIP() << "wrk is not installed (Debian package wrk)";
  const char* seconds_text = std::getenv("HYBRIDSHARD_LOAD_SECONDS");
  const int seconds = seconds_text != nullptr && std::atoi(seconds_text) > 0 ? std::atoi(seconds_text) : 30;
  constexpr int kLoadWindows = 6;
  const int window = std::max(1, seconds / kLoadWindows);
  ScratchDir dir("live-load");
  const fs::path job = dir / "job.yaml";
  // HYBRIDSHARD_LOAD_JOB: another job file (relative to the source tree), e.g. configs/single-gpu.yaml on a GPU host.
  const char* job_override = std::getenv("HYBRIDSHARD_LOAD_JOB");
  std::ofstream(job) << job_with(job_override != nullptr ? job_override : "configs/quickstart.yaml",
                                 {{"iterations", "1000000"}});
  const fs::path record = dir / "run.jsonl";
  const int port = free_loopback_port();
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--metrics-listen",
                         "127.0.0.1:" + std::to_string(port), "--record", record.string()},
                        {}, dir / "launcher");
  ASSERT_TRUE(launcher.wait_for_output(
      [](const std::string& out) { return out.find("iter 2/1000000  exit") != std::string::npos; },
      std::chrono::seconds(180)))
      << launcher.wait(std::chrono::seconds(1)).describe();

  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  // HYBRIDSHARD_LOAD_PATHS="/metrics /healthz" (say) loads other paths, to tell their costs apart.
  std::vector<std::string> paths = {"/metrics", "/status"};
  if (const char* text = std::getenv("HYBRIDSHARD_LOAD_PATHS")) {
    std::istringstream words(text);
    paths.assign(std::istream_iterator<std::string>(words), std::istream_iterator<std::string>());
  }
  std::vector<std::pair<double, double>> quiet_windows;
  std::vector<std::pair<double, double>> load_windows;
  std::vector<WrkReport> reports;  // per load window: /metrics, then /status
  for (int load = 0; load <= kLoadWindows; ++load) {
    const double quiet_from = epoch_seconds();
    std::this_thread::sleep_for(std::chrono::seconds(window));
    quiet_windows.emplace_back(quiet_from, epoch_seconds());
    if (load == kLoadWindows) break;
    const double load_from = epoch_seconds();
    std::vector<std::unique_ptr<ChildProcess>> loads;
    for (const char* path : {"/metrics", "/status"}) {
      loads.push_back(std::make_unique<ChildProcess>(
          idle_priority(
              {wrk, "-t", "1", "-c", "64", "-d", std::to_string(window) + "s", "--timeout", "5s", base + path}),
          std::map<std::string, std::string>{}, dir / ("wrk" + std::to_string(load) + "-" + std::string(path + 1))));
    }
    for (auto& process : loads) {
      const ChildResult result = process->wait(std::chrono::seconds(window + 60));
      EXPECT_EQ(result.exit_code, 0) << result.describe();
      reports.push_back(parse_wrk(result.out));
    }
    load_windows.emplace_back(load_from, epoch_seconds());
  }
  ASSERT_FALSE(launcher.poll()) << "the job ended before the test did\n" << launcher.out() << launcher.err();
  launcher.signal(SIGINT);
  const ChildResult result = launcher.wait(std::chrono::seconds(120));
  EXPECT_EQ(result.exit_code, 130) << result.describe();

  long metrics_requests = 0;
  long status_requests = 0;
  for (std::size_t index = 0; index < reports.size(); ++index) {
    const WrkReport& report = reports[index];
    EXPECT_GT(report.requests, 0) << report.text;
    EXPECT_EQ(report.socket_errors, 0) << report.text;
    EXPECT_EQ(report.non_2xx, 0) << report.text;
    (index % paths.size() == 0 ? metrics_requests : status_requests) += report.requests;
  }
  auto enters_in = [&](const std::vector<std::pair<double, double>>& windows) {
    std::vector<double> values;
    for (const auto& [from, to] : windows) {
      const std::vector<double> part = enter_milliseconds(record, from, to);
      values.insert(values.end(), part.begin(), part.end());
    }
    return values;
  };
  const std::vector<double> quiet = enters_in(quiet_windows);
  const std::vector<double> loaded = enters_in(load_windows);
  ASSERT_GE(quiet.size(), 10u);
  ASSERT_GE(loaded.size(), 5u);
  // The change: each load window against the two quiet windows around it (the machine's own drift over the minute
  // cancels), the median over the load windows.
  std::vector<double> ratios;
  for (std::size_t index = 0; index < load_windows.size(); ++index) {
    const double around = median(enters_in({quiet_windows[index], quiet_windows[index + 1]}));
    const double during = median(enters_in({load_windows[index]}));
    if (around > 0 && during > 0) ratios.push_back(during / around);
  }
  ASSERT_EQ(ratios.size(), load_windows.size());
  double loaded_seconds = 0;
  for (const auto& [from, to] : load_windows) loaded_seconds += to - from;
  const double quiet_ms = median(quiet);
  const double loaded_ms = median(loaded);
  const double change = (median(ratios) - 1) * 100;
  std::string each;
  for (double ratio : ratios) {
    char text[32];
    std::snprintf(text, sizeof text, "%s%+.1f", each.empty() ? "" : " ", (ratio - 1) * 100);
    each += text;
  }
  std::printf(
      "load: %d x %d s, 64 connections each on /metrics (%ld requests, %.0f/s) and /status (%ld requests, %.0f/s); "
      "enter median %.2f ms quiet (%zu iterations in %d windows), %.2f ms under load (%zu iterations); change per "
      "load window against the quiet ones around it (%%): %s; median %+.1f%%\n",
      kLoadWindows, window, metrics_requests, metrics_requests / loaded_seconds, status_requests,
      status_requests / loaded_seconds, quiet_ms, quiet.size(), kLoadWindows + 1, loaded_ms, loaded.size(),
      each.c_str(), change);
  RecordProperty("enter_ms_quiet", std::to_string(quiet_ms));
  RecordProperty("enter_ms_loaded", std::to_string(loaded_ms));
  // The target is < 5 %. It is asserted where the load generator has cores of its own (8 or more: on the 16-core
  // H100 host, single-gpu.yaml read -0.4 % and +0.1 %). On the 2-vCPU CI machine wrk shares the job's cores and
  // quiet windows alone vary by about +-7 % (docs/reliability.md lists ten measurements): there 25 % is asserted, a
  // regression guard that the endpoint as first built (+81 %: a render per request) fails.
  const double bound = std::thread::hardware_concurrency() >= 8 ? 5.0 : 25.0;
  EXPECT_LT(change, bound) << "the scrape load slowed enter by more than " << bound << "% on "
                           << std::thread::hardware_concurrency() << " cores";
}

}  // namespace
}  // namespace hybridshard::testing
