// The data behind the memory timeline and the phase band, for the selected ranks, on one time axis: seconds since
// the job started.
#pragma once

#include <QAbstractTableModel>
#include <array>

#include "job_snapshot.h"

namespace hybridshard::gui {

// A row per memory sample time of the selected ranks; values in GiB, summed over the selected ranks (each rank's
// latest sample at or before the row's time).
class MemorySeriesModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column {
    kTime,
    kFirstKind,  // one column per buffer kind, in buffer_kinds() order
    kTracked = kFirstKind + 7,
    kCached,     // hybridshard's device cache
    kUntracked,  // used - tracked - cached
    kDeviceUsed,
    kDeviceTotal,
    kColumnCount
  };

  explicit MemorySeriesModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}

  void set_snapshot(const JobSnapshot& snapshot);
  void set_ranks(const QVector<int>& ranks);
  QVector<int> ranks() const { return ranks_; }
  double now() const { return now_; }  // the snapshot's time on the same axis
  double value(int row, int column) const { return rows_[row][column]; }

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  int columnCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  void rebuild();

  JobSnapshot snapshot_;
  QVector<int> ranks_{0};
  QVector<std::array<double, kColumnCount>> rows_;
  double now_ = 0;
};

// A row per phase interval of the selected ranks.
class PhaseIntervalModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column { kRank, kIteration, kPhase, kBegin, kEnd, kColumnCount };

  explicit PhaseIntervalModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}

  void set_snapshot(const JobSnapshot& snapshot);
  void set_ranks(const QVector<int>& ranks);
  QVector<int> ranks() const { return ranks_; }
  const PhaseInterval& interval(int row) const { return rows_[row]; }  // begin / end relative; end = now if open

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  int columnCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  void rebuild();

  JobSnapshot snapshot_;
  QVector<int> ranks_{0};
  QVector<PhaseInterval> rows_;
};

}  // namespace hybridshard::gui
