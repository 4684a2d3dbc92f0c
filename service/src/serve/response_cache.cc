#include "hybridshard/service/serve/response_cache.h"

#include <utility>

#include "hybridshard/core/error.h"

namespace hybridshard::service {

ResponseCache::ResponseCache(std::function<std::string()> render, std::chrono::milliseconds max_age,
                             ServePriority priority, std::chrono::milliseconds wait)
    : render_(std::move(render)), max_age_(max_age), wait_(wait), priority_(priority), thread_([this] { run(); }) {}

ResponseCache::~ResponseCache() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();
}

std::shared_ptr<const std::string> ResponseCache::get(std::uint64_t generation) {
  std::unique_lock<std::mutex> lock(mutex_);
  const bool fresh = answer_ && (answer_generation_ >= generation || Clock::now() - rendered_at_ < max_age_);
  const bool rendering = started_ != finished_;
  if (fresh || (answer_ && rendering)) return answer_;
  if (generation > wanted_generation_) wanted_generation_ = generation;
  const std::uint64_t ticket = ++requested_;  // served by the first render that starts from now on
  work_.notify_one();
  if (!done_.wait_for(lock, wait_, [&] { return finished_ >= ticket || stopping_; }) || stopping_) {
    HS_THROW(core::Error, "the answer was not rendered within " + std::to_string(wait_.count()) + " ms");
  }
  if (last_error_ && (!answer_ || answer_generation_ < generation)) std::rethrow_exception(last_error_);
  return answer_;
}

std::uint64_t ResponseCache::renders() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return renders_;
}

void ResponseCache::run() {
  apply_serve_priority(priority_);
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || requested_ > started_; });
    if (stopping_) return;
    started_ = requested_;
    const std::uint64_t generation = wanted_generation_;
    lock.unlock();
    std::shared_ptr<const std::string> answer;
    std::exception_ptr error;
    try {
      answer = std::make_shared<const std::string>(render_());
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    last_error_ = error;
    if (answer) {
      ++renders_;
      answer_ = std::move(answer);
      answer_generation_ = generation;
      rendered_at_ = Clock::now();
    }
    finished_ = started_;
    done_.notify_all();
  }
}

}  // namespace hybridshard::service
