#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "detail/measure.h"
#include "hybridshard/service/bench/bench.h"

#if defined(HYBRIDSHARD_TEST_WITH_JSON)
#include <nlohmann/json.hpp>
#endif

namespace hybridshard::service::bench {
namespace {

using detail::RankResult;
using detail::Series;

Series series(std::vector<double> seconds, std::int64_t bytes, std::int64_t wrong = 0) {
  Series s;
  s.seconds = std::move(seconds);
  s.bytes = bytes;
  s.wrong = wrong;
  s.checked = true;
  return s;
}

// Two ranks of a 2-rank layout with both strategies, the free exit policy and `release` after it ("": both).
BenchConfig two_rank_config(const std::string& release = "driver") {
  BenchOptions options;
  options.world = 2;
  options.tp = 2;
  options.rollout_tp = 1;
  options.exit_policy = "free";
  options.release_on_exit = release;
  BenchConfig config = resolve_bench_options(options);
  return config;
}

std::vector<RankResult> two_ranks() {
  std::vector<RankResult> ranks(2);
  for (int r = 0; r < 2; ++r) {
    RankResult& rank = ranks[static_cast<std::size_t>(r)];
    rank.shard_bytes = 1'000'000;
    rank.device_description = "cpu";
    // Rank 1 is slower in iteration 0, rank 0 in iteration 1: the slowest per iteration is 4 ms then 6 ms.
    rank.phases[{"enter", "hybridshard", "free/driver"}] = series(
        r == 0 ? std::vector{0.002, 0.006} : std::vector{0.004, 0.001}, r == 0 ? 500'000 : 400'000, r == 1 ? 3 : 0);
    rank.phases[{"enter", "seed", "free/driver"}] = series({0.050, 0.050}, 2'000'000);
    rank.phases[{"exit", "hybridshard", "free/driver"}] = series({0.001, 0.001}, 0);
    rank.phases[{"exit", "seed", "free/driver"}] = series({0.010, 0.010}, 0);
    rank.phases[{"batch.pre", "-", "-"}] = series({0.001, 0.001}, 4096);
    rank.phases[{"batch.post", "-", "-"}] = series({0.001, 0.001}, 8192);
    rank.bounds[{"d2d.shard", "", ""}] = series({0.004, 0.004}, 1'000'000);
    rank.bounds[{"d2d.received.hybridshard", "", ""}] = series({0.001, 0.001}, 500'000);
  }
  return ranks;
}

TEST(BenchReportTest, time_is_the_mean_of_the_slowest_rank_per_iteration) {
  const BenchReport report = detail::combine_ranks(two_rank_config(), two_ranks());
  ASSERT_FALSE(report.rows.empty());
  const PhaseRow& enter = report.rows.front();
  EXPECT_EQ(enter.phase, "enter");
  EXPECT_EQ(enter.strategy, "hybridshard");
  EXPECT_DOUBLE_EQ(enter.time_us, 5000.0);  // (4 ms + 6 ms) / 2
  EXPECT_EQ(enter.bytes, 500'000);          // the largest of any rank
  EXPECT_EQ(enter.wrong, 3);                // summed over ranks
}

TEST(BenchReportTest, bandwidths_are_bytes_over_time_in_1e9_and_bus_factor_n_minus_1_over_n) {
  const BenchReport report = detail::combine_ranks(two_rank_config(), two_ranks());
  const PhaseRow& enter = report.rows.front();
  EXPECT_DOUBLE_EQ(enter.algbw_gbps, 500'000 / 0.005 / 1e9);
  EXPECT_DOUBLE_EQ(enter.busbw_gbps, enter.algbw_gbps * 0.5);
}

TEST(BenchReportTest, rows_come_in_phase_order_with_both_strategies) {
  const BenchReport report = detail::combine_ranks(two_rank_config(), two_ranks());
  std::vector<std::string> seen;
  for (const PhaseRow& row : report.rows) seen.push_back(row.phase + "/" + row.strategy + "/" + row.policy);
  EXPECT_EQ(seen, (std::vector<std::string>{"enter/hybridshard/free", "enter/seed/free", "exit/hybridshard/free",
                                            "exit/seed/free", "batch.pre/-/-", "batch.post/-/-"}));
  ASSERT_EQ(report.bounds.size(), 2u);
  EXPECT_EQ(report.bounds[0].name, "d2d.shard");
  EXPECT_EQ(report.bounds[1].name, "d2d.received.hybridshard");
}

TEST(BenchReportTest, each_release_gets_its_rows_with_the_driver_figure_beside_the_tracked_one) {
  const BenchConfig config = two_rank_config("");  // releases: driver, then cache (the default)
  ASSERT_EQ(config.releases.size(), 2u);
  std::vector<RankResult> ranks(2);
  for (RankResult& rank : ranks) {
    rank.phases[{"enter", "hybridshard", "free/driver"}] = series({0.004}, 500'000);
    rank.phases[{"enter", "hybridshard", "free/cache"}] = series({0.002}, 500'000);
    detail::Series driver = series({0.003}, 0);
    driver.driver_bytes = 4096;  // a page the driver still counts
    rank.phases[{"exit", "hybridshard", "free/driver"}] = driver;
    detail::Series cache = series({0.001}, 0);
    cache.driver_bytes = 1'000'000;  // the shard, cached
    rank.phases[{"exit", "hybridshard", "free/cache"}] = cache;
  }
  const BenchReport report = detail::combine_ranks(config, ranks);
  std::vector<std::string> seen;
  for (const PhaseRow& row : report.rows) seen.push_back(row.phase + "/" + row.policy + "/" + row.release);
  EXPECT_EQ(seen,
            (std::vector<std::string>{"enter/free/driver", "enter/free/cache", "exit/free/driver", "exit/free/cache"}));
  EXPECT_EQ(report.rows[3].driver_bytes, 1'000'000);
  bool saw_driver_ratio = false;
  for (const RatioRow& ratio : report.ratios) {
    if (ratio.name.find("exit(free,driver)") == std::string::npos) continue;
    saw_driver_ratio = true;
    EXPECT_EQ(ratio.value, 4096.0);
    EXPECT_TRUE(ratio.met);  // within one 2 MiB block
  }
  EXPECT_TRUE(saw_driver_ratio);
  std::ostringstream table;
  print_bench_report(report, table);
  EXPECT_NE(table.str().find("driver(B)"), std::string::npos) << table.str();
  EXPECT_NE(table.str().find("release"), std::string::npos) << table.str();
}

TEST(BenchReportTest, ratios_state_value_target_and_whether_met) {
  const BenchReport report = detail::combine_ranks(two_rank_config(), two_ranks());
  bool saw_speedup = false;
  bool saw_enter_vs_copy = false;
  for (const RatioRow& ratio : report.ratios) {
    if (ratio.name.find("seed/hybridshard") != std::string::npos) {
      saw_speedup = true;
      EXPECT_DOUBLE_EQ(ratio.value, (50.0 + 10.0) / (5.0 + 1.0));
      EXPECT_EQ(ratio.op, ">=");
      EXPECT_TRUE(ratio.met);
    }
    if (ratio.name.find("d2d copy of the shard") != std::string::npos) {
      saw_enter_vs_copy = true;
      EXPECT_DOUBLE_EQ(ratio.value, 5.0 / 4.0);
      EXPECT_TRUE(ratio.met);  // <= 1.5
    }
  }
  EXPECT_TRUE(saw_speedup);
  EXPECT_TRUE(saw_enter_vs_copy);
}

TEST(BenchReportTest, a_missed_target_reads_NO) {
  std::vector<RankResult> ranks = two_ranks();
  for (RankResult& rank : ranks) rank.phases[{"enter", "hybridshard", "free/driver"}] = series({0.040, 0.040}, 500'000);
  const BenchReport report = detail::combine_ranks(two_rank_config(), ranks);
  std::ostringstream table;
  print_bench_report(report, table);
  EXPECT_NE(table.str().find("NO"), std::string::npos) << table.str();
}

TEST(BenchReportTest, table_has_a_row_per_phase_and_the_wrong_total) {
  const BenchReport report = detail::combine_ranks(two_rank_config(), two_ranks());
  std::ostringstream table;
  print_bench_report(report, table);
  const std::string text = table.str();
  for (const char* expected : {"# phase: enter", "# phase: exit", "# phase: batch.pre", "# phase: batch.post", "#wrong",
                               "algbw(GB/s)", "busbw(GB/s)", "d2d.shard", "Out of bounds values : 3 FAILED"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\n" << text;
  }
}

#if defined(HYBRIDSHARD_TEST_WITH_JSON)
TEST(BenchReportTest, json_holds_the_same_rows_bounds_and_ratios) {
  const BenchReport report = detail::combine_ranks(two_rank_config(), two_ranks());
  const nlohmann::json json = nlohmann::json::parse(bench_report_json(report));
  ASSERT_EQ(json["rows"].size(), report.rows.size());
  EXPECT_EQ(json["rows"][0]["phase"], "enter");
  EXPECT_EQ(json["rows"][0]["wrong"], 3);
  EXPECT_DOUBLE_EQ(json["rows"][0]["time_us"].get<double>(), 5000.0);
  EXPECT_EQ(json["bounds"].size(), report.bounds.size());
  EXPECT_EQ(json["ratios"].size(), report.ratios.size());
  EXPECT_EQ(json["wrong"], 3);
  EXPECT_EQ(json["world_size"], 2);
}
#endif

}  // namespace
}  // namespace hybridshard::service::bench
