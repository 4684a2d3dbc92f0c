#include "hybridshard/service/observe/response_cache.h"

#include <utility>

namespace hybridshard::service {

ResponseCache::ResponseCache(std::function<std::string()> render, std::chrono::milliseconds max_age)
    : render_(std::move(render)), max_age_(max_age) {}

std::shared_ptr<const std::string> ResponseCache::get(std::uint64_t generation) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool fresh = answer_ && (answer_generation_ == generation || Clock::now() - rendered_at_ < max_age_);
    if (fresh || (answer_ && rendering_)) return answer_;
    rendering_ = true;
  }
  std::shared_ptr<const std::string> answer;
  try {
    answer = std::make_shared<const std::string>(render_());
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    rendering_ = false;
    throw;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  rendering_ = false;
  ++renders_;
  // Two first renders can race (no answer yet): keep the newer generation.
  if (!answer_ || generation >= answer_generation_) {
    answer_ = answer;
    answer_generation_ = generation;
    rendered_at_ = Clock::now();
  }
  return answer;
}

std::uint64_t ResponseCache::renders() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return renders_;
}

}  // namespace hybridshard::service
