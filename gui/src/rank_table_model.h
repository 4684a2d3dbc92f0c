// One row per rank: rank, host, pipeline stage, phase, iteration, device used / total, headroom, tracked,
// untracked, up.
#pragma once

#include <QAbstractTableModel>

#include "job_snapshot.h"

namespace hybridshard::gui {

class RankTableModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column {
    kRank,
    kHost,
    kStage,
    kPhase,
    kIteration,
    kDeviceUsed,
    kHeadroom,
    kTracked,
    kCached,
    kUntracked,
    kUp,
    kColumnCount
  };
  enum Role { kRankRole = Qt::UserRole + 1, kSortRole };

  explicit RankTableModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}

  void set_snapshot(const JobSnapshot& snapshot);
  int rank_at(int row) const;  // -1 when out of range
  int row_of(int rank) const;  // -1 when absent

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  int columnCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  QVector<RankState> ranks_;
  JobInfo job_;
  double time_ = 0;
};

}  // namespace hybridshard::gui
