// A tiny bench run through the public entry point, on the CPU device with the loopback communicator: so that the
// bench never rots. Asserts correctness and the shape of the output, never timings.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "hybridshard/service/bench/bench.h"

#if defined(HYBRIDSHARD_TEST_WITH_JSON)
#include <nlohmann/json.hpp>
#endif

namespace hybridshard::service::bench {
namespace {

BenchOptions tiny_loopback(int rank) {
  BenchOptions options;
  options.model = "tiny";
  options.tp = 2;
  options.pp = 2;
  options.rollout_tp = 1;
  options.comm = "loopback";
  options.device = "cpu";
  options.rank = rank;
  options.iterations = 2;
  options.warmup = 1;
  options.batch_cols = 16;
  options.cpu_device_memory = std::int64_t{4} << 30;
  return options;
}

TEST(BenchLoopbackTest, report_has_every_phase_for_both_strategies_and_no_wrong_elements) {
  const BenchReport report = run_bench_report(resolve_bench_options(tiny_loopback(3)));
  int enters = 0;
  int exits = 0;
  int batches = 0;
  for (const PhaseRow& row : report.rows) {
    if (row.phase == "enter") {
      ++enters;
      EXPECT_TRUE(row.checked) << row.strategy;
      EXPECT_EQ(row.wrong, 0) << row.strategy;
      EXPECT_GT(row.bytes, 0) << row.strategy << ": rank 3 of tp=2 pp=2 -> tp'=1 must receive the other stage";
      EXPECT_GT(row.peak_extra_bytes, 0) << row.strategy;
    }
    if (row.phase == "exit") ++exits;
    if (row.phase.rfind("batch.", 0) == 0) {
      ++batches;
      EXPECT_FALSE(row.checked);  // loopback peers send zeros for the batch
    }
    EXPECT_GT(row.time_us, 0) << row.phase << " " << row.strategy;
  }
  EXPECT_EQ(enters, 8);  // 2 strategies x (after free, after offload) x (release driver, cache)
  EXPECT_EQ(exits, 8);   // 2 strategies x (free, offload) x (driver, cache)
  EXPECT_EQ(batches, 2);
  EXPECT_EQ(report.total_wrong(), 0);
  bool saw_d2d_shard = false;
  for (const BoundRow& bound : report.bounds) saw_d2d_shard = saw_d2d_shard || bound.name == "d2d.shard";
  EXPECT_TRUE(saw_d2d_shard);
  EXPECT_FALSE(report.ratios.empty());
}

// Qwen3-30B-A3B's shapes cut to 2 layers, hidden 256 and 16 experts (head_dim 128, experts of width 768): train EP 4
// over dp 4 -> vLLM's tensor-parallel experts on tp' 2; rank 1's experts come from the other data-parallel ranks and
// every element is checked.
TEST(BenchLoopbackTest, expert_parallel_layout_enters_bit_exact_and_the_seed_is_skipped_with_a_note) {
  BenchOptions options = tiny_loopback(1);
  options.model = "qwen3-30b-a3b";
  options.num_hidden_layers = 2;
  options.hidden_size = 256;
  options.vocab_size = 1000;
  options.tp = 1;
  options.pp = 1;
  options.world = 4;
  options.ep = 4;
  options.rollout_tp = 2;
  options.exit_policy = "free";
  options.release_on_exit = "cache";
  BenchConfig config = resolve_bench_options(options);
  config.spec.num_experts = 16;
  const BenchReport report = run_bench_report(config);
  int enters = 0;
  for (const PhaseRow& row : report.rows) {
    if (row.phase != "enter") continue;
    ++enters;
    EXPECT_EQ(row.strategy, "hybridshard");
    EXPECT_TRUE(row.checked);
    EXPECT_EQ(row.wrong, 0);
    EXPECT_GT(row.bytes, 0) << "experts of the other data-parallel ranks arrive";
  }
  EXPECT_EQ(enters, 1);
  bool noted = false;
  for (const std::string& note : report.notes)
    noted = noted || note.find("no Mixture-of-Experts path") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(BenchLoopbackTest, run_bench_prints_the_tables_and_writes_the_json) {
  BenchOptions options = tiny_loopback(0);
  options.strategy = "hybridshard";
  options.exit_policy = "free";
  char path[] = "/tmp/bench_loopback_testXXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  options.json_file = path;
  std::ostringstream out;
  EXPECT_EQ(run_bench(options, out), 0) << out.str();
  const std::string table = out.str();
  for (const char* expected : {"# phase: enter", "# phase: exit", "# phase: batch.pre", "hybridshard", "d2d.shard",
                               "h2d.pinned", "d2h.pinned", "Out of bounds values : 0 OK"}) {
    EXPECT_NE(table.find(expected), std::string::npos) << expected << "\n" << table;
  }
  EXPECT_EQ(table.find("seed "), std::string::npos) << "--strategy hybridshard runs only hybridshard";
  std::ifstream file(path);
  std::stringstream json_text;
  json_text << file.rdbuf();
  std::remove(path);
  EXPECT_NE(json_text.str().find("\"phase\": \"enter\""), std::string::npos);
#if defined(HYBRIDSHARD_TEST_WITH_JSON)
  const nlohmann::json json = nlohmann::json::parse(json_text.str());
  // enter after exit(free) with each release, exit(free) with each release, batch.pre, batch.post
  ASSERT_EQ(json["rows"].size(), 6u);
  EXPECT_EQ(json["rows"][0]["wrong"], 0);
  EXPECT_EQ(json["rows"][0]["release"], "driver");
  EXPECT_EQ(json["rows"][1]["release"], "cache");
  // Exit with a release to the driver leaves nothing the driver counts beyond the steady state (the CPU device has
  // no rounding); with the cache, the freed shard stays counted.
  EXPECT_EQ(json["rows"][2]["phase"], "exit");
  EXPECT_EQ(json["rows"][2]["driver_bytes"], 0);
  EXPECT_GT(json["rows"][3]["driver_bytes"].get<std::int64_t>(), 0);
  EXPECT_EQ(json["wrong"], 0);
#endif
}

TEST(BenchLoopbackTest, bad_options_exit_2_and_say_why) {
  BenchOptions options;
  options.comm = "smoke-signals";
  std::ostringstream out;
  EXPECT_EQ(run_bench(options, out), 2);
  EXPECT_NE(out.str().find("smoke-signals"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace hybridshard::service::bench
