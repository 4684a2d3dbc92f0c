// The jobs of `hybridshard serve` (JobDirectory): several at once, each its own fold and record; a second live job
// with a running job's name is refused; a job ends when its ranks leave and stays visible until the retention passes.
#include "hybridshard/service/serve/job_directory.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "event_sequence.h"
#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/events/stream_event_sink.h"
#include "hybridshard/service/observe/record.h"
#include "hybridshard/service/serve/metrics.h"
#include "metrics_text.h"

namespace hybridshard::service {
namespace {

using testing::SyntheticJob;

StreamHello hello(const std::string& job, int rank, const std::string& instance, int world_size = 2) {
  StreamHello result;
  result.job = job;
  result.rank = rank;
  result.pid = 100 + rank;
  result.world_size = world_size;
  result.instance = instance;
  return result;
}

// Feeds the synthetic job's events of `rank` (the job event from rank 0) through the directory.
void feed(JobDirectory& directory, const std::string& name, const std::string& instance,
          const std::vector<nlohmann::json>& events) {
  for (const nlohmann::json& json : events) {
    JobEvent event = decode_event(json);
    const int rank = event.has_rank() ? event.rank() : 0;
    directory.deliver(hello(name, rank, instance), std::move(event));
  }
}

std::shared_ptr<const ObservedJob> job_named(const JobDirectory& directory, const std::string& name) {
  for (const auto& job : directory.jobs()) {
    if (job->name() == name) return job;
  }
  return nullptr;
}

class JobDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("hybridshard-directory-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(JobDirectoryTest, two_jobs_at_once_each_with_its_state_record_and_job_label) {
  JobDirectoryOptions options;
  options.record_dir = dir_.string();
  JobDirectory directory(options);
  SyntheticJob job;
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(directory.admit(hello("torch", rank, "torchrun:1")), "");
    ASSERT_EQ(directory.admit(hello("slurm", rank, "slurm:7.0")), "");
  }
  feed(directory, "torch", "torchrun:1", testing::job_opening(job));
  feed(directory, "torch", "torchrun:1", testing::job_iteration(job, 0));
  feed(directory, "slurm", "slurm:7.0", testing::job_opening(job));

  ASSERT_EQ(directory.jobs().size(), 2u);
  EXPECT_EQ(job_named(directory, "torch")->state().status_json()["iteration"], 0);
  EXPECT_EQ(job_named(directory, "slurm")->state().status_json()["iteration"], -1);
  std::vector<MetricsJob> jobs;
  for (const auto& listed : directory.jobs()) jobs.push_back({listed->name(), &listed->state()});
  const std::string text = metrics_text(jobs);
  EXPECT_EQ(testing::sample_value(text, "hybridshard_iteration", {{"job", "torch"}, {"rank", "1"}}), 0.0);
  EXPECT_EQ(testing::sample_value(text, "hybridshard_iteration", {{"job", "slurm"}, {"rank", "1"}}), -1.0);
  EXPECT_EQ(directory.describe(*job_named(directory, "slurm"))["instance"], "slurm:7.0");
  EXPECT_NE(job_named(directory, "torch")->record_path(), job_named(directory, "slurm")->record_path());
}

TEST_F(JobDirectoryTest, a_second_live_job_with_the_same_name_is_refused_clearly) {
  JobDirectory directory(JobDirectoryOptions{});
  ASSERT_EQ(directory.admit(hello("train", 0, "torchrun:1")), "");
  const std::string refusal = directory.admit(hello("train", 0, "torchrun:2"));
  EXPECT_NE(refusal.find("a job named 'train' is already running"), std::string::npos) << refusal;
  EXPECT_NE(refusal.find("HYBRIDSHARD_JOB"), std::string::npos) << refusal;
  EXPECT_NE(directory.admit(hello("train", 0, "torchrun:1")).find("already connected"), std::string::npos);
  EXPECT_NE(directory.admit(hello("train", 5, "torchrun:1")).find("outside"), std::string::npos);
  EXPECT_NE(directory.admit(hello("bad name!", 0, "x")).find("job name"), std::string::npos);
  EXPECT_NE(directory.admit(hello("", 0, "x")).find("HYBRIDSHARD_JOB"), std::string::npos);
  EXPECT_EQ(directory.jobs().size(), 1u);
}

// The first rank of a job fixes its secret; a connection that claims a rank of that job without it is refused (it
// could forge the job's events), one with it is admitted.
TEST_F(JobDirectoryTest, a_jobs_secret_is_fixed_by_its_first_rank_and_required_of_the_others) {
  JobDirectory directory(JobDirectoryOptions{});
  StreamHello first = hello("llama", 0, "torchrun:1");
  first.secret = "s3cret";
  EXPECT_EQ(directory.admit(first), "");
  StreamHello forged = hello("llama", 1, "torchrun:1");
  EXPECT_NE(directory.admit(forged).find("wrong or missing secret for job 'llama'"), std::string::npos);
  forged.secret = "guess";
  EXPECT_NE(directory.admit(forged).find("wrong or missing secret"), std::string::npos);
  StreamHello second = hello("llama", 1, "torchrun:1");
  second.secret = "s3cret";
  EXPECT_EQ(directory.admit(second), "") << "the refusals did not take rank 1";
  // A job started without a secret admits its ranks without one (jobs under external launchers may have none).
  EXPECT_EQ(directory.admit(hello("open", 0, "torchrun:2")), "");
  EXPECT_EQ(directory.admit(hello("open", 1, "torchrun:2")), "");
}

TEST_F(JobDirectoryTest, a_job_ends_when_its_ranks_leave_and_stays_until_the_retention_passes) {
  JobDirectoryOptions options;
  options.record_dir = dir_.string();
  options.retention = std::chrono::seconds(60);
  std::vector<std::string> log;
  options.log = [&log](const std::string& line) { log.push_back(line); };
  JobDirectory directory(options);
  SyntheticJob job;
  for (int rank = 0; rank < 2; ++rank) ASSERT_EQ(directory.admit(hello("done", rank, "a")), "");
  feed(directory, "done", "a", testing::job_opening(job));
  feed(directory, "done", "a", testing::job_iteration(job, 0));
  feed(directory, "done", "a", testing::job_iteration(job, 1));  // the job's 2 iterations
  directory.left(hello("done", 0, "a"));
  EXPECT_EQ(job_named(directory, "done")->state().state(), "running");
  directory.left(hello("done", 1, "a"));
  const auto ended = job_named(directory, "done");
  ASSERT_NE(ended, nullptr);
  EXPECT_EQ(ended->state().state(), "finished");
  EXPECT_EQ(ended->state().status_json()["message"], "all 2 ranks finished");
  EXPECT_EQ(directory.describe(*ended)["live"], false);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_NE(log[0].find("job 'done' opened by rank 0 (run a)"), std::string::npos) << log[0];
  EXPECT_EQ(log[1], "job 'done' finished: all 2 ranks finished");
  RecordReader reader = RecordReader::open(ended->record_path());
  reader.read_all();
  EXPECT_TRUE(reader.complete());

  directory.sweep(JobDirectory::Clock::now() + std::chrono::seconds(30));
  EXPECT_EQ(directory.jobs().size(), 1u);
  directory.sweep(JobDirectory::Clock::now() + std::chrono::seconds(61));
  EXPECT_TRUE(directory.jobs().empty());
  // The name is free again.
  EXPECT_EQ(directory.admit(hello("done", 0, "b")), "");
}

TEST_F(JobDirectoryTest, a_rank_that_leaves_mid_phase_fails_the_job_and_a_silent_one_is_marked_down) {
  JobDirectoryOptions options;
  options.timeout = std::chrono::seconds(5);
  JobDirectory directory(options);
  SyntheticJob job;
  for (int rank = 0; rank < 2; ++rank) ASSERT_EQ(directory.admit(hello("crash", rank, "a")), "");
  feed(directory, "crash", "a", testing::job_opening(job));
  feed(directory, "crash", "a", {testing::phase_event(true, job.start + 20, 1, 0, "enter")});

  directory.sweep(JobDirectory::Clock::now() + std::chrono::seconds(6));  // both silent for 6 s
  nlohmann::json status = job_named(directory, "crash")->state().status_json();
  EXPECT_FALSE(status["ranks"][0]["up"].get<bool>());
  EXPECT_NE(status["ranks"][0]["down_reason"].get<std::string>().find("stopped answering"), std::string::npos);

  directory.left(hello("crash", 1, "a"));
  directory.left(hello("crash", 0, "a"));
  status = job_named(directory, "crash")->state().status_json();
  EXPECT_EQ(status["state"], "failed");
  EXPECT_NE(status["message"].get<std::string>().find("rank 0"), std::string::npos) << status["message"];
}

TEST_F(JobDirectoryTest, an_unreachable_serve_is_said_once_and_the_rank_goes_on) {
  std::ostringstream warnings;
  auto stream = connect_event_stream("127.0.0.1:1", hello("x", 0, "a"), std::chrono::milliseconds(200),
                                     /*required=*/false, warnings);
  EXPECT_EQ(stream, nullptr);
  const std::string said = warnings.str();
  EXPECT_NE(said.find("the job goes on without reporting its events"), std::string::npos) << said;
  EXPECT_EQ(std::count(said.begin(), said.end(), '\n'), 1) << said;
  StreamEventSink sink(0, std::move(stream), nullptr);
  core::Event event;
  event.type = core::EventType::kPhaseBegin;
  sink.on_event(event);  // nowhere to go, no error
  EXPECT_FALSE(sink.streaming());
}

}  // namespace
}  // namespace hybridshard::service
