#include "hybridshard/service/serve/metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "event_sequence.h"
#include "hybridshard/core/error.h"
#include "metrics_text.h"

namespace hybridshard::service {
namespace {

using testing::sample_value;
using testing::SyntheticJob;

// The fold and the metrics rendered from it, as the endpoint does.
class Metrics {
 public:
  explicit Metrics(std::string version = hybridshard_version()) : version_(std::move(version)) {}
  void apply(const nlohmann::json& event) { state_.apply(event); }
  void apply(const JobEvent& event) { state_.apply(event); }
  std::string text() const { return metrics_text({{"", &state_}}, version_); }

 private:
  JobState state_;
  std::string version_;
};

void apply_all(Metrics& metrics, const std::vector<nlohmann::json>& events) {
  for (const nlohmann::json& event : events) metrics.apply(event);
}

std::optional<double> value(const Metrics& metrics, const std::string& name,
                            const std::map<std::string, std::string>& labels = {}) {
  return sample_value(metrics.text(), name, labels);
}

TEST(MetricsTest, build_info_and_job_state_from_the_start) {
  Metrics metrics("1.2.3");
  EXPECT_EQ(value(metrics, "hybridshard_build_info", {{"version", "1.2.3"}}), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_job_state", {{"state", "starting"}}), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_job_state", {{"state", "running"}}), 0.0);
}

TEST(MetricsTest, every_rank_of_the_job_has_its_series_before_it_reports) {
  Metrics metrics;
  metrics.apply(testing::job_opening(SyntheticJob{})[0]);
  EXPECT_EQ(value(metrics, "hybridshard_world_size"), 2.0);
  EXPECT_EQ(value(metrics, "hybridshard_rank_up", {{"rank", "1"}}), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_rollout_check_failures_total", {{"rank", "1"}}), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_moved_bytes_total", {{"rank", "1"}, {"path", "device_to_host"}}), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_iteration", {{"rank", "1"}}), -1.0);
  EXPECT_EQ(value(metrics, "hybridshard_buffer_bytes", {{"rank", "1"}, {"kind", "kv_cache"}, {"residency", "cpu"}}),
            0.0);
}

TEST(MetricsTest, predicted_enter_from_the_job_event_when_it_says_one) {
  Metrics without;
  without.apply(job_event(2, nlohmann::json{{"strategy", "hybridshard"}}, 1.0));
  EXPECT_EQ(value(without, "hybridshard_predicted_enter_seconds"), std::nullopt);
  Metrics with;
  with.apply(job_event(2, nlohmann::json{{"predicted_enter_seconds", 0.0219}}, 1.0));
  EXPECT_EQ(value(with, "hybridshard_predicted_enter_seconds"), 0.0219);
}

TEST(MetricsTest, buffer_bytes_move_between_residencies_with_the_phases) {
  SyntheticJob job;
  Metrics metrics;
  apply_all(metrics, testing::job_opening(job));
  auto bytes = [&](const std::string& kind, const std::string& residency) {
    return value(metrics, "hybridshard_buffer_bytes", {{"rank", "0"}, {"kind", kind}, {"residency", residency}});
  };
  EXPECT_EQ(bytes("params", "gpu"), job.params_bytes);
  EXPECT_EQ(bytes("optimizer", "gpu"), 2 * job.params_bytes);
  EXPECT_EQ(bytes("inference_params", "none"), job.inference_bytes);
  EXPECT_EQ(bytes("inference_params", "gpu"), 0.0);

  std::vector<nlohmann::json> iteration = testing::job_iteration(job, 0);
  std::size_t rollout_begin = 0;
  while (!(iteration[rollout_begin]["type"] == "phase_begin" && iteration[rollout_begin]["phase"] == "rollout")) {
    ++rollout_begin;
  }
  apply_all(metrics, {iteration.begin(), iteration.begin() + static_cast<long>(rollout_begin) + 1});
  EXPECT_EQ(bytes("inference_params", "gpu"), job.inference_bytes);
  EXPECT_EQ(bytes("inference_params", "none"), 0.0);
  EXPECT_EQ(bytes("optimizer", "cpu"), 2 * job.params_bytes);
  EXPECT_EQ(bytes("optimizer", "gpu"), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_phase", {{"rank", "0"}, {"phase", "rollout"}}), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_phase", {{"rank", "0"}, {"phase", "enter"}}), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_job_state", {{"state", "running"}}), 1.0);

  apply_all(metrics, {iteration.begin() + static_cast<long>(rollout_begin) + 1, iteration.end()});
  EXPECT_EQ(bytes("inference_params", "gpu"), 0.0);
  EXPECT_EQ(bytes("optimizer", "gpu"), 2 * job.params_bytes);
  EXPECT_EQ(value(metrics, "hybridshard_phase", {{"rank", "0"}, {"phase", "rollout"}}), 0.0);
}

TEST(MetricsTest, transfers_phases_memory_and_checks) {
  SyntheticJob job;
  Metrics metrics;
  apply_all(metrics, testing::job_opening(job));
  apply_all(metrics, testing::job_iteration(job, 0));
  apply_all(metrics, testing::job_iteration(job, 1, /*check_ok=*/false));
  const std::map<std::string, std::string> rank1 = {{"rank", "1"}};
  EXPECT_EQ(value(metrics, "hybridshard_moved_bytes_total", {{"rank", "1"}, {"path", "network"}}),
            2 * job.network_bytes);
  EXPECT_EQ(value(metrics, "hybridshard_moved_bytes_total", {{"rank", "1"}, {"path", "host_to_device"}}),
            4 * job.params_bytes);
  EXPECT_EQ(value(metrics, "hybridshard_iteration", rank1), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_rank_up", rank1), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_rollout_check_failures_total", rank1), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_last_enter_seconds", rank1), 0.012);
  EXPECT_EQ(value(metrics, "hybridshard_last_exit_seconds", rank1), 0.004);
  EXPECT_EQ(value(metrics, "hybridshard_last_enter_network_bytes", rank1), job.network_bytes);
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_total_bytes", rank1), job.device_total);
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_tracked_bytes", rank1),
            7 * job.params_bytes + job.inference_bytes);
  EXPECT_EQ(value(metrics, "hybridshard_phase_duration_seconds_count", {{"rank", "1"}, {"phase", "enter"}}), 2.0);
  EXPECT_EQ(
      value(metrics, "hybridshard_phase_duration_seconds_bucket", {{"rank", "1"}, {"phase", "enter"}, {"le", "0.01"}}),
      0.0);
  EXPECT_EQ(
      value(metrics, "hybridshard_phase_duration_seconds_bucket", {{"rank", "1"}, {"phase", "enter"}, {"le", "0.025"}}),
      2.0);
  EXPECT_GT(*value(metrics, "hybridshard_last_event_timestamp_seconds", rank1), job.start);

  metrics.apply(rank_down_event(1, "127.0.0.1", "exited with status 1", "rollout", job.start + 60));
  metrics.apply(job_end_event(false, "rank 1 failed", 60, job.start + 61));
  EXPECT_EQ(value(metrics, "hybridshard_rank_up", rank1), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_job_state", {{"state", "failed"}}), 1.0);
  EXPECT_EQ(value(metrics, "hybridshard_job_state", {{"state", "running"}}), 0.0);
}

TEST(MetricsTest, cached_is_a_memory_kind_of_its_own_and_untracked_leaves_it_out) {
  SyntheticJob job;
  Metrics metrics;
  apply_all(metrics, testing::job_opening(job));
  const std::map<std::string, std::string> rank0 = {{"rank", "0"}};
  // Before any sample: every series there, at 0.
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_cached_bytes", rank0), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_untracked_bytes", rank0), 0.0);
  EXPECT_EQ(value(metrics, "hybridshard_buffer_bytes", {{"rank", "0"}, {"kind", "cached"}, {"residency", "none"}}),
            0.0);
  metrics.apply(testing::memory_event(job.start + 1, 0, 0, 10000, 20000, 4000, 5000, 300));
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_used_bytes", rank0), 10000.0);
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_tracked_bytes", rank0), 4000.0);
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_cached_bytes", rank0), 5000.0);
  EXPECT_EQ(value(metrics, "hybridshard_device_memory_untracked_bytes", rank0), 1000.0);
  EXPECT_EQ(value(metrics, "hybridshard_buffer_bytes", {{"rank", "0"}, {"kind", "cached"}, {"residency", "gpu"}}),
            5000.0);
  EXPECT_EQ(value(metrics, "hybridshard_buffer_bytes", {{"rank", "0"}, {"kind", "cached"}, {"residency", "cpu"}}),
            300.0);
}

TEST(MetricsTest, every_series_of_a_named_job_carries_its_job_label) {
  SyntheticJob job;
  JobState first;
  JobState second;
  for (const nlohmann::json& event : testing::job_opening(job)) first.apply(event), second.apply(event);
  for (const nlohmann::json& event : testing::job_iteration(job, 0)) first.apply(event);
  const std::string text = metrics_text({{"alpha", &first}, {"beta", &second}});
  EXPECT_EQ(sample_value(text, "hybridshard_iteration", {{"job", "alpha"}, {"rank", "1"}}), 0.0);
  EXPECT_EQ(sample_value(text, "hybridshard_iteration", {{"job", "beta"}, {"rank", "1"}}), -1.0);
  EXPECT_EQ(sample_value(text, "hybridshard_world_size", {{"job", "beta"}}), 2.0);
  std::istringstream lines(text);
  std::string line;
  int series = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#' || line.rfind("hybridshard_build_info", 0) == 0) continue;
    ++series;
    EXPECT_TRUE(line.find("job=\"alpha\"") != std::string::npos || line.find("job=\"beta\"") != std::string::npos)
        << line;
  }
  EXPECT_GT(series, 100);
}

TEST(MetricsTest, phase_duration_buckets_span_1ms_to_60s) {
  const std::vector<double>& buckets = phase_duration_buckets();
  ASSERT_FALSE(buckets.empty());
  EXPECT_DOUBLE_EQ(buckets.front(), 0.001);
  EXPECT_DOUBLE_EQ(buckets.back(), 60.0);
  EXPECT_TRUE(std::is_sorted(buckets.begin(), buckets.end()));
}

TEST(MetricsTest, malformed_event_is_refused) {
  Metrics metrics;
  nlohmann::json bad = testing::transfer_event(1.0, 0, 0, core::TransferPath::kNetwork, 5, 1, "x");
  bad["bytes"] = 1.5;
  EXPECT_THROW(metrics.apply(bad), core::Error);  // decode_event refuses it before the fold
  EXPECT_EQ(value(metrics, "hybridshard_moved_bytes_total", {{"rank", "0"}}), std::nullopt);
}

// promtool (Debian package prometheus) lints the exposition: it must have nothing to say.
TEST(MetricsTest, promtool_check_metrics_finds_nothing_to_say) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "promtool is not installed";
  SyntheticJob job;
  Metrics metrics;
  apply_all(metrics, testing::job_opening(job));
  apply_all(metrics, testing::job_iteration(job, 0));
  apply_all(metrics, testing::job_iteration(job, 1, false));
  metrics.apply(rank_down_event(0, "127.0.0.1", "exited", "", job.start + 60));
  metrics.apply(job_end_event(true, "", 60, job.start + 61));

  const std::string dir =
      std::filesystem::temp_directory_path() / ("hybridshard-promtool-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string input = dir + "/metrics.txt";
  const std::string output = dir + "/promtool.out";
  std::ofstream(input) << metrics.text();
  const std::string command = "promtool check metrics < " + input + " > " + output + " 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream said_file(output);
  std::string said((std::istreambuf_iterator<char>(said_file)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << said;
  EXPECT_EQ(said, "");
}

}  // namespace
}  // namespace hybridshard::service
