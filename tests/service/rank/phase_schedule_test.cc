// The phase schedule on Gloo ranks as threads. With a recording PhaseWork: the phases' order, where the memory policy
// puts the train state, the train params and the KV cache at each step, and stopping. With the job's own workloads:
// the bytes of every buffer kind on the device and the host, measured from the buffers' events, equal what `plan`
// predicts from the same policy.
#include "hybridshard/service/rank/phase_schedule.h"

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/service/config/memory_plan.h"
#include "hybridshard/service/rank/rank_workloads.h"
#include "rank_threads.h"

namespace hybridshard::service {
namespace {

// Records what the schedule asks of it, with where the train params and the shard are at each generate.
class RecordingWork : public PhaseWork {
 public:
  explicit RecordingWork(RankSetup& setup) : setup_(setup) {}

  void train(int iteration) override { calls.push_back("train " + std::to_string(iteration)); }
  void place_train_state(core::BufferKind kind, Placement placement) override {
    calls.push_back("place " + std::string(core::buffer_kind_name(kind)) + " " +
                    std::string(placement_name(placement)));
  }
  core::TokenBatch generate(int iteration, core::FlatBuffer& shard, const core::TokenBatch& prompts) override {
    std::string where = "generate " + std::to_string(iteration) + " shard " +
                        std::string(core::residency_name(shard.residency())) + " params";
    for (const core::FlatBuffer* params : setup_.train_params()) {
      where += " " + std::string(core::residency_name(params->residency()));
    }
    calls.push_back(where);
    core::TokenBatch generated;
    generated.rows = prompts.rows;
    generated.cols = 2;
    generated.tokens.assign(static_cast<std::size_t>(generated.rows * generated.cols), 7);
    return generated;
  }
  void release_kv_cache() override { calls.push_back("release kv_cache"); }

  std::vector<std::string> calls;

 private:
  RankSetup& setup_;
};

core::TokenBatch two_rows(int iteration) {
  core::TokenBatch batch;
  batch.rows = 2;
  batch.cols = 3;
  batch.tokens.assign(6, iteration + 1);
  return batch;
}

struct RecordedRank {
  std::vector<std::string> calls;
  std::vector<std::string> phases;  // "begin train 0", "end train 0", ...
  ScheduleResult result;
};

// Two ranks (train tp 2 -> rollout tp 1) run the schedule with RecordingWork.
std::vector<RecordedRank> run_recorded(const MemoryConfig& memory, int iterations, int stop_after_iteration = -1) {
  std::vector<RecordedRank> ranks(2);
  testing::run_ranks_as_threads(2, "phase-schedule-test", [&](int rank, const StoreAddress& store) {
    RankSetupOptions setup_options;
    setup_options.train.tp = 2;
    setup_options.rollout.world_size = 2;
    setup_options.rank = rank;
    setup_options.world_size = 2;
    setup_options.store = store;
    setup_options.timeout = std::chrono::seconds(30);
    RankSetup setup(setup_options);
    RecordingWork work(setup);
    core::RecordingEventSink events;
    ScheduleOptions options;
    options.iterations = iterations;
    options.policy = MemoryPolicy(memory);
    options.prompts = two_rows;
    options.sample_interval_seconds = 60;
    ScheduleHooks hooks;
    hooks.stop_after = [&](int iteration) { return iteration == stop_after_iteration; };
    RecordedRank& recorded = ranks[static_cast<std::size_t>(rank)];
    recorded.result = run_phase_schedule(setup, work, options, events, hooks);
    recorded.calls = work.calls;
    for (const core::Event& event : events.events()) {
      if (event.type == core::EventType::kPhaseBegin || event.type == core::EventType::kPhaseEnd) {
        recorded.phases.push_back(std::string(event.type == core::EventType::kPhaseBegin ? "begin " : "end ") +
                                  event.phase + " " + std::to_string(event.iteration));
      }
    }
  });
  return ranks;
}

TEST(PhaseScheduleTest, every_iteration_runs_train_enter_rollout_exit_in_order) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  const std::vector<RecordedRank> ranks = run_recorded(MemoryConfig{}, 2);
  std::vector<std::string> expected;
  for (int iteration = 0; iteration < 2; ++iteration) {
    for (const char* phase : {"train", "enter", "rollout", "exit"}) {
      expected.push_back(std::string("begin ") + phase + " " + std::to_string(iteration));
      expected.push_back(std::string("end ") + phase + " " + std::to_string(iteration));
    }
  }
  for (const RecordedRank& rank : ranks) {
    EXPECT_EQ(rank.phases, expected);
    EXPECT_EQ(rank.result.iterations_done, 2);
    EXPECT_FALSE(rank.result.stopped);
  }
}

TEST(PhaseScheduleTest, the_default_policy_offloads_the_train_state_for_the_rollout_and_drops_the_kv_cache) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  const std::vector<RecordedRank> ranks = run_recorded(MemoryConfig{}, 2);
  // exit -> train brings the train state back (a no-op on the first iteration, where it never left).
  const std::vector<std::string> iteration_calls{"place master_params device",
                                                 "place optimizer device",
                                                 "place grads device",
                                                 "train *",
                                                 "place master_params host",
                                                 "place optimizer host",
                                                 "place grads host",
                                                 "generate * shard gpu params gpu",
                                                 "release kv_cache"};
  std::vector<std::string> expected;
  for (int iteration = 0; iteration < 2; ++iteration) {
    for (std::string call : iteration_calls) {
      const std::size_t star = call.find('*');
      if (star != std::string::npos) call.replace(star, 1, std::to_string(iteration));
      expected.push_back(call);
    }
  }
  for (const RecordedRank& rank : ranks) EXPECT_EQ(rank.calls, expected);
}

TEST(PhaseScheduleTest, another_policy_frees_grads_offloads_params_and_keeps_the_kv_cache) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  MemoryConfig memory;
  memory.offload_optimizer_in_rollout = false;
  memory.free_grads_in_rollout = true;
  memory.offload_params_in_rollout = true;
  memory.free_kv_cache_in_train = false;
  const std::vector<RecordedRank> ranks = run_recorded(memory, 1);
  const std::vector<std::string> expected{"place grads device", "train 0", "place grads none",
                                          "generate 0 shard gpu params cpu"};
  for (const RecordedRank& rank : ranks) EXPECT_EQ(rank.calls, expected);
}

TEST(PhaseScheduleTest, stop_after_ends_every_rank_after_that_iteration) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  const std::vector<RecordedRank> ranks = run_recorded(MemoryConfig{}, 5, /*stop_after_iteration=*/1);
  for (const RecordedRank& rank : ranks) {
    EXPECT_TRUE(rank.result.stopped);
    EXPECT_EQ(rank.result.iterations_done, 2);
    EXPECT_EQ(rank.phases.back(), "end exit 1");
  }
}

// Bytes of each buffer kind by residency, from the buffers' residency events.
class ResidencyTally : public core::EventSink {
 public:
  using Bytes = std::array<std::array<std::int64_t, kNumBufferKinds>, 2>;  // [device, host][kind]

  void on_event(const core::Event& event) override {
    std::lock_guard lock(mutex_);
    if (event.type == core::EventType::kResidency) {
      add(event.from, event.kind, -event.bytes);
      add(event.to, event.kind, event.bytes);
    }
    // At the end of train (after the first: the plan's train is the steady state, after a rollout and an exit), and
    // at the KV cache's fullest (the sample after generation, inside rollout).
    if (event.type == core::EventType::kPhaseEnd && event.phase == "train" && event.iteration > 0) {
      at_[{event.iteration, "train"}] = now_;
    }
    if (event.type == core::EventType::kPhaseBegin && event.phase == "rollout") in_rollout_ = true;
    if (event.type == core::EventType::kPhaseEnd && event.phase == "rollout") in_rollout_ = false;
    if (event.type == core::EventType::kMemorySample && in_rollout_) at_[{event.iteration, "rollout"}] = now_;
  }
  std::map<std::pair<int, std::string>, Bytes> snapshots() const {
    std::lock_guard lock(mutex_);
    return at_;
  }

 private:
  void add(core::Residency where, core::BufferKind kind, std::int64_t bytes) {
    if (where == core::Residency::kNone) return;
    now_[where == core::Residency::kGpu ? 0 : 1][static_cast<std::size_t>(kind)] += bytes;
  }

  mutable std::mutex mutex_;
  Bytes now_{};
  bool in_rollout_ = false;
  std::map<std::pair<int, std::string>, Bytes> at_;
};

// The quickstart job (4 ranks: train tp 2 pp 2 -> rollout tp 1) with `memory`, run with the job's workloads; every
// rank's measured bytes per kind against the plan, in train and in rollout, both iterations.
void expect_plan_matches_the_run(const MemoryConfig& memory) {
  LoadResult loaded = load_job_config_from_string(default_job_yaml(), "quickstart.yaml");
  ASSERT_TRUE(loaded.job);
  JobConfig job = *loaded.job;
  job.memory = memory;
  job.memory.bucket_bytes = std::int64_t{64} << 10;
  job.schedule.iterations = 2;
  job.generation.check = false;  // the reference's buffers are the referee's, outside the plan
  job.generation.kv_cache_bytes = 64 * kv_cache_bytes_per_token(job.model.spec, job.rollout);
  job.metrics.sample_interval_seconds = 60;
  const MemoryPlan plan = make_memory_plan(job);

  testing::run_ranks_as_threads(
      job.runtime.world_size, "phase-schedule-plan-test", [&](int rank, const StoreAddress& store) {
        ResidencyTally tally;
        RankSetupOptions setup_options = rank_setup_options(job, rank, rank, store);
        setup_options.device.type = core::DeviceType::kCpu;
        setup_options.events = &tally;
        RankSetup setup(setup_options);
        std::ostringstream log;
        RankWorkloads work(job, setup, &tally, log);
        run_phase_schedule(setup, work, schedule_options(job, rank), tally);
        const RankMemoryPlan& predicted = plan.ranks.at(static_cast<std::size_t>(rank));
        for (const auto& [when, bytes] : tally.snapshots()) {
          const PlanPhase phase = when.second == "train" ? PlanPhase::kTrain : PlanPhase::kRollout;
          const PhaseMemory& expected = predicted.phases[static_cast<std::size_t>(phase)];
          for (std::size_t kind = 0; kind < kNumBufferKinds; ++kind) {
            const std::string what = "rank " + std::to_string(rank) + " iteration " + std::to_string(when.first) + " " +
                                     when.second + " " +
                                     std::string(core::buffer_kind_name(static_cast<core::BufferKind>(kind)));
            EXPECT_EQ(bytes[0][kind], expected.device[kind]) << what << " on the device";
            EXPECT_EQ(bytes[1][kind], expected.host[kind]) << what << " on the host";
          }
        }
        EXPECT_EQ(tally.snapshots().size(), 3u);  // rollout 0, train 1, rollout 1
      });
}

TEST(PhaseScheduleTest, plan_predicts_the_bytes_the_default_policy_leaves_in_each_phase) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  expect_plan_matches_the_run(MemoryConfig{});
}

TEST(PhaseScheduleTest, plan_predicts_the_bytes_another_policy_leaves_in_each_phase) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  MemoryConfig memory;
  memory.exit_policy = core::ExitPolicy::kOffload;
  memory.offload_optimizer_in_rollout = false;
  memory.free_grads_in_rollout = true;
  memory.offload_params_in_rollout = true;
  memory.free_kv_cache_in_train = false;
  expect_plan_matches_the_run(memory);
}

}  // namespace
}  // namespace hybridshard::service
