#include "hybridshard/service/serve/observer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "event_sequence.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/config/job_config.h"
#include "metrics_text.h"
#include "test_http_client.h"

namespace hybridshard::service {
namespace {

namespace fs = std::filesystem;
using testing::SyntheticJob;

class ObserverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hybridshard-observer-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

TEST_F(ObserverTest, serves_status_metrics_and_health_on_one_port) {
  SyntheticJob job;
  ObserverOptions options;
  options.listen = "127.0.0.1:0";
  Observer observer(options);
  ASSERT_GT(observer.port(), 0);
  for (const nlohmann::json& event : testing::job_opening(job)) observer.on_event(event);
  for (const nlohmann::json& event : testing::job_iteration(job, 0)) observer.on_event(event);

  auto status = testing::http_get(observer.port(), "/status");
  ASSERT_EQ(status.status, 200);
  nlohmann::json parsed = nlohmann::json::parse(status.body);
  EXPECT_EQ(parsed["state"], "running");
  EXPECT_EQ(parsed["ranks"].size(), 2u);
  EXPECT_EQ(parsed["ranks"][1]["buffers"].size(), 6u);

  auto metrics = testing::http_get(observer.port(), "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.head.find("text/plain; version=0.0.4"), std::string::npos) << metrics.head;
  EXPECT_EQ(testing::sample_value(metrics.body, "hybridshard_moved_bytes_total", {{"rank", "0"}, {"path", "network"}}),
            job.network_bytes);

  auto health = testing::http_get(observer.port(), "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");
  EXPECT_EQ(testing::http_get(observer.port(), "/metrics/").status, 404);
}

TEST_F(ObserverTest, status_since_a_cursor_answers_the_changes_and_refuses_a_bad_cursor) {
  SyntheticJob job;
  ObserverOptions options;
  options.listen = "127.0.0.1:0";
  Observer observer(options);
  for (const nlohmann::json& event : testing::job_opening(job)) observer.on_event(event);
  const nlohmann::json full = nlohmann::json::parse(testing::http_get(observer.port(), "/status").body);
  const std::string cursor = full["cursor"];
  for (const nlohmann::json& event : testing::job_iteration(job, 0)) observer.on_event(event);

  // Not held back by the cache of the whole document: the answer has the events applied since.
  auto answer = testing::http_get(observer.port(), "/status?since=" + cursor);
  ASSERT_EQ(answer.status, 200);
  const nlohmann::json delta = nlohmann::json::parse(answer.body);
  EXPECT_EQ(delta["since"], cursor);
  EXPECT_EQ(delta, observer.state().status_json_since(cursor));
  EXPECT_FALSE(delta["memory"].empty());
  EXPECT_LT(answer.body.size(), observer.state().status_json().dump().size());

  answer = testing::http_get(observer.port(), "/status?since=yesterday");
  EXPECT_EQ(answer.status, 400);
  EXPECT_NE(answer.body.find("since=yesterday: not a cursor"), std::string::npos) << answer.body;
}

TEST_F(ObserverTest, a_scrape_load_renders_each_endpoint_at_most_once_per_max_age_and_sees_the_newest_data) {
  SyntheticJob job;
  ObserverOptions options;
  options.listen = "127.0.0.1:0";
  options.max_age = std::chrono::milliseconds(100);
  Observer observer(options);
  for (const nlohmann::json& event : testing::job_opening(job)) observer.on_event(event);
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> scrapers;
  for (int thread = 0; thread < 4; ++thread) {
    scrapers.emplace_back([&, thread] {
      while (!stop) {
        try {
          const int status = testing::http_get(observer.port(), thread % 2 ? "/metrics" : "/status").status;
          ++(status == 200 ? answered : failed);
        } catch (const std::exception&) {
          ++failed;
        }
      }
    });
  }
  // Events all along: without the cache every request would render.
  const auto started = std::chrono::steady_clock::now();
  int iterations = 0;
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(1) || answered < 200) {
    for (const nlohmann::json& event : testing::job_iteration(job, iterations)) observer.on_event(event);
    ++iterations;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (std::thread& scraper : scrapers) scraper.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(failed.load(), 0);
  // Each endpoint: one render per 100 ms at most, plus the first; two endpoints.
  EXPECT_LE(observer.renders(), static_cast<std::uint64_t>(2 * (seconds / 0.1 + 2)))
      << answered << " answers in " << seconds << " s";
  EXPECT_LT(observer.renders(), static_cast<std::uint64_t>(answered.load()));

  // Once max_age has passed, the answer holds every event applied.
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  const nlohmann::json status = nlohmann::json::parse(testing::http_get(observer.port(), "/status").body);
  EXPECT_EQ(status, nlohmann::json::parse(observer.status_json().dump()));
}

TEST_F(ObserverTest, records_every_event_with_memory_by_kind_filled_in) {
  SyntheticJob job;
  const std::string record = (dir_ / "run.jsonl").string();
  ObserverOptions options;
  options.record = record;
  std::size_t count = 0;
  {
    Observer observer(options);
    EXPECT_EQ(observer.port(), 0);
    for (const nlohmann::json& event : testing::job_opening(job)) observer.on_event(event), ++count;
    for (const nlohmann::json& event : testing::job_iteration(job, 0)) observer.on_event(event), ++count;
    observer.on_event(job_end_event(true, "", 10, job.start + 30)), ++count;
    observer.close();
  }
  RecordReader reader = RecordReader::open(record);
  std::vector<nlohmann::json> events = reader.read_all();
  EXPECT_TRUE(reader.complete());
  ASSERT_EQ(events.size(), count);
  EXPECT_EQ(events.front()["type"], "job");
  bool saw_memory = false;
  for (const nlohmann::json& event : events) {
    if (event["type"] != "memory") continue;
    saw_memory = true;
    ASSERT_TRUE(event.contains("by_kind")) << event.dump();
    EXPECT_EQ(event["by_kind"]["params"], job.params_bytes);
  }
  EXPECT_TRUE(saw_memory);

  // A replay of the record gives the same status as the live run.
  JobState replayed;
  for (const nlohmann::json& event : events) replayed.apply(event);
  EXPECT_EQ(replayed.state(), "finished");
  EXPECT_EQ(replayed.status_json()["ranks"][1]["last_enter_network_bytes"], job.network_bytes);
}

TEST_F(ObserverTest, a_bad_line_is_an_error_naming_its_source_and_is_not_recorded) {
  ObserverOptions options;
  options.record = (dir_ / "run.jsonl").string();
  Observer observer(options);
  observer.on_line(testing::job_opening(SyntheticJob{})[0].dump(), "rank 0");
  try {
    observer.on_line("{\"type\": \"transfer\"", "rank 3");
    FAIL() << "no error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("rank 3"), std::string::npos) << error.what();
  }
  EXPECT_THROW(observer.on_line("{\"type\": \"transfer\", \"time\": 1}", "rank 3"), core::Error);
  observer.close();
  EXPECT_EQ(RecordReader::open(options.record).read_all().size(), 1u);
}

TEST_F(ObserverTest, engine_events_go_in_through_the_event_sink_interface) {
  Observer observer(ObserverOptions{});
  core::EventSink& sink = observer;
  core::Event event;
  event.type = core::EventType::kPhaseBegin;
  event.time = 5.0;
  event.rank = 0;
  event.iteration = 2;
  event.phase = "enter";
  sink.on_event(event);
  EXPECT_EQ(observer.status_json()["ranks"][0]["phase"], "enter");
}

TEST_F(ObserverTest, options_come_from_the_jobs_metrics_section) {
  MetricsConfig metrics;
  metrics.listen = "127.0.0.1:0";
  metrics.record = "out.jsonl";
  ObserverOptions options = observer_options(metrics);
  EXPECT_EQ(options.listen, "127.0.0.1:0");
  EXPECT_EQ(options.record, "out.jsonl");
  EXPECT_EQ(options.http.priority, ServePriority::kIdle);
  EXPECT_EQ(options.http.max_requests_per_second, 50.0);
  metrics.serve_priority = "normal";
  EXPECT_EQ(observer_options(metrics).http.priority, ServePriority::kNormal);
}

}  // namespace
}  // namespace hybridshard::service
