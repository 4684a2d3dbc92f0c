// `hybridshard serve` end to end: two 4-rank jobs started the way torchrun and Slurm start them (their environment
// variables, one hybridshard-rank process per rank, rank 0 hosting the store) report to one serve at the same time;
// a real Prometheus, with configs/alerts.yml loaded, scrapes serve and sees every series of both jobs under their
// `job` label; serve keeps both jobs (finished) with their records, and GET /status?job=NAME answers for each.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "free_port.h"
#include "hybridshard/service/observe/record.h"
#include "prometheus_server.h"
#include "test_http_client.h"

namespace hybridshard::testing {
namespace {

using Clock = std::chrono::steady_clock;
const std::filesystem::path kBin = HYBRIDSHARD_BIN_DIR;

// The quickstart with one iteration: the whole test stays well under a minute on 2 cores.
std::filesystem::path write_job(const std::filesystem::path& dir) {
  std::string yaml = read_text_file(std::filesystem::path(HYBRIDSHARD_SOURCE_DIR) / "configs" / "quickstart.yaml");
  const std::string from = "iterations: 3";
  const auto at = yaml.find(from);
  if (at != std::string::npos) yaml.replace(at, from.size(), "iterations: 1");
  const std::filesystem::path path = dir / "serve-job.yaml";
  std::ofstream(path) << yaml;
  return path;
}

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("hybridshard-serve-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "records");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The ranks of one job, as `launcher` ("torchrun" or "slurm") starts them.
  std::vector<std::unique_ptr<ChildProcess>> start_job(const std::string& launcher, const std::string& job_name,
                                                       const std::string& serve_address,
                                                       const std::filesystem::path& job_file) {
    const int master_port = free_loopback_port();
    std::vector<std::unique_ptr<ChildProcess>> ranks;
    for (int rank = 0; rank < 4; ++rank) {
      std::map<std::string, std::string> environment = {
          {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(master_port)},
          {"HYBRIDSHARD_SERVE", serve_address}, {"HYBRIDSHARD_JOB", job_name},
          {"HYBRIDSHARD_EVENTS", ""},           {"HYBRIDSHARD_LAUNCHER", ""}};
      if (launcher == "torchrun") {
        environment.insert({{"RANK", std::to_string(rank)},
                            {"WORLD_SIZE", "4"},
                            {"LOCAL_RANK", std::to_string(rank)},
                            {"LOCAL_WORLD_SIZE", "4"},
                            {"TORCHELASTIC_RUN_ID", "serve-test-" + std::to_string(::getpid())}});
      } else {
        environment.insert({{"RANK", ""},
                            {"WORLD_SIZE", ""},
                            {"SLURM_PROCID", std::to_string(rank)},
                            {"SLURM_NTASKS", "4"},
                            {"SLURM_LOCALID", std::to_string(rank)},
                            {"SLURM_JOB_ID", std::to_string(::getpid())},
                            {"SLURM_STEP_ID", "0"}});
      }
      ranks.push_back(std::make_unique<ChildProcess>(
          std::vector<std::string>{(kBin / "hybridshard-rank").string(), "--job", job_file.string()}, environment,
          dir_ / (launcher + "-rank" + std::to_string(rank))));
    }
    return ranks;
  }

  std::filesystem::path dir_;
};

TEST_F(ServeTest, torchrun_and_slurm_jobs_report_to_one_serve_scraped_by_prometheus) {
  const std::string prometheus = find_prometheus();
  if (prometheus.empty()) GTEST_SKIP() << "prometheus is not installed (Debian package prometheus)";

  ChildProcess serve({(kBin / "hybridshard").string(), "serve", "--listen", "127.0.0.1:0", "--events", "127.0.0.1:0",
                      "--record", (dir_ / "records").string(), "--retention", "600"},
                     {}, dir_ / "serve");
  std::smatch match;
  const std::regex banner(R"(metrics http://127\.0\.0\.1:(\d+)/metrics[\s\S]*HYBRIDSHARD_SERVE=(\S+))");
  ASSERT_TRUE(serve.wait_for_output([&](const std::string& out) { return std::regex_search(out, banner); },
                                    std::chrono::seconds(20)))
      << serve.out() << serve.err();
  const std::string out = serve.out();
  ASSERT_TRUE(std::regex_search(out, match, banner));
  const int http_port = std::stoi(match[1].str());
  const std::string serve_address = match[2].str();

  PrometheusServer scraper(prometheus, dir_, http_port, /*honor_labels=*/true);
  const std::filesystem::path job_file = write_job(dir_);
  auto torchrun = start_job("torchrun", "torchrun-job", serve_address, job_file);
  auto slurm = start_job("slurm", "slurm-job", serve_address, job_file);
  for (auto* job : {&torchrun, &slurm}) {
    for (auto& rank : *job) {
      const ChildResult result = rank->wait(std::chrono::seconds(120));
      EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
      EXPECT_EQ(result.err.find("without reporting"), std::string::npos) << result.err;  // serve was reachable
    }
  }

  // serve: both jobs finished, listed, each with a complete record.
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  nlohmann::json jobs;
  auto finished = [&] {
    jobs = nlohmann::json::parse(http_get(http_port, "/jobs").body, nullptr, false);
    if (jobs.is_discarded() || jobs["jobs"].size() != 2) return false;
    for (const nlohmann::json& job : jobs["jobs"]) {
      if (job["state"] != "finished") return false;
    }
    return true;
  };
  while (!finished() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(finished()) << jobs.dump(1) << serve.err();
  for (const nlohmann::json& job : jobs["jobs"]) {
    EXPECT_EQ(job["world_size"], 4);
    service::RecordReader reader = service::RecordReader::open(job["record"].get<std::string>());
    EXPECT_GT(reader.read_all().size(), 50u);
    EXPECT_TRUE(reader.complete()) << job.dump();
  }
  for (const char* name : {"torchrun-job", "slurm-job"}) {
    const RawHttpResponse status = http_get(http_port, std::string("/status?job=") + name);
    ASSERT_EQ(status.status, 200) << status.body;
    const nlohmann::json document = nlohmann::json::parse(status.body);
    EXPECT_EQ(document["state"], "finished");
    EXPECT_EQ(document["ranks"].size(), 4u);
    EXPECT_EQ(document["job"]["iterations"], 1);
    for (const nlohmann::json& rank : document["ranks"]) EXPECT_GT(rank["last_enter_network_bytes"], 0) << name;
  }
  EXPECT_EQ(http_get(http_port, "/status?job=nobody").status, 404);

  // Prometheus: both jobs' series under their job label, and the shipped rules loaded and evaluating.
  const auto until = Clock::now() + std::chrono::seconds(30);
  auto value = [&](const std::string& promql) -> double {
    const nlohmann::json result = scraper.query(promql);
    return result.is_array() && result.size() == 1 ? std::stod(result[0]["value"][1].get<std::string>()) : -1;
  };
  const std::string both = R"(count(hybridshard_job_state{job=~"torchrun-job|slurm-job",state="finished"} == 1))";
  while (value(both) != 2 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_EQ(value(both), 2) << scraper.log();
  EXPECT_EQ(value(R"(count(hybridshard_iteration{job="slurm-job"} == 0))"), 4);
  EXPECT_EQ(value(R"(count(hybridshard_last_enter_network_bytes{job="torchrun-job"} > 0))"), 4);
  const nlohmann::json rules = scraper.api("/api/v1/rules");
  ASSERT_TRUE(rules.is_object()) << scraper.log();
  int loaded = 0;
  for (const nlohmann::json& group : rules["groups"]) {
    for (const nlohmann::json& rule : group["rules"]) {
      ++loaded;
      EXPECT_NE(rule.value("health", ""), "err") << rule.dump();
    }
  }
  EXPECT_GE(loaded, 8);
  // No rank stays down while its job runs: the rank-down alert never fires (it may be pending for the moment between a
  // rank's exit and its job's end).
  EXPECT_EQ(value(R"(count(ALERTS{alertname="HybridshardRankDown",alertstate="firing"}))"), -1);

  serve.signal(SIGTERM);
  const ChildResult ended = serve.wait(std::chrono::seconds(20));
  EXPECT_EQ(ended.exit_code, 0) << ended.err;
}

}  // namespace
}  // namespace hybridshard::testing
