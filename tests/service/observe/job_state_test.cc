#include "hybridshard/service/observe/job_state.h"

#include <gtest/gtest.h>

#include <limits>

#include "event_sequence.h"
#include "hybridshard/core/error.h"

namespace hybridshard::service {
namespace {

using testing::SyntheticJob;

void apply_all(JobState& state, const std::vector<nlohmann::json>& events) {
  for (const nlohmann::json& event : events) state.apply(event);
}

const nlohmann::json& buffer_of(const nlohmann::json& status, int rank, const std::string& name) {
  for (const nlohmann::json& buffer : status["ranks"][rank]["buffers"]) {
    if (buffer["name"] == name) return buffer;
  }
  throw std::runtime_error("no buffer " + name + " on rank " + std::to_string(rank));
}

TEST(JobStateTest, starts_runs_and_finishes) {
  SyntheticJob job;
  JobState state;
  EXPECT_EQ(state.state(), "starting");
  std::vector<nlohmann::json> opening = testing::job_opening(job);
  state.apply(opening[0]);  // the job event: ranks known, none up
  nlohmann::json status = state.status_json();
  EXPECT_EQ(status["state"], "starting");
  EXPECT_EQ(status["job"]["world_size"], 2);
  EXPECT_FALSE(status["job"].contains("type"));
  ASSERT_EQ(status["ranks"].size(), 2u);
  EXPECT_FALSE(status["ranks"][1]["up"].get<bool>());
  EXPECT_DOUBLE_EQ(status["started"].get<double>(), job.start);

  apply_all(state, {opening.begin() + 1, opening.end()});
  EXPECT_EQ(state.state(), "running");
  apply_all(state, testing::job_iteration(job, 0));
  state.apply(job_end_event(true, "", 20.0, job.start + 20));
  status = state.status_json();
  EXPECT_EQ(status["state"], "finished");
  EXPECT_EQ(status["iteration"], 0);
  EXPECT_TRUE(status["ranks"][0]["up"].get<bool>());
  EXPECT_EQ(status["ranks"][0]["host"], "127.0.0.1");
  EXPECT_EQ(status["ranks"][0]["pid"], 1000);
  EXPECT_EQ(status["ranks"][1]["device"], "cpu");
}

TEST(JobStateTest, failed_job_keeps_its_message_and_down_rank_its_reason) {
  JobState state;
  apply_all(state, testing::job_opening(SyntheticJob{}));
  state.apply(rank_down_event(1, "127.0.0.1", "killed by signal 9", "enter", 2e9));
  state.apply(job_end_event(false, "rank 1 on 127.0.0.1 died in enter", 5.0, 2e9 + 1));
  nlohmann::json status = state.status_json();
  EXPECT_EQ(status["state"], "failed");
  EXPECT_EQ(status["message"], "rank 1 on 127.0.0.1 died in enter");
  EXPECT_FALSE(status["ranks"][1]["up"].get<bool>());
  EXPECT_EQ(status["ranks"][1]["down_reason"], "killed by signal 9");
  EXPECT_TRUE(status["ranks"][0]["up"].get<bool>());
  EXPECT_DOUBLE_EQ(status["time"].get<double>(), 2e9 + 1);
}

TEST(JobStateTest, buffers_follow_their_residency_through_the_phases) {
  SyntheticJob job;
  JobState state;
  apply_all(state, testing::job_opening(job));
  nlohmann::json status = state.status_json();
  EXPECT_EQ(buffer_of(status, 0, "train.params.pp0.vpp0")["residency"], "gpu");
  EXPECT_EQ(buffer_of(status, 0, "train.params.pp0.vpp0")["dtype"], "bf16");
  EXPECT_EQ(buffer_of(status, 0, "train.params.pp0.vpp0")["bytes"], job.params_bytes);
  EXPECT_EQ(buffer_of(status, 0, "rollout.params")["residency"], "none");
  EXPECT_EQ(buffer_of(status, 0, "rollout.params")["kind"], "inference_params");

  std::vector<nlohmann::json> iteration = testing::job_iteration(job, 0);
  // Up to the end of rank 0's enter: inference shard on the device, optimizer state on the host.
  std::size_t enter_end = 0;
  while (!(iteration[enter_end]["type"] == "phase_end" && iteration[enter_end]["phase"] == "enter")) ++enter_end;
  apply_all(state, {iteration.begin(), iteration.begin() + static_cast<long>(enter_end) + 1});
  status = state.status_json();
  EXPECT_EQ(buffer_of(status, 0, "rollout.params")["residency"], "gpu");
  EXPECT_EQ(buffer_of(status, 0, "train.exp_avg.pp0.vpp0")["residency"], "cpu");
  EXPECT_EQ(buffer_of(status, 1, "rollout.params")["residency"], "none");  // rank 1 has not entered yet
  EXPECT_EQ(status["ranks"][0]["phase"], "");
  EXPECT_DOUBLE_EQ(status["ranks"][0]["last_enter_seconds"].get<double>(), 0.012);
  EXPECT_EQ(status["ranks"][0]["last_enter_network_bytes"], job.network_bytes);

  apply_all(state, {iteration.begin() + static_cast<long>(enter_end) + 1, iteration.end()});
  status = state.status_json();
  EXPECT_EQ(buffer_of(status, 0, "rollout.params")["residency"], "none");
  EXPECT_EQ(buffer_of(status, 1, "train.exp_avg.pp0.vpp0")["residency"], "gpu");
  EXPECT_DOUBLE_EQ(status["ranks"][1]["last_exit_seconds"].get<double>(), 0.004);

  core::Event destroyed;
  destroyed.type = core::EventType::kBufferDestroyed;
  destroyed.time = job.start + 100;
  destroyed.rank = 1;
  destroyed.buffer = "rollout.kv_cache";
  destroyed.kind = core::BufferKind::kKvCache;
  state.apply(destroyed);
  status = state.status_json();
  EXPECT_EQ(status["ranks"][1]["buffers"].size(), 5u);
  EXPECT_EQ(status["ranks"][0]["buffers"].size(), 6u);
}

TEST(JobStateTest, current_phase_and_phase_intervals) {
  SyntheticJob job;
  JobState state;
  apply_all(state, testing::job_opening(job));
  state.apply(testing::phase_event(true, job.start + 50, 0, 4, "rollout"));
  nlohmann::json status = state.status_json();
  EXPECT_EQ(status["ranks"][0]["phase"], "rollout");
  EXPECT_DOUBLE_EQ(status["ranks"][0]["phase_since"].get<double>(), job.start + 50);
  EXPECT_EQ(status["ranks"][0]["iteration"], 4);
  const nlohmann::json& open = status["phases"].back();
  EXPECT_EQ(open["phase"], "rollout");
  EXPECT_TRUE(open["end"].is_null());

  state.apply(testing::phase_event(false, job.start + 51, 0, 4, "rollout", 1.0));
  status = state.status_json();
  const nlohmann::json& closed = status["phases"].back();
  EXPECT_EQ(closed["rank"], 0);
  EXPECT_EQ(closed["iteration"], 4);
  EXPECT_DOUBLE_EQ(closed["begin"].get<double>(), job.start + 50);
  EXPECT_DOUBLE_EQ(closed["end"].get<double>(), job.start + 51);
}

TEST(JobStateTest, memory_samples_get_gpu_bytes_by_kind) {
  SyntheticJob job;
  JobState state;
  apply_all(state, testing::job_opening(job));
  nlohmann::json by_kind = state.gpu_bytes_by_kind(0);
  EXPECT_EQ(by_kind["params"], job.params_bytes);
  EXPECT_EQ(by_kind["optimizer"], 2 * job.params_bytes);
  EXPECT_EQ(by_kind["inference_params"], 0);
  EXPECT_EQ(by_kind.size(), 7u);

  state.apply(testing::memory_event(job.start + 1, 0, -1, 5000, 10000, 4000));
  nlohmann::json status = state.status_json();
  const nlohmann::json& sample = status["memory"].back();
  EXPECT_EQ(sample["rank"], 0);
  EXPECT_EQ(sample["device_used"], 5000);
  EXPECT_EQ(sample["device_total"], 10000);
  EXPECT_EQ(sample["tracked"], 4000);
  EXPECT_EQ(sample["by_kind"], by_kind);
  EXPECT_EQ(status["ranks"][0]["device_used"], 5000);
}

TEST(JobStateTest, cached_bytes_are_their_own_kind_and_untracked_leaves_them_out) {
  SyntheticJob job;
  JobState state;
  apply_all(state, testing::job_opening(job));
  // 10000 used on the device: 4000 tracked, 5000 in the device's cache, 1000 held by others.
  state.apply(testing::memory_event(job.start + 1, 0, 0, 10000, 20000, 4000, 5000, 300));
  const nlohmann::json status = state.status_json();
  const nlohmann::json& rank = status["ranks"][0];
  EXPECT_EQ(rank["device_used"], 10000);
  EXPECT_EQ(rank["tracked"], 4000);
  EXPECT_EQ(rank["cached"], 5000);
  EXPECT_EQ(rank["cached_host"], 300);
  EXPECT_EQ(rank["untracked"], 1000);
  const nlohmann::json& sample = status["memory"].back();
  EXPECT_EQ(sample["cached"], 5000);
  EXPECT_EQ(sample["cached_host"], 300);
  state.read([](const JobFold& fold) {
    EXPECT_EQ(fold.ranks.at(0).cached, 5000);
    EXPECT_EQ(fold.ranks.at(0).memory.back().cached, 5000);
  });
  // The next sample: the cache went back to the driver.
  state.apply(testing::memory_event(job.start + 2, 0, 0, 5000, 20000, 4000, 0, 300));
  EXPECT_EQ(state.status_json()["ranks"][0]["untracked"], 1000);
  EXPECT_EQ(state.status_json()["ranks"][0]["cached"], 0);
}

TEST(JobStateTest, history_is_bounded_per_rank_and_keeps_the_newest) {
  JobState state(JobStateLimits{.memory_samples_per_rank = 3, .phases_per_rank = 2});
  for (int i = 0; i < 10; ++i) {
    for (int rank = 0; rank < 2; ++rank) {
      state.apply(testing::memory_event(100.0 + i, rank, i, i, 100, i));
      state.apply(testing::phase_event(true, 100.0 + i, rank, i, "train"));
      state.apply(testing::phase_event(false, 100.5 + i, rank, i, "train", 0.5));
    }
  }
  nlohmann::json status = state.status_json();
  ASSERT_EQ(status["memory"].size(), 6u);
  ASSERT_EQ(status["phases"].size(), 4u);
  EXPECT_DOUBLE_EQ(status["memory"][0]["time"].get<double>(), 107.0);  // oldest kept, sorted by time
  EXPECT_DOUBLE_EQ(status["memory"][5]["time"].get<double>(), 109.0);
  EXPECT_EQ(status["phases"][0]["iteration"], 8);
  EXPECT_EQ(status["phases"][3]["iteration"], 9);
}

TEST(JobStateTest, failed_checks_are_counted) {
  SyntheticJob job;
  JobState state;
  apply_all(state, testing::job_opening(job));
  apply_all(state, testing::job_iteration(job, 0, /*check_ok=*/false));
  nlohmann::json status = state.status_json();
  EXPECT_EQ(status["ranks"][0]["check_failures"], 1);
  EXPECT_EQ(status["ranks"][0]["last_check"]["ok"], false);
  EXPECT_EQ(status["ranks"][0]["last_check"]["name"], "rollout_reference");
  EXPECT_EQ(status["ranks"][0]["last_check"]["detail"], "token 3 differs");
}

TEST(JobStateTest, malformed_event_is_refused_and_changes_nothing) {
  JobState state;
  apply_all(state, testing::job_opening(SyntheticJob{}));
  const nlohmann::json before = state.status_json();
  nlohmann::json bad = testing::memory_event(1e10, 0, 5, 1, 2, 3);
  bad.erase("tracked");
  EXPECT_THROW(state.apply(bad), core::Error);
  EXPECT_THROW(state.apply(nlohmann::json{{"type", "job"}, {"time", 1.0}, {"world_size", 0}}), core::Error);
  EXPECT_THROW(state.apply(nlohmann::json{{"type", "job"}, {"time", 1.0}, {"world_size", 1 << 30}}), core::Error);
  EXPECT_EQ(state.status_json(), before);
}

// Four hours of a two-rank job: a memory sample a second, a train/rollout cycle every 10 s, one spike and one dip.
TEST(JobStateHistoryTest, hours_of_a_job_stay_within_the_bound_and_cover_every_moment) {
  JobState state;
  const double start = 1.7e9;
  const int seconds = 4 * 3600;
  const double spike = start + 3600.5;
  const double dip = start + 7200.5;
  double train_seconds = 0;
  for (int second = 0; second < seconds; ++second) {
    const double t = start + second + 0.5;
    for (int rank = 0; rank < 2; ++rank) {
      std::int64_t used = 1000000 + 1000 * (second % 10);
      if (t == spike && rank == 0) used = 9000000;
      if (t == dip && rank == 0) used = 10;
      state.apply(testing::memory_event(t, rank, second / 10, used, 10000000, used / 2));
      if (second % 10 == 0) state.apply(testing::phase_event(true, t, rank, second / 10, "train"));
      if (second % 10 == 6) state.apply(testing::phase_event(false, t, rank, second / 10, "train", 6));
      if (second % 10 == 6) state.apply(testing::phase_event(true, t, rank, second / 10, "rollout"));
      if (second % 10 == 9) state.apply(testing::phase_event(false, t, rank, second / 10, "rollout", 3));
    }
    if (second % 10 == 6) train_seconds += 6;
  }
  const nlohmann::json status = state.status_json();
  EXPECT_EQ(status["memory"].size(), 2u * 600);  // the newest at full rate
  EXPECT_EQ(status["phases"].size(), 2u * 200);
  ASSERT_EQ(status["history"].size(), 2u);
  for (const nlohmann::json& rank : status["history"]) {
    SCOPED_TRACE("rank " + rank["rank"].dump());
    const double width = rank["memory_bucket_seconds"].get<double>();
    EXPECT_EQ(width, 64.0);  // the smallest power of two that fits 4 h into 256 buckets
    const nlohmann::json& buckets = rank["memory"];
    EXPECT_LE(buckets.size(), kDefaultHistoryBuckets);
    EXPECT_GT(buckets.size(), kDefaultHistoryBuckets / 2);
    // The whole job, first sample to last.
    EXPECT_LE(buckets.front()["bucket"].get<double>() * width, start + 0.5);
    EXPECT_GT((buckets.back()["bucket"].get<double>() + 1) * width, start + seconds - 0.5);
    std::int64_t highest = 0;
    std::int64_t lowest = std::numeric_limits<std::int64_t>::max();
    for (const nlohmann::json& bucket : buckets) {
      highest = std::max(highest, bucket["high"]["device_used"].get<std::int64_t>());
      const nlohmann::json& low = bucket.contains("low") ? bucket["low"] : bucket["high"];
      lowest = std::min(lowest, low["device_used"].get<std::int64_t>());
      const double begin = bucket["bucket"].get<double>() * width;
      EXPECT_GE(bucket["high"]["time"].get<double>(), begin);
      EXPECT_LT(bucket["high"]["time"].get<double>(), begin + width);
    }
    // The spike and the dip of rank 0 survive the downsampling, samples and all.
    EXPECT_EQ(highest, rank["rank"] == 0 ? 9000000 : 1009000);
    EXPECT_EQ(lowest, rank["rank"] == 0 ? 10 : 1000000);
    double train = 0;
    for (const nlohmann::json& bucket : rank["phases"]) train += bucket["seconds"].value("train", 0.0);
    EXPECT_NEAR(train, train_seconds, 1e-6 * train_seconds);
    EXPECT_LE(rank["phases"].size(), kDefaultHistoryBuckets);
  }
}

TEST(JobStateHistoryTest, a_bucket_keeps_its_lowest_and_highest_sample_through_merges) {
  JobState state(JobStateLimits{.memory_samples_per_rank = 2, .phases_per_rank = 2, .history_buckets = 4});
  const double t0 = 1024;  // bucket boundaries at multiples of the width
  for (int i = 0; i < 16; ++i) state.apply(testing::memory_event(t0 + i, 0, 0, i == 5 ? 500 : 100 + i, 1000, 0));
  const nlohmann::json history = state.status_json()["history"][0];
  EXPECT_EQ(history["memory_bucket_seconds"], 4.0);  // 16 s in at most 4 buckets
  ASSERT_EQ(history["memory"].size(), 4u);
  EXPECT_EQ(history["memory"][0]["low"]["device_used"], 100);
  EXPECT_EQ(history["memory"][1]["high"]["device_used"], 500);
  EXPECT_EQ(history["memory"][1]["high"]["time"], t0 + 5);
  EXPECT_EQ(history["memory"][1]["low"]["device_used"], 104);
  EXPECT_EQ(history["memory"][3]["high"]["device_used"], 115);
}

TEST(JobStateSinceTest, a_document_since_a_cursor_holds_only_what_changed) {
  SyntheticJob job;
  JobState state;
  apply_all(state, testing::job_opening(job));
  apply_all(state, testing::job_iteration(job, 0));
  const nlohmann::json full = state.status_json();
  const std::string cursor = full["cursor"];
  EXPECT_FALSE(full.contains("since"));
  EXPECT_EQ(full["kept"]["memory_per_rank"], 600);

  nlohmann::json delta = state.status_json_since(cursor);
  EXPECT_EQ(delta["since"], cursor);
  EXPECT_EQ(delta["cursor"], cursor);
  EXPECT_FALSE(delta.contains("job"));
  EXPECT_TRUE(delta["ranks"].empty());
  EXPECT_TRUE(delta["memory"].empty());
  EXPECT_TRUE(delta["phases"].empty());
  EXPECT_TRUE(delta["history"].empty());
  EXPECT_EQ(delta["state"], full["state"]);

  const double t = full["time"].get<double>() + 1;
  state.apply(testing::memory_event(t, 1, 0, 123, 1000, 100));
  delta = state.status_json_since(cursor);
  ASSERT_EQ(delta["ranks"].size(), 1u);
  EXPECT_EQ(delta["ranks"][0]["rank"], 1);
  EXPECT_EQ(delta["ranks"][0]["device_used"], 123);
  EXPECT_FALSE(delta["ranks"][0].contains("buffers"));  // unchanged
  ASSERT_EQ(delta["memory"].size(), 1u);
  EXPECT_EQ(delta["memory"][0]["time"], t);
  ASSERT_EQ(delta["history"].size(), 1u);
  EXPECT_EQ(delta["history"][0]["memory"].size(), 1u);
  EXPECT_TRUE(delta["history"][0]["phases"].empty());

  const std::string second = delta["cursor"];
  state.apply(testing::buffer_event(core::EventType::kResidency, t + 1, 0, 0, "rollout.kv_cache",
                                    core::BufferKind::kKvCache, 64, core::Residency::kNone, core::Residency::kGpu));
  state.apply(testing::phase_event(true, t + 2, 0, 1, "train"));
  delta = state.status_json_since(second);
  ASSERT_EQ(delta["ranks"].size(), 1u);
  EXPECT_EQ(delta["ranks"][0]["rank"], 0);
  EXPECT_EQ(delta["ranks"][0]["buffers"].size(), full["ranks"][0]["buffers"].size());
  ASSERT_EQ(delta["phases"].size(), 1u);
  EXPECT_TRUE(delta["phases"][0]["end"].is_null());
  EXPECT_TRUE(delta["memory"].empty());
  // The interval's end comes as a change of the same interval.
  const std::string third = delta["cursor"];
  state.apply(testing::phase_event(false, t + 3, 0, 1, "train", 1));
  delta = state.status_json_since(third);
  ASSERT_EQ(delta["phases"].size(), 1u);
  EXPECT_EQ(delta["phases"][0]["begin"], t + 2);
  EXPECT_EQ(delta["phases"][0]["end"], t + 3);
  ASSERT_EQ(delta["history"].size(), 1u);
  EXPECT_FALSE(delta["history"][0]["phases"].empty());  // the ended interval, in the buckets it overlaps
}

TEST(JobStateSinceTest, a_cursor_of_another_job_or_ahead_gives_the_whole_document) {
  JobState state;
  apply_all(state, testing::job_opening(SyntheticJob{}));
  JobState other;
  apply_all(other, testing::job_opening(SyntheticJob{}));
  const std::string theirs = other.status_json()["cursor"];
  const nlohmann::json answer = state.status_json_since(theirs);
  EXPECT_FALSE(answer.contains("since"));
  EXPECT_EQ(answer, state.status_json());
  const nlohmann::json full = state.status_json();
  std::string cursor = full["cursor"];
  const std::string ahead = cursor.substr(0, cursor.find('-') + 1) + "999999";
  EXPECT_EQ(state.status_json_since(ahead), full);
}

TEST(JobStateSinceTest, a_cursor_that_does_not_parse_is_refused) {
  JobState state;
  for (const std::string bad : {"", "12", "1-", "-1", "a-1", "1-2x", "1--2", "99999999999999999999999-1"}) {
    EXPECT_THROW(state.status_json_since(bad), core::Error) << bad;
    std::uint64_t epoch = 0;
    std::uint64_t sequence = 0;
    EXPECT_FALSE(parse_status_cursor(bad, &epoch, &sequence)) << bad;
  }
}

}  // namespace
}  // namespace hybridshard::service
