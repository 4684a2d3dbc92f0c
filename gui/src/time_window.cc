#include "time_window.h"

#include <algorithm>
#include <cmath>

namespace hybridshard::gui {

namespace {

// `span` moved and shortened as needed to lie inside [0, max(job_end, its length)].
TimeSpan clamped(TimeSpan span, double job_end) {
  const double length =
      std::clamp(span.length(), TimeWindow::kMinimumSeconds, std::max(job_end, TimeWindow::kMinimumSeconds));
  double begin = std::clamp(span.begin, 0.0, std::max(0.0, job_end - length));
  if (!std::isfinite(begin)) begin = 0;
  return TimeSpan{begin, begin + length};
}

}  // namespace

void TimeWindow::show_whole_job() {
  last_seconds_ = 0;
  manual_ = false;
}

void TimeWindow::show_last(double seconds) {
  last_seconds_ = std::max(seconds, kMinimumSeconds);
  manual_ = false;
}

void TimeWindow::zoom(double factor, double anchor, double job_end) {
  const TimeSpan now = span(job_end);
  if (!(factor > 0) || !std::isfinite(factor)) return;
  anchor = std::clamp(anchor, now.begin, now.end);
  TimeSpan next{anchor - (anchor - now.begin) * factor, anchor + (now.end - anchor) * factor};
  if (next.length() < kMinimumSeconds) {  // keep the anchor's place while stopping at the deepest zoom
    const double share = now.length() > 0 ? (anchor - now.begin) / now.length() : 0.5;
    next = TimeSpan{anchor - share * kMinimumSeconds, anchor + (1 - share) * kMinimumSeconds};
  }
  manual_span_ = clamped(next, job_end);
  manual_ = true;
}

void TimeWindow::pan(double seconds, double job_end) {
  const TimeSpan now = span(job_end);
  if (!std::isfinite(seconds)) return;
  manual_span_ = clamped(TimeSpan{now.begin + seconds, now.end + seconds}, job_end);
  manual_ = true;
}

TimeSpan TimeWindow::span(double job_end) const {
  job_end = std::max(job_end, kMinimumSeconds);
  if (manual_) return manual_span_;
  if (last_seconds_ <= 0) return TimeSpan{0, job_end};
  return TimeSpan{std::max(0.0, job_end - last_seconds_), job_end};
}

}  // namespace hybridshard::gui
