#include "buffer_grid_model.h"

#include <QRegularExpression>
#include <QVariantList>
#include <algorithm>

#include "units.h"

namespace hybridshard::gui {

QString BufferGridModel::column_key(const QString& buffer_name, int own_stage) {
  static const QRegularExpression kOwnStage(QStringLiteral(R"(^train\.([a-z_]+)\.pp(\d+)(\.vpp\d+)?$)"));
  const QRegularExpressionMatch match = kOwnStage.match(buffer_name);
  if (match.hasMatch() && match.captured(2).toInt() == own_stage) {
    return QStringLiteral("train.%1.pp*%2").arg(match.captured(1), match.captured(3));
  }
  return buffer_name;
}

void BufferGridModel::rebuild(const JobSnapshot& snapshot, QVector<Row>* rows, QStringList* columns,
                              QVector<QVector<Cell>>* cells) const {
  // Columns: every buffer of every rank, in the canonical order.
  QSet<QString> keys;
  for (const RankState& rank : snapshot.ranks) {
    const int stage = snapshot.job.pipeline_stage(rank.rank);
    for (const BufferState& buffer : rank.buffers) keys.insert(column_key(buffer.name, stage));
  }
  *columns = QStringList(keys.begin(), keys.end());
  std::sort(columns->begin(), columns->end(), buffer_name_less);
  QHash<QString, int> column_of;
  for (int column = 0; column < columns->size(); ++column) column_of.insert(columns->at(column), column);

  // Rows: ranks, or groups of ranks sharing a host and a pipeline stage.
  rows->clear();
  QHash<QString, int> row_of;
  QString previous_group;
  for (const RankState& rank : snapshot.ranks) {
    const int stage = snapshot.job.pipeline_stage(rank.rank);
    const QString host = rank.host.isEmpty() ? QStringLiteral("?") : rank.host;
    const QString group = QStringLiteral("%1/pp%2").arg(host).arg(stage);
    if (aggregated_) {
      auto it = row_of.find(group);
      if (it == row_of.end()) {
        Row row;
        row.key = group;
        // A heavier line where the pipeline stage changes (every row is a new host group anyway).
        row.group_start = !rows->isEmpty() && rows->back().key.section('/', 1, 1) != group.section('/', 1, 1);
        it = row_of.insert(group, rows->size());
        rows->push_back(row);
      }
      (*rows)[*it].ranks.push_back(rank.rank);
    } else {
      Row row;
      row.key = QStringLiteral("r%1").arg(rank.rank);
      row.label = snapshot.job.known ? QStringLiteral("r%1  %2 \u00b7 pp%3").arg(rank.rank).arg(host).arg(stage)
                                     : QStringLiteral("r%1  %2").arg(rank.rank).arg(host);
      row.tooltip = QStringLiteral("rank %1 on %2, pipeline stage %3%4")
                        .arg(rank.rank)
                        .arg(host)
                        .arg(stage)
                        .arg(rank.up ? QString() : QStringLiteral(" (down)"));
      row.ranks = {rank.rank};
      row.group_start = !previous_group.isEmpty() && group != previous_group;
      rows->push_back(row);
    }
    previous_group = group;
  }
  for (Row& row : *rows) {
    if (!aggregated_) continue;
    const QString host = row.key.section('/', 0, 0);
    const QString stage = row.key.section('/', 1, 1);
    row.label = QStringLiteral("%1 \u00b7 %2  (%3 ranks)").arg(host, stage).arg(row.ranks.size());
    QStringList names;
    for (int rank : row.ranks) names << QString::number(rank);
    row.tooltip = QStringLiteral("%1, %2: ranks %3").arg(host, stage, names.join(QStringLiteral(", ")));
  }

  // Cells.
  *cells = QVector<QVector<Cell>>(rows->size(), QVector<Cell>(columns->size()));
  QHash<int, int> row_of_rank;
  for (int row = 0; row < rows->size(); ++row) {
    for (int rank : rows->at(row).ranks) row_of_rank.insert(rank, row);
  }
  for (const RankState& rank : snapshot.ranks) {
    const int row = row_of_rank.value(rank.rank, -1);
    if (row < 0) continue;
    const int stage = snapshot.job.pipeline_stage(rank.rank);
    for (const BufferState& buffer : rank.buffers) {
      Cell& cell = (*cells)[row][column_of.value(column_key(buffer.name, stage))];
      if (!aggregated_) cell.buffer = buffer;
      cell.bytes += buffer.bytes;
      cell.max_bytes = std::max(cell.max_bytes, buffer.bytes);
      switch (buffer.residency) {
        case Residency::kGpu:
          ++cell.gpu;
          break;
        case Residency::kCpu:
          ++cell.cpu;
          break;
        case Residency::kNone:
          ++cell.none;
          break;
      }
    }
  }
}

void BufferGridModel::set_snapshot(const JobSnapshot& snapshot) {
  QVector<Row> rows;
  QStringList columns;
  QVector<QVector<Cell>> cells;
  rebuild(snapshot, &rows, &columns, &cells);
  bool same_shape = columns == columns_ && rows.size() == rows_.size();
  for (int row = 0; same_shape && row < rows.size(); ++row) {
    same_shape = rows[row].key == rows_[row].key && rows[row].label == rows_[row].label;
  }
  std::int64_t max_bytes = 0;
  for (const QVector<Cell>& row : cells) {
    for (const Cell& cell : row) max_bytes = std::max(max_bytes, cell.max_bytes);
  }
  if (!same_shape) beginResetModel();
  snapshot_ = snapshot;
  snapshot_.memory.clear();  // not needed here; keeps the copy small
  snapshot_.phases.clear();
  rows_ = std::move(rows);
  columns_ = std::move(columns);
  cells_ = std::move(cells);
  max_cell_bytes_ = max_bytes;
  if (!same_shape) {
    endResetModel();
  } else if (!rows_.isEmpty() && !columns_.isEmpty()) {
    emit dataChanged(index(0, 0), index(rowCount() - 1, columnCount() - 1));
    emit headerDataChanged(Qt::Vertical, 0, rowCount() - 1);
  }
}

void BufferGridModel::set_aggregated(bool aggregated) {
  if (aggregated == aggregated_) return;
  aggregated_ = aggregated;
  JobSnapshot snapshot = snapshot_;
  // Force a reset: the rows change meaning.
  beginResetModel();
  rows_.clear();
  columns_.clear();
  cells_.clear();
  endResetModel();
  set_snapshot(snapshot);
}

QVector<int> BufferGridModel::ranks_of_row(int row) const {
  return row >= 0 && row < rows_.size() ? rows_[row].ranks : QVector<int>();
}

int BufferGridModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : rows_.size(); }

int BufferGridModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : columns_.size(); }

QString BufferGridModel::tooltip(const Cell& cell, const Row& row, const QString& column) const {
  const double origin = snapshot_.origin();
  if (cell.buffer) {
    const BufferState& buffer = *cell.buffer;
    return QStringLiteral(
               "<b>%1</b> (rank %2)<br>kind: %3<br>dtype: %4<br>shape: %5<br>bytes: %6 (%7)<br>residency: <b>%8</b>"
               "<br>since: t = %9 s (%10 ago)")
        .arg(buffer.name.toHtmlEscaped())
        .arg(row.ranks.value(0))
        .arg(buffer.kind.toHtmlEscaped(), buffer.dtype.toHtmlEscaped(),
             buffer.shape.isEmpty() ? QStringLiteral("\u2014") : buffer.shape.toHtmlEscaped(),
             format_bytes(buffer.bytes))
        .arg(static_cast<qlonglong>(buffer.bytes))
        .arg(residency_name(buffer.residency))
        .arg(buffer.since - origin, 0, 'f', 2)
        .arg(format_duration(std::max(0.0, snapshot_.time - buffer.since)));
  }
  const int present = cell.gpu + cell.cpu + cell.none;
  if (present == 0) return QStringLiteral("%1: no such buffer on %2").arg(column, row.label);
  return QStringLiteral("<b>%1</b><br>%2<br>on gpu: %3 ranks<br>on cpu: %4 ranks<br>none: %5 ranks<br>bytes: %6 in all")
      .arg(short_buffer_name(column, true).toHtmlEscaped(), row.label.toHtmlEscaped())
      .arg(cell.gpu)
      .arg(cell.cpu)
      .arg(cell.none)
      .arg(format_bytes(cell.bytes));
}

QVariant BufferGridModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  const Cell& cell = cells_[index.row()][index.column()];
  const int present = cell.gpu + cell.cpu + cell.none;
  switch (role) {
    case Qt::DisplayRole:
      if (present == 0) return QString();
      if (cell.buffer) return format_bytes(cell.buffer->bytes);
      return QStringLiteral("%1/%2 gpu").arg(cell.gpu).arg(present);
    case Qt::ToolTipRole:
      return tooltip(cell, rows_[index.row()], columns_[index.column()]);
    case kResidencyRole:
      if (cell.buffer) return residency_name(cell.buffer->residency);
      if (present == 0) return QString();
      if (cell.gpu == present) return QStringLiteral("gpu");
      if (cell.cpu == present) return QStringLiteral("cpu");
      if (cell.none == present) return QStringLiteral("none");
      return QStringLiteral("mixed");
    case kBytesRole:
      return static_cast<qlonglong>(cell.bytes);
    case kFillRole:
      return max_cell_bytes_ > 0 ? static_cast<double>(cell.max_bytes) / static_cast<double>(max_cell_bytes_) : 0.0;
    case kSinceRole:
      return cell.buffer ? QVariant(cell.buffer->since - snapshot_.origin()) : QVariant();
    case kGpuCountRole:
      return cell.gpu;
    case kCpuCountRole:
      return cell.cpu;
    case kNoneCountRole:
      return cell.none;
    case kBufferNameRole:
      return cell.buffer ? cell.buffer->name : QString();
    default:
      return {};
  }
}

QVariant BufferGridModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation == Qt::Horizontal) {
    if (section < 0 || section >= columns_.size()) return {};
    if (role == Qt::DisplayRole) return short_buffer_name(columns_[section], snapshot_.job.train_vpp > 1);
    if (role == Qt::ToolTipRole) {
      return columns_[section].contains(QLatin1String("pp*"))
                 ? QStringLiteral("%1 (pp* = the rank's own pipeline stage)").arg(columns_[section])
                 : columns_[section];
    }
    return {};
  }
  if (section < 0 || section >= rows_.size()) return {};
  const Row& row = rows_[section];
  switch (role) {
    case Qt::DisplayRole:
      return row.label;
    case Qt::ToolTipRole:
      return row.tooltip;
    case kRowRanksRole: {
      QVariantList ranks;
      for (int rank : row.ranks) ranks << rank;
      return ranks;
    }
    case kGroupStartRole:
      return row.group_start;
    default:
      return {};
  }
}

}  // namespace hybridshard::gui
