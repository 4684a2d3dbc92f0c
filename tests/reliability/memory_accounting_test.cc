// Memory accounting end to end (issue 18): `hybridshard run` on the quickstart job (4 CPU ranks, memory samples every
// 50 ms) with memory.release_on_exit driver and cache, then its record, event by event. Every memory event must add
// up: device_used = tracked + cached + untracked, where a CPU rank's device holds nothing it did not allocate itself
// (untracked = 0) and each figure is >= 0. After every exit, driver leaves nothing cached (the freed shard, staging
// and KV cache went back), cache keeps at least the freed inference shard.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "child_process.h"
#include "hybridshard/service/observe/record.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;

struct RankMemory {
  int samples = 0;
  int samples_after_exit = 0;  // taken after an exit ended and before the next train began
  std::int64_t min_cached_after_exit = -1;
  std::int64_t max_cached_after_exit = 0;
  std::int64_t max_cached = 0;
  std::int64_t shard_bytes = 0;  // the rank's inference shard
};

// Runs the job with `release` and checks every memory event of its record; returns what each rank saw.
std::map<int, RankMemory> run_and_check(const std::string& release) {
  ScratchDir dir("memory-" + release);
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << quickstart_with(
      {{"iterations", "2"}, {"listen", "\"\""}, {"release_on_exit", release}, {"sample_interval_seconds", "0.05"}});
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--record", record.string()}, {}, dir / "run");
  const ChildResult result = launcher.wait(std::chrono::seconds(120));
  EXPECT_FALSE(result.timed_out) << result.describe();
  EXPECT_EQ(result.exit_code, 0) << result.describe();

  std::map<int, RankMemory> ranks;
  std::map<int, double> exit_ended;  // rank -> time of its last exit's end, while no train has begun since
  for (const nlohmann::json& event : service::RecordReader::open(record.string()).read_all()) {
    const std::string type = event.value("type", "");
    const int rank = event.value("rank", -1);
    if (type == "phase_end" && event.value("phase", "") == "exit") exit_ended[rank] = event.at("time").get<double>();
    if (type == "phase_begin" && event.value("phase", "") == "train") exit_ended.erase(rank);
    if (type == "residency" && event.value("kind", "") == "inference_params") {
      ranks[rank].shard_bytes = std::max(ranks[rank].shard_bytes, event.at("bytes").get<std::int64_t>());
    }
    if (type != "memory") continue;
    SCOPED_TRACE(release + ": " + event.dump());
    const auto used = event.at("device_used").get<std::int64_t>();
    const auto tracked = event.at("tracked").get<std::int64_t>();
    const auto cached = event.at("cached").get<std::int64_t>();
    const std::int64_t untracked = used - tracked - cached;
    EXPECT_GE(tracked, 0);
    EXPECT_GE(cached, 0);
    EXPECT_GE(event.at("cached_host").get<std::int64_t>(), 0);
    EXPECT_EQ(untracked, 0) << "used " << used << " != tracked " << tracked << " + cached " << cached;
    EXPECT_LE(used, event.at("device_total").get<std::int64_t>());
    RankMemory& memory = ranks[rank];
    ++memory.samples;
    memory.max_cached = std::max(memory.max_cached, cached);
    // A sample's time is taken before its reading: one stamped at or after exit's end was read after the release.
    if (auto ended = exit_ended.find(rank);
        ended != exit_ended.end() && event.at("time").get<double>() >= ended->second) {
      ++memory.samples_after_exit;
      memory.max_cached_after_exit = std::max(memory.max_cached_after_exit, cached);
      memory.min_cached_after_exit =
          memory.min_cached_after_exit < 0 ? cached : std::min(memory.min_cached_after_exit, cached);
    }
  }
  EXPECT_EQ(ranks.size(), 4u);
  return ranks;
}

TEST(MemoryAccountingTest, release_on_exit_driver_leaves_nothing_cached_after_exit_and_every_sample_adds_up) {
  for (const auto& [rank, memory] : run_and_check("driver")) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    EXPECT_GE(memory.samples_after_exit, 2);  // one per iteration at least (the schedule's own)
    EXPECT_EQ(memory.max_cached_after_exit, 0);
    EXPECT_GT(memory.max_cached, 0);  // within the phases the cache does its work
  }
}

TEST(MemoryAccountingTest, release_on_exit_cache_keeps_the_freed_shard_cached_and_every_sample_adds_up) {
  for (const auto& [rank, memory] : run_and_check("cache")) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    EXPECT_GE(memory.samples_after_exit, 2);
    EXPECT_GT(memory.shard_bytes, 0);
    EXPECT_GE(memory.min_cached_after_exit, memory.shard_bytes);
  }
}

}  // namespace
}  // namespace hybridshard::testing
