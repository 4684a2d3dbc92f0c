// One rendered answer of an endpoint, kept until the data behind it changes and is older than a given age, so that
// a scrape load costs the job's host a string copy per request instead of a render. Renders run on the cache's own
// thread, of normal stack size (the HTTP server's threads have small fixed stacks) and of the serving priority
// (idle by default: rendering, like serving, only uses CPU time the ranks leave). Requests that come while a render
// runs get the previous answer without waiting; at most one render runs at a time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "hybridshard/service/serve/http_server.h"

namespace hybridshard::service {

class ResponseCache {
 public:
  using Clock = std::chrono::steady_clock;

  // `max_age`: how old an answer may be when the data changed since it was rendered (0: always the newest data).
  // `wait`: how long a request waits for a render it needs; past it, get() throws core::Error.
  ResponseCache(std::function<std::string()> render, std::chrono::milliseconds max_age,
                ServePriority priority = ServePriority::kNormal,
                std::chrono::milliseconds wait = std::chrono::milliseconds(10000));
  ~ResponseCache();  // waits for a render in progress
  ResponseCache(const ResponseCache&) = delete;
  ResponseCache& operator=(const ResponseCache&) = delete;

  // The answer for data of `generation` (a counter the owner bumps on every change). When the cached answer is of an
  // older generation and older than max_age, the cache's thread renders and the caller waits for it, unless a render
  // is already running and there is an answer to give. A render's exception is rethrown to the requests that waited
  // for it; the previous answer stays.
  std::shared_ptr<const std::string> get(std::uint64_t generation);

  std::uint64_t renders() const;  // how many times it rendered (for tests and the load figures)

 private:
  void run();  // the cache's thread

  std::function<std::string()> render_;
  std::chrono::milliseconds max_age_;
  std::chrono::milliseconds wait_;
  ServePriority priority_;
  mutable std::mutex mutex_;  // guards the fields below, never held while rendering
  std::condition_variable work_;
  std::condition_variable done_;
  std::shared_ptr<const std::string> answer_;
  std::uint64_t answer_generation_ = 0;
  Clock::time_point rendered_at_;
  std::uint64_t wanted_generation_ = 0;  // the newest generation a request asked for
  std::uint64_t requested_ = 0;          // render requests so far (a request's ticket)
  std::uint64_t started_ = 0;            // requested_ when the running or last render started
  std::uint64_t finished_ = 0;           // started_ of the last render that finished or failed (a render runs
                                         // while started_ != finished_)
  std::exception_ptr last_error_;        // of the last render, if it failed
  bool stopping_ = false;
  std::uint64_t renders_ = 0;
  std::thread thread_;  // last: started once every field above is ready
};

}  // namespace hybridshard::service
