// The residency grid: a row per rank (or, aggregated, per host and pipeline stage), a column per buffer. A rank's
// train buffers of its own stage share one column ("params", "grads", ...), whatever the stage number, so that a
// pipeline-parallel job does not leave half the grid empty.
#pragma once

#include <QAbstractTableModel>
#include <optional>

#include "job_snapshot.h"

namespace hybridshard::gui {

class BufferGridModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Role {
    kResidencyRole = Qt::UserRole + 1,  // "gpu", "cpu", "none"; "" for no such buffer (per-rank rows)
    kBytesRole,                         // qlonglong: bytes (aggregated: total over the group)
    kFillRole,                          // double in [0, 1]: bytes / largest buffer of the grid
    kSinceRole,                         // double: seconds since the job started (per-rank rows)
    kGpuCountRole,                      // int: ranks of the row with this buffer on gpu (1 or 0 per rank)
    kCpuCountRole,
    kNoneCountRole,
    kBufferNameRole,  // the full buffer name (per-rank rows)
    kRowRanksRole,    // QVariantList of the ranks a row stands for (vertical header)
    kGroupStartRole,  // bool: first row of a new host / stage (vertical header)
  };

  explicit BufferGridModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}

  void set_snapshot(const JobSnapshot& snapshot);
  // Aggregated: one row per (host, pipeline stage) with counts instead of single buffers.
  void set_aggregated(bool aggregated);
  bool aggregated() const { return aggregated_; }
  QStringList column_keys() const { return columns_; }
  QVector<int> ranks_of_row(int row) const;

  // The column a rank's buffer goes to ("train.params.pp*.vpp0" for its own stage's params).
  static QString column_key(const QString& buffer_name, int own_stage);

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  int columnCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  struct Row {
    QString key;  // "r12" or "node-a/pp1"
    QString label;
    QString tooltip;
    QVector<int> ranks;
    bool group_start = false;
  };
  struct Cell {
    std::optional<BufferState> buffer;  // per-rank rows
    int gpu = 0, cpu = 0, none = 0;     // over the row's ranks
    std::int64_t bytes = 0;
    std::int64_t max_bytes = 0;
  };
  void rebuild(const JobSnapshot& snapshot, QVector<Row>* rows, QStringList* columns,
               QVector<QVector<Cell>>* cells) const;
  QString tooltip(const Cell& cell, const Row& row, const QString& column) const;

  bool aggregated_ = false;
  JobSnapshot snapshot_;
  QVector<Row> rows_;
  QStringList columns_;
  QVector<QVector<Cell>> cells_;  // [row][column]
  std::int64_t max_cell_bytes_ = 0;
};

}  // namespace hybridshard::gui
