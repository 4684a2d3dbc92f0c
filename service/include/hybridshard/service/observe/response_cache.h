// One rendered answer of an endpoint, kept until the data behind it changes and is older than a given age, so that
// a scrape load costs the job's host a string copy per request instead of a render. Requests that come while
// another renders get the previous answer (at most one render per endpoint at a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace hybridshard::service {

class ResponseCache {
 public:
  using Clock = std::chrono::steady_clock;

  // `max_age`: how old an answer may be when the data changed since it was rendered (0: always the newest data).
  ResponseCache(std::function<std::string()> render, std::chrono::milliseconds max_age);

  // The answer for data of `generation` (a counter the owner bumps on every change). Renders on the calling thread
  // when the cached answer is of an older generation and older than max_age and no other thread renders it now.
  std::shared_ptr<const std::string> get(std::uint64_t generation);

  std::uint64_t renders() const;  // how many times it rendered (for tests and the load figures)

 private:
  std::function<std::string()> render_;
  std::chrono::milliseconds max_age_;
  mutable std::mutex mutex_;  // guards the fields below, never held while rendering
  std::shared_ptr<const std::string> answer_;
  std::uint64_t answer_generation_ = 0;
  Clock::time_point rendered_at_;
  bool rendering_ = false;
  std::uint64_t renders_ = 0;
};

}  // namespace hybridshard::service
