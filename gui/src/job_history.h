// A job's memory and phase series as the dashboard keeps them, per rank: the newest samples and phase intervals at
// full rate, and the whole job in history buckets (docs/record-format.md, "Status"). The live source fills it from
// status documents (whole or incremental: apply()); the replay fills it from a record's events by the fold's rules
// (add_sample(), begin_phase(), end_phase()). compose() gives the series of a JobSnapshot: time-sorted, the whole
// job, coarse where old. tests/gui/tst_foldcontract.cpp holds the replay to the service's fold.
#pragma once

#include <QMap>
#include <QSet>
#include <QString>
#include <QVector>
#include <deque>
#include <map>

#include "hybridshard/service/observe/bucketed_history.h"
#include "job_snapshot.h"

namespace hybridshard::gui {

// What the fold keeps per rank ("kept" of a status document; JobStateLimits in the service).
struct HistoryLimits {
  int memory_per_rank = 600;
  int phases_per_rank = 200;
  int history_buckets = static_cast<int>(service::kDefaultHistoryBuckets);
  int phase_names_per_rank = 32;  // distinct phase names that go into the history (the service's rule)
};

// The lowest and the highest sample of a bucket by device_used (ties: by tracked, then the earlier).
struct MemoryBucket {
  MemorySample low;
  MemorySample high;
  bool empty = true;
  void add(const MemorySample& sample);
  void merge(const MemoryBucket& later);
};

// Seconds each phase ran within a bucket, and the newest iteration among them.
struct PhaseBucket {
  QMap<QString, double> seconds;
  int iteration = -1;
  void merge(const PhaseBucket& later);
};

// One rank's history buckets as a status document gives them (whole, or those changed since a cursor).
struct RankHistoryChanges {
  int rank = 0;
  double memory_bucket_seconds = service::kFirstHistoryBucketSeconds;
  double phase_bucket_seconds = service::kFirstHistoryBucketSeconds;
  std::map<std::int64_t, MemoryBucket> memory;
  std::map<std::int64_t, PhaseBucket> phases;
};

// The series part of a status document: samples and intervals in the document's order, history per rank.
struct SeriesChanges {
  QVector<MemorySample> memory;
  QVector<PhaseInterval> phases;
  QVector<RankHistoryChanges> history;
};

class JobHistory {
 public:
  explicit JobHistory(HistoryLimits limits = {}) : limits_(limits) {}

  const HistoryLimits& limits() const { return limits_; }

  // Takes a status document's series: appends samples, replaces or appends intervals (same rank, phase and begin),
  // keeps the newest per rank, replaces history buckets by index (all of a rank's when its width changed).
  void apply(const SeriesChanges& changes);

  // The fold's rules, event by event (the replay).
  void add_sample(const MemorySample& sample);
  void begin_phase(int rank, int iteration, const QString& phase, double time);
  void end_phase(int rank, int iteration, const QString& phase, double time, double seconds);

  // Every rank's series: per rank its history samples older than its first recent sample, then the recent ones;
  // its history phases (each bucket's phases one after the other from the bucket's start, marked coarse) of the
  // buckets that end before its first recent interval begins, then the recent ones. Both sorted by time (stable: by
  // rank at equal times).
  void compose(QVector<MemorySample>* memory, QVector<PhaseInterval>* phases) const;

  int rank_count() const { return static_cast<int>(ranks_.size()); }
  // Samples and intervals held for `rank`, buckets included (a bucket counts its two samples): the bound under test.
  int memory_held(int rank) const;
  int phases_held(int rank) const;

 private:
  struct RankHistory {
    std::deque<MemorySample> memory;   // the newest, as they came
    std::deque<PhaseInterval> phases;  // the newest, in order of their begin
    QSet<QString> phase_names;         // counted into the history (the service's phase_names_per_rank)
    service::BucketedHistory<MemoryBucket> memory_history;
    service::BucketedHistory<PhaseBucket> phase_history;
  };

  RankHistory& rank_history(int rank);
  void trim(RankHistory& history) const;
  void add_to_history(RankHistory& history, const PhaseInterval& interval);
  bool count_phase_name(RankHistory& history, const QString& name) const;

  HistoryLimits limits_;
  std::map<int, RankHistory> ranks_;
};

}  // namespace hybridshard::gui
