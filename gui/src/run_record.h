// A run record (docs/record-format.md: JSON lines, one event each) and the state it describes at any moment.
#pragma once

#include <QJsonObject>
#include <QString>
#include <QVector>

#include "job_history.h"
#include "job_snapshot.h"

namespace hybridshard::gui {

struct RecordEvent {
  double time = 0;
  QString type;
  int rank = -1;
  int iteration = -1;
  QJsonObject fields;
};

class RunRecord {
 public:
  // Reads `path`. Returns false with `error` ("run.jsonl:17: not JSON: ...") on the first bad line; a last line cut
  // short (a record still being written) is ignored. Events are ordered by time, ties in file order.
  bool load(const QString& path, QString* error);
  bool load_from_data(const QByteArray& data, const QString& name, QString* error);

  const QVector<RecordEvent>& events() const { return events_; }
  bool empty() const { return events_.isEmpty(); }
  double begin_time() const { return events_.isEmpty() ? 0 : events_.front().time; }
  double end_time() const { return events_.isEmpty() ? 0 : events_.back().time; }

 private:
  QVector<RecordEvent> events_;
};

// Rebuilds the job's state by applying the record's events in order, by the rules of the service's fold (JobState):
// the dashboard links no core, so the rules are written twice and tests/gui/tst_foldcontract.cpp holds them together.
// Moving forward applies only the new events; moving back starts again from the first event, so any time can be reached
// from any other. The series are kept as the fold keeps them (JobHistory, `limits` = the service's JobStateLimits):
// a record of hours gives a bounded snapshot covering the whole job, the same as GET /status at that moment.
class RecordPlayer {
 public:
  explicit RecordPlayer(const RunRecord* record, HistoryLimits limits = {})
      : record_(record), limits_(limits), history_(limits) {}

  // State after every event with time <= `time` (epoch seconds).
  const JobSnapshot& seek(double time);
  const JobSnapshot& snapshot() const { return snapshot_; }

 private:
  void reset();
  void apply(const RecordEvent& event);
  RankState& rank_state(int rank);

  const RunRecord* record_;
  HistoryLimits limits_;
  JobHistory history_;
  bool series_changed_ = false;  // since the series were last composed into snapshot_
  JobSnapshot snapshot_;
  int next_event_ = 0;
  double position_ = -1;
  bool positioned_ = false;
  QHash<int, std::int64_t> enter_network_bytes_;  // per rank, during the current enter
  QHash<int, bool> in_enter_;                     // per rank: between its enter's begin and end
};

// State of a whole record at `time`: a one-shot RecordPlayer.
JobSnapshot snapshot_at(const RunRecord& record, double time);

}  // namespace hybridshard::gui
