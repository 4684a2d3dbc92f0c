// A whole job's history of a time series in bounded memory: buckets on a grid of power-of-two widths. Bucket `i`
// at width `w` covers [i·w, (i+1)·w) seconds since the Unix epoch. The buckets from the first to the last span at
// most `max_buckets` indices: when a time outside would make them span more, the width doubles and neighbouring
// pairs merge (Bucket::merge), until it fits. So the history always covers everything added, at a resolution of
// about span / max_buckets, and holds at most max_buckets buckets whatever the job's length.
//
// Header-only and standard C++ only: the fold (service/src/observe/job_state.cc) and the dashboard's replay
// (gui/src/run_record.cc, which links no core) both downsample with it, so a replayed record and the live status
// have the same buckets (tests/gui/tst_foldcontract.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>

namespace hybridshard::service {

inline constexpr std::size_t kDefaultHistoryBuckets = 256;
inline constexpr double kFirstHistoryBucketSeconds = 1.0;

// `Bucket` needs `void merge(const Bucket& later)`: fold a later neighbour into this one.
template <typename Bucket>
class BucketedHistory {
 public:
  BucketedHistory() : BucketedHistory(kDefaultHistoryBuckets) {}
  explicit BucketedHistory(std::size_t max_buckets, double first_width = kFirstHistoryBucketSeconds)
      : max_buckets_(max_buckets < 2 ? 2 : max_buckets), width_(first_width) {}

  double width() const { return width_; }
  std::size_t max_buckets() const { return max_buckets_; }
  // A time no job has (beyond ±2^52 bucket widths, or not a number: a bogus record line) lands on the grid's edge
  // instead of overflowing the index; the width then grows until it fits, as for any far-off time.
  std::int64_t index_of(double time) const {
    constexpr double kEdge = 4503599627370496.0;  // 2^52: exact in a double and far inside int64
    const double index = std::floor(time / width_);
    if (std::isnan(index)) return 0;
    return static_cast<std::int64_t>(std::clamp(index, -kEdge, kEdge));
  }
  double begin_of(std::int64_t index) const { return static_cast<double>(index) * width_; }
  double end_of(std::int64_t index) const { return static_cast<double>(index + 1) * width_; }
  const std::map<std::int64_t, Bucket>& buckets() const { return buckets_; }
  std::map<std::int64_t, Bucket>& buckets() { return buckets_; }

  // Widens until [begin, end] fits beside the buckets there are. Returns true when the width changed (every bucket
  // index changed with it).
  bool cover(double begin, double end) {
    bool widened = false;
    while (!fits(begin, end)) {
      widen();
      widened = true;
    }
    return widened;
  }

  // Spreads the interval [begin, end] over the buckets it overlaps, widening first: add(bucket, seconds) for each,
  // with the seconds of the overlap (an instant, begin == end, goes to its one bucket with 0). Returns true when
  // the width changed.
  template <typename Add>
  bool spread(double begin, double end, Add&& add) {
    const bool widened = cover(begin, end);
    for (std::int64_t index = index_of(begin); index <= index_of(end); ++index) {
      const double overlap = std::min(end, end_of(index)) - std::max(begin, begin_of(index));
      if (overlap <= 0 && begin != end) continue;
      add(at(index), std::max(overlap, 0.0));
    }
    return widened;
  }

  // Empties the history and sets its width: for a reader that mirrors another history (the dashboard reading a
  // status document takes the service's widths and buckets as they come).
  void clear(double width) {
    buckets_.clear();
    width_ = width;
  }

  // The bucket of index `index` (created empty if absent); `index` must lie within what cover() made fit.
  Bucket& at(std::int64_t index) { return buckets_[index]; }

 private:
  bool fits(double begin, double end) const {
    std::int64_t low = index_of(begin);
    std::int64_t high = index_of(end);
    if (!buckets_.empty()) {
      low = std::min(low, buckets_.begin()->first);
      high = std::max(high, buckets_.rbegin()->first);
    }
    return high - low < static_cast<std::int64_t>(max_buckets_);
  }

  void widen() {
    width_ *= 2;
    std::map<std::int64_t, Bucket> merged;
    for (auto& [index, bucket] : buckets_) {
      // Floor division: bucket -1 at width w lies in bucket -1 at width 2w.
      const std::int64_t parent = index >= 0 ? index / 2 : -((-index + 1) / 2);
      auto [slot, inserted] = merged.try_emplace(parent, std::move(bucket));
      if (!inserted) slot->second.merge(bucket);
    }
    buckets_ = std::move(merged);
  }

  std::size_t max_buckets_;
  double width_;
  std::map<std::int64_t, Bucket> buckets_;
};

}  // namespace hybridshard::service
