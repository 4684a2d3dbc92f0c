#include "job_history.h"

#include <QStringList>
#include <algorithm>
#include <cmath>
#include <limits>

namespace hybridshard::gui {
namespace {

// The fold's comparison: by device_used, then tracked.
bool lower(const MemorySample& a, const MemorySample& b) {
  return a.device_used != b.device_used ? a.device_used < b.device_used : a.tracked < b.tracked;
}

bool same_sample(const MemorySample& a, const MemorySample& b) {
  return a.time == b.time && a.device_used == b.device_used && a.tracked == b.tracked &&
         a.device_total == b.device_total && a.by_kind == b.by_kind;
}

const QStringList& standard_phases() {
  static const QStringList phases = {QStringLiteral("init"),    QStringLiteral("train"), QStringLiteral("enter"),
                                     QStringLiteral("rollout"), QStringLiteral("exit"),  QStringLiteral("shutdown")};
  return phases;
}

// A bucket's phases in the order the band shows them: the standard ones in their order, then others by name.
QStringList phase_order(const QMap<QString, double>& seconds) {
  QStringList order;
  for (const QString& phase : standard_phases()) {
    if (seconds.contains(phase)) order << phase;
  }
  for (auto it = seconds.begin(); it != seconds.end(); ++it) {
    if (!standard_phases().contains(it.key())) order << it.key();  // QMap: by name
  }
  return order;
}

}  // namespace

void MemoryBucket::add(const MemorySample& sample) {
  if (empty || lower(sample, low)) low = sample;
  if (empty || lower(high, sample)) high = sample;
  empty = false;
}

void MemoryBucket::merge(const MemoryBucket& later) {
  if (later.empty) return;
  add(later.low);
  add(later.high);
}

void PhaseBucket::merge(const PhaseBucket& later) {
  for (auto it = later.seconds.begin(); it != later.seconds.end(); ++it) seconds[it.key()] += it.value();
  iteration = std::max(iteration, later.iteration);
}

JobHistory::RankHistory& JobHistory::rank_history(int rank) {
  auto [it, inserted] = ranks_.try_emplace(rank);
  if (inserted) {
    const auto buckets = static_cast<std::size_t>(std::max(limits_.history_buckets, 2));
    it->second.memory_history = service::BucketedHistory<MemoryBucket>(buckets);
    it->second.phase_history = service::BucketedHistory<PhaseBucket>(buckets);
    for (const QString& phase : standard_phases()) it->second.phase_names.insert(phase);
  }
  return it->second;
}

void JobHistory::trim(RankHistory& history) const {
  while (static_cast<int>(history.memory.size()) > limits_.memory_per_rank) history.memory.pop_front();
  while (static_cast<int>(history.phases.size()) > limits_.phases_per_rank) history.phases.pop_front();
}

bool JobHistory::count_phase_name(RankHistory& history, const QString& name) const {
  if (history.phase_names.contains(name)) return true;
  if (history.phase_names.size() >= limits_.phase_names_per_rank) return false;
  history.phase_names.insert(name);
  return true;
}

void JobHistory::apply(const SeriesChanges& changes) {
  for (const MemorySample& sample : changes.memory) rank_history(sample.rank).memory.push_back(sample);
  for (const PhaseInterval& phase : changes.phases) {
    std::deque<PhaseInterval>& phases = rank_history(phase.rank).phases;
    auto same = std::find_if(phases.rbegin(), phases.rend(), [&](const PhaseInterval& held) {
      return held.phase == phase.phase && held.begin == phase.begin;
    });
    if (same != phases.rend()) {
      *same = phase;
    } else {
      phases.push_back(phase);
    }
  }
  for (const RankHistoryChanges& changed : changes.history) {
    RankHistory& history = rank_history(changed.rank);
    if (history.memory_history.width() != changed.memory_bucket_seconds) {
      history.memory_history.clear(changed.memory_bucket_seconds);
    }
    if (history.phase_history.width() != changed.phase_bucket_seconds) {
      history.phase_history.clear(changed.phase_bucket_seconds);
    }
    for (const auto& [index, bucket] : changed.memory) history.memory_history.buckets()[index] = bucket;
    for (const auto& [index, bucket] : changed.phases) history.phase_history.buckets()[index] = bucket;
  }
  for (auto& [rank, history] : ranks_) trim(history);
}

void JobHistory::add_sample(const MemorySample& sample) {
  RankHistory& history = rank_history(sample.rank);
  history.memory.push_back(sample);
  history.memory_history.cover(sample.time, sample.time);
  history.memory_history.at(history.memory_history.index_of(sample.time)).add(sample);
  trim(history);
}

void JobHistory::begin_phase(int rank, int iteration, const QString& phase, double time) {
  RankHistory& history = rank_history(rank);
  count_phase_name(history, phase);
  history.phases.push_back(PhaseInterval{rank, iteration, phase, time, -1});
  trim(history);
}

void JobHistory::end_phase(int rank, int iteration, const QString& phase, double time, double seconds) {
  RankHistory& history = rank_history(rank);
  const bool counted = count_phase_name(history, phase);
  auto open = std::find_if(history.phases.rbegin(), history.phases.rend(),
                           [&](const PhaseInterval& held) { return held.phase == phase && held.end < 0; });
  PhaseInterval ended;
  if (open != history.phases.rend()) {
    open->end = time;
    ended = *open;
  } else {
    ended = PhaseInterval{rank, iteration, phase, time - seconds, time};
    history.phases.push_back(ended);
  }
  if (counted) add_to_history(history, ended);
  trim(history);
}

// The fold's rule (service/src/observe/job_state.cc): the interval's seconds in each bucket it overlaps.
void JobHistory::add_to_history(RankHistory& history, const PhaseInterval& interval) {
  history.phase_history.spread(std::min(interval.begin, interval.end), interval.end,
                               [&](PhaseBucket& bucket, double seconds) {
                                 bucket.seconds[interval.phase] += seconds;
                                 bucket.iteration = std::max(bucket.iteration, interval.iteration);
                               });
}

void JobHistory::compose(QVector<MemorySample>* memory, QVector<PhaseInterval>* phases) const {
  memory->clear();
  phases->clear();
  constexpr double kNever = std::numeric_limits<double>::infinity();
  for (const auto& [rank, history] : ranks_) {
    double first_recent = kNever;
    for (const MemorySample& sample : history.memory) first_recent = std::min(first_recent, sample.time);
    for (const auto& [index, bucket] : history.memory_history.buckets()) {
      if (bucket.empty) continue;
      const bool low_first = bucket.low.time <= bucket.high.time;
      const MemorySample& first = low_first ? bucket.low : bucket.high;
      const MemorySample& second = low_first ? bucket.high : bucket.low;
      const bool one = same_sample(bucket.low, bucket.high);
      for (const MemorySample* sample : {&first, &second}) {
        if (one && sample == &second) continue;
        if (sample->time >= first_recent) continue;
        MemorySample coarse = *sample;
        coarse.rank = rank;
        coarse.coarse = true;
        memory->push_back(std::move(coarse));
      }
    }
    for (const MemorySample& sample : history.memory) memory->push_back(sample);

    double first_interval = kNever;
    for (const PhaseInterval& phase : history.phases) first_interval = std::min(first_interval, phase.begin);
    // Only buckets that end before the first recent interval: the recent ones show the rest as it happened.
    for (const auto& [index, bucket] : history.phase_history.buckets()) {
      if (history.phase_history.end_of(index) > first_interval) break;
      double begin = history.phase_history.begin_of(index);
      for (const QString& name : phase_order(bucket.seconds)) {
        const double seconds = bucket.seconds.value(name);
        if (seconds > 0) phases->push_back(PhaseInterval{rank, bucket.iteration, name, begin, begin + seconds, true});
        begin += seconds;
      }
    }
    for (const PhaseInterval& phase : history.phases) phases->push_back(phase);
  }
  std::stable_sort(memory->begin(), memory->end(),
                   [](const MemorySample& a, const MemorySample& b) { return a.time < b.time; });
  std::stable_sort(phases->begin(), phases->end(),
                   [](const PhaseInterval& a, const PhaseInterval& b) { return a.begin < b.begin; });
}

int JobHistory::memory_held(int rank) const {
  auto it = ranks_.find(rank);
  if (it == ranks_.end()) return 0;
  return static_cast<int>(it->second.memory.size() + 2 * it->second.memory_history.buckets().size());
}

int JobHistory::phases_held(int rank) const {
  auto it = ranks_.find(rank);
  if (it == ranks_.end()) return 0;
  return static_cast<int>(it->second.phases.size() + it->second.phase_history.buckets().size());
}

}  // namespace hybridshard::gui
