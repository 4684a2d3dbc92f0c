#include "hybridshard/service/serve/response_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <stdexcept>
#include <thread>

namespace hybridshard::service {
namespace {

using namespace std::chrono_literals;

TEST(ResponseCacheTest, renders_once_per_generation_with_no_max_age) {
  int value = 1;
  ResponseCache cache([&] { return "v" + std::to_string(value); }, 0ms);
  EXPECT_EQ(*cache.get(1), "v1");
  value = 2;
  EXPECT_EQ(*cache.get(1), "v1") << "same generation: the cached answer";
  EXPECT_EQ(*cache.get(2), "v2") << "new generation, max_age 0: rendered again";
  EXPECT_EQ(cache.renders(), 2u);
}

TEST(ResponseCacheTest, a_new_generation_within_max_age_gets_the_cached_answer_then_a_fresh_one) {
  int value = 1;
  ResponseCache cache([&] { return std::to_string(value); }, 200ms);
  EXPECT_EQ(*cache.get(1), "1");
  value = 2;
  EXPECT_EQ(*cache.get(2), "1") << "younger than max_age";
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(*cache.get(2), "2") << "older than max_age and the data changed";
  std::this_thread::sleep_for(250ms);
  EXPECT_EQ(*cache.get(2), "2");
  EXPECT_EQ(cache.renders(), 2u) << "old but unchanged data is not rendered again";
}

TEST(ResponseCacheTest, requests_during_a_render_get_the_previous_answer_without_waiting) {
  std::mutex mutex;
  std::condition_variable changed;
  bool release = false;
  bool in_render = false;
  int value = 1;
  ResponseCache cache(
      [&] {
        std::unique_lock<std::mutex> lock(mutex);
        if (value == 2) {
          in_render = true;
          changed.notify_all();
          changed.wait(lock, [&] { return release; });
        }
        return std::to_string(value);
      },
      0ms);
  EXPECT_EQ(*cache.get(1), "1");
  {
    std::lock_guard<std::mutex> lock(mutex);
    value = 2;
  }
  std::thread slow([&] { EXPECT_EQ(*cache.get(2), "2"); });
  {
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, 10s, [&] { return in_render; }));
  }
  for (int request = 0; request < 100; ++request) EXPECT_EQ(*cache.get(2), "1");
  {
    std::lock_guard<std::mutex> lock(mutex);
    release = true;
  }
  changed.notify_all();
  slow.join();
  EXPECT_EQ(*cache.get(2), "2");
  EXPECT_EQ(cache.renders(), 2u);
}

TEST(ResponseCacheTest, a_failed_render_throws_keeps_the_old_answer_and_the_next_request_renders) {
  bool fail = false;
  int value = 1;
  ResponseCache cache(
      [&]() -> std::string {
        if (fail) throw std::runtime_error("render broke");
        return std::to_string(value);
      },
      0ms);
  EXPECT_EQ(*cache.get(1), "1");
  fail = true;
  value = 2;
  EXPECT_THROW(cache.get(2), std::runtime_error);
  EXPECT_EQ(*cache.get(1), "1");
  fail = false;
  EXPECT_EQ(*cache.get(2), "2");
}

TEST(ResponseCacheTest, many_threads_under_a_stream_of_changes_see_only_whole_answers) {
  std::atomic<std::uint64_t> generation{1};
  ResponseCache cache([&] { return std::string(1000, static_cast<char>('a' + generation.load() % 26)); }, 1ms);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int thread = 0; thread < 8; ++thread) {
    readers.emplace_back([&] {
      while (!stop) {
        std::shared_ptr<const std::string> answer = cache.get(generation.load());
        if (answer->size() != 1000 || answer->find_first_not_of(answer->front()) != std::string::npos) ++bad;
      }
    });
  }
  for (int change = 0; change < 2000; ++change) {
    generation.fetch_add(1);
    std::this_thread::sleep_for(50us);
  }
  stop = true;
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(cache.renders(), 1u);
}

}  // namespace
}  // namespace hybridshard::service
