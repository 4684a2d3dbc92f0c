// A tiny bench run with 4 Gloo ranks as threads on 127.0.0.1: every rank's shard and batch checked. No timings.
#include <gtest/gtest.h>

#include <string>

#include "hybridshard/core/communicator.h"
#include "hybridshard/service/bench/bench.h"

namespace hybridshard::service::bench {
namespace {

TEST(BenchGlooTest, four_ranks_tp2_pp2_to_tp1_have_no_wrong_elements_and_every_row) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  BenchOptions options;
  options.model = "tiny";
  options.tp = 2;
  options.pp = 2;
  options.rollout_tp = 1;
  options.comm = "gloo";
  options.iterations = 2;
  options.warmup = 1;
  options.batch_cols = 16;
  options.cpu_device_memory = std::int64_t{4} << 30;
  options.timeout_ms = 60000;
  const BenchReport report = run_bench_report(resolve_bench_options(options));
  EXPECT_EQ(report.world_size, 4);
  int rows = 0;
  for (const PhaseRow& row : report.rows) {
    ++rows;
    if (row.phase == "enter" || row.phase.rfind("batch.", 0) == 0) {
      EXPECT_TRUE(row.checked) << row.phase << " " << row.strategy;
    }
    EXPECT_EQ(row.wrong, 0) << row.phase << " " << row.strategy;
  }
  // (enter, exit) x 2 strategies x 2 policies x 2 releases (driver, cache: the default "both"), batch pre and post
  EXPECT_EQ(rows, 16 + 2);
  int collectives = 0;
  for (const BoundRow& bound : report.bounds) collectives += bound.name.rfind("collective.", 0) == 0;
  EXPECT_EQ(collectives, 2);
}

}  // namespace
}  // namespace hybridshard::service::bench
