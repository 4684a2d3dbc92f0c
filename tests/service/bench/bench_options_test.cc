#include <gtest/gtest.h>

#include <string>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/bench/bench.h"

namespace hybridshard::service::bench {
namespace {

std::string problems_of(const BenchOptions& options) {
  try {
    resolve_bench_options(options);
  } catch (const core::ConfigError& error) {
    return error.what();
  }
  return {};
}

TEST(BenchOptionsTest, defaults_run_both_strategies_and_both_exit_policies_on_loopback) {
  const BenchConfig config = resolve_bench_options(BenchOptions{});
  ASSERT_EQ(config.strategies.size(), 2u);
  EXPECT_EQ(config.strategies[0], core::Strategy::kHybridshard);
  EXPECT_EQ(config.strategies[1], core::Strategy::kSeed);
  ASSERT_EQ(config.exit_policies.size(), 2u);
  EXPECT_EQ(config.exit_policies[0], core::ExitPolicy::kFree);
  EXPECT_EQ(config.exit_policies[1], core::ExitPolicy::kOffload);
  ASSERT_EQ(config.releases.size(), 2u);  // both measured: driver first
  EXPECT_EQ(config.releases[0], core::ReleaseOnExit::kDriver);
  EXPECT_EQ(config.releases[1], core::ReleaseOnExit::kCache);
  EXPECT_EQ(config.backend, core::Backend::kLoopback);
  EXPECT_EQ(config.iterations, 20);
  EXPECT_EQ(config.warmup, 5);
  EXPECT_TRUE(config.check);
  EXPECT_EQ(config.bucket_bytes, std::int64_t{256} << 20);
  EXPECT_EQ(config.train.world_size(), 1);
  EXPECT_EQ(config.inference.world_size, 1);
}

TEST(BenchOptionsTest, world_implies_data_parallel_size) {
  BenchOptions options;
  options.model = "llama3-8b";
  options.world = 8;
  options.tp = 2;
  options.pp = 2;
  options.rollout_tp = 1;
  const BenchConfig config = resolve_bench_options(options);
  EXPECT_EQ(config.train.dp, 2);
  EXPECT_EQ(config.inference.world_size, 8);
  EXPECT_EQ(config.inference.tp, 1);
  EXPECT_EQ(config.spec.hidden_size, 4096);
}

TEST(BenchOptionsTest, shape_flags_override_the_preset) {
  BenchOptions options;
  options.model = "llama3-8b";
  options.num_hidden_layers = 2;
  options.dtype = "fp32";
  const BenchConfig config = resolve_bench_options(options);
  EXPECT_EQ(config.spec.num_hidden_layers, 2);
  EXPECT_EQ(config.spec.dtype, core::DType::kFloat32);
  EXPECT_EQ(config.spec.hidden_size, 4096);
  EXPECT_NE(config.model_name.find("overridden"), std::string::npos);
}

TEST(BenchOptionsTest, every_problem_is_reported_at_once) {
  BenchOptions options;
  options.strategy = "fastest";
  options.comm = "carrier-pigeon";
  options.iterations = 0;
  options.check = 2;
  options.exit_policy = "keep";
  options.release_on_exit = "free";
  const std::string problems = problems_of(options);
  EXPECT_NE(problems.find("--strategy"), std::string::npos) << problems;
  EXPECT_NE(problems.find("--comm"), std::string::npos) << problems;
  EXPECT_NE(problems.find("-n"), std::string::npos) << problems;
  EXPECT_NE(problems.find("-c"), std::string::npos) << problems;
  EXPECT_NE(problems.find("--exit-policy"), std::string::npos) << problems;
  EXPECT_NE(problems.find("--release-on-exit"), std::string::npos) << problems;
  EXPECT_NE(problems.find("6 problems"), std::string::npos) << problems;
}

TEST(BenchOptionsTest, send_recv_and_peer_copy_knobs_reach_the_config) {
  const BenchConfig defaults = resolve_bench_options(BenchOptions{});
  EXPECT_EQ(defaults.direct_min_bytes, core::PlanOptions{}.direct_min_bytes);
  EXPECT_EQ(defaults.peer_copy_min_row, -1);  // the device's own default
  BenchOptions options;
  options.direct_min_bytes = 0;
  options.peer_copy_min_row = 4096;
  const BenchConfig config = resolve_bench_options(options);
  EXPECT_EQ(config.direct_min_bytes, 0);
  EXPECT_EQ(config.peer_copy_min_row, 4096);
  options.direct_min_bytes = -7;
  options.peer_copy_min_row = -3;
  const std::string problems = problems_of(options);
  EXPECT_NE(problems.find("--direct-min"), std::string::npos) << problems;
  EXPECT_NE(problems.find("--peer-copy-min-row"), std::string::npos) << problems;
}

// --work-only counts from the plan: a GPU layout is countable where there is no GPU, and the table names the piece
// counts with and without --coalesce-rows, the measured path marked.
TEST(BenchOptionsTest, work_only_counts_a_gpu_layout_without_a_gpu) {
  BenchOptions options;
  options.model = "tiny";
  options.comm = "nccl";
  options.world = 2;
  options.tp = 2;
  options.rollout_tp = 1;
  options.strategy = "hybridshard";
  options.work_only = true;
  options.coalesce_rows = 2;
  EXPECT_NE(problems_of(options).find("--coalesce-rows: must be 0 or 1, got 2"), std::string::npos);
  options.coalesce_rows = 0;
  const BenchConfig config = resolve_bench_options(options);
  EXPECT_FALSE(config.coalesce_rows);
  const BenchReport report = run_bench_report(config);
  EXPECT_TRUE(report.rows.empty());   // nothing ran
  ASSERT_EQ(report.work.size(), 6u);  // three paths, without and with coalescing
  int measured = 0;
  for (const WorkRow& row : report.work) {
    EXPECT_GT(row.work.pieces.count, 0);
    if (!row.measured) continue;
    ++measured;
    EXPECT_FALSE(row.coalesced);
    EXPECT_EQ(row.work.path, core::EnterPath::kPeerOtherDevices);
  }
  EXPECT_EQ(measured, 1);
  EXPECT_LE(report.work[3].work.pieces.count, report.work[0].work.pieces.count);
}

TEST(BenchOptionsTest, unknown_preset_lists_the_known_ones) {
  BenchOptions options;
  options.model = "gpt-17";
  const std::string problems = problems_of(options);
  EXPECT_NE(problems.find("gpt-17"), std::string::npos) << problems;
  EXPECT_NE(problems.find("llama3-8b"), std::string::npos) << problems;
}

TEST(BenchOptionsTest, loopback_rank_must_lie_in_the_world) {
  BenchOptions options;
  options.world = 4;
  options.rank = 4;
  EXPECT_NE(problems_of(options).find("--rank 4"), std::string::npos);
}

TEST(BenchOptionsTest, world_that_is_no_multiple_of_tp_times_pp_is_refused) {
  BenchOptions options;
  options.world = 6;
  options.tp = 4;
  EXPECT_NE(problems_of(options).find("--world 6"), std::string::npos);
}

TEST(BenchOptionsTest, batch_rows_must_split_over_the_inference_groups) {
  BenchOptions options;
  options.world = 4;
  options.tp = 2;
  options.rollout_tp = 1;
  options.batch_rows = 6;  // dp 2 x 6 = 12 rows over 4 groups: fine
  EXPECT_EQ(problems_of(options), "");
  options.batch_rows = 3;  // 6 rows over 4 groups: not
  EXPECT_NE(problems_of(options).find("--batch-rows 3"), std::string::npos);
}

TEST(BenchOptionsTest, default_batch_rows_split_evenly) {
  BenchOptions options;
  options.world = 8;
  options.tp = 2;
  options.pp = 2;
  options.rollout_tp = 1;
  const BenchConfig config = resolve_bench_options(options);
  const std::int64_t groups = config.inference.dp();
  EXPECT_EQ((config.batch_rows * config.train.dp) % groups, 0);
  EXPECT_GT(config.batch_rows, 0);
}

// World 2, tp 2 -> tp' 1 over NCCL, plan only (--work-only: no GPU needed to resolve).
BenchOptions two_nccl_ranks() {
  BenchOptions options;
  options.world = 2;
  options.tp = 2;
  options.rollout_tp = 1;
  options.comm = "nccl";
  options.work_only = true;
  return options;
}

TEST(BenchOptionsTest, nccl_ranks_default_to_processes_and_gloo_ranks_to_threads) {
  BenchOptions options = two_nccl_ranks();
  EXPECT_EQ(resolve_bench_options(options).rank_mode, RankMode::kProcess);
  options.ranks = "thread";
  EXPECT_EQ(resolve_bench_options(options).rank_mode, RankMode::kThread);
  if (!core::gloo_available()) return;
  options.comm = "gloo";
  options.work_only = false;
  options.ranks = "";
  EXPECT_EQ(resolve_bench_options(options).rank_mode, RankMode::kThread);
  options.ranks = "process";
  EXPECT_EQ(resolve_bench_options(options).rank_mode, RankMode::kProcess);
  EXPECT_EQ(rank_mode_name(RankMode::kProcess), "process");
  EXPECT_EQ(rank_mode_name(RankMode::kThread), "thread");
}

TEST(BenchOptionsTest, ranks_refuses_other_words_and_loopback) {
  BenchOptions options = two_nccl_ranks();
  options.ranks = "fibers";
  EXPECT_NE(problems_of(options).find("--ranks: 'fibers' is not thread or process"), std::string::npos);
  options.comm = "loopback";
  options.ranks = "process";
  EXPECT_NE(problems_of(options).find("--ranks process: loopback runs its one rank in this process"),
            std::string::npos);
}

TEST(BenchOptionsTest, a_rank_process_needs_a_rank_of_the_world_and_its_directory) {
  BenchOptions options = two_nccl_ranks();
  options.run_rank = 2;
  const std::string problems = problems_of(options);
  EXPECT_NE(problems.find("--run-rank 2 is outside the world of 2 ranks"), std::string::npos) << problems;
  EXPECT_NE(problems.find("--rank-dir is missing"), std::string::npos) << problems;
}

}  // namespace
}  // namespace hybridshard::service::bench
