#include "rank_table_model.h"

#include <QBrush>
#include <QColor>

#include "units.h"

namespace hybridshard::gui {

void RankTableModel::set_snapshot(const JobSnapshot& snapshot) {
  bool same_rows = snapshot.ranks.size() == ranks_.size();
  for (int row = 0; same_rows && row < ranks_.size(); ++row) same_rows = ranks_[row].rank == snapshot.ranks[row].rank;
  if (!same_rows) {
    beginResetModel();
    ranks_ = snapshot.ranks;
    job_ = snapshot.job;
    time_ = snapshot.time;
    endResetModel();
    return;
  }
  ranks_ = snapshot.ranks;
  job_ = snapshot.job;
  time_ = snapshot.time;
  if (!ranks_.isEmpty()) emit dataChanged(index(0, 0), index(rowCount() - 1, kColumnCount - 1));
}

int RankTableModel::rank_at(int row) const { return row >= 0 && row < ranks_.size() ? ranks_[row].rank : -1; }

int RankTableModel::row_of(int rank) const {
  for (int row = 0; row < ranks_.size(); ++row) {
    if (ranks_[row].rank == rank) return row;
  }
  return -1;
}

int RankTableModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ranks_.size(); }

int RankTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : kColumnCount; }

QVariant RankTableModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  const RankState& rank = ranks_[index.row()];
  const std::int64_t free_bytes = rank.device_total - rank.device_used;
  const double headroom = rank.device_total > 0 ? static_cast<double>(free_bytes) / rank.device_total : -1;
  const std::int64_t untracked = rank.untracked();
  if (role == kRankRole) return rank.rank;
  if (role == Qt::DisplayRole) {
    switch (index.column()) {
      case kRank:
        return rank.rank;
      case kHost:
        return rank.host;
      case kStage:
        return job_.known ? QStringLiteral("pp%1").arg(job_.pipeline_stage(rank.rank)) : QString();
      case kPhase:
        if (rank.phase.isEmpty()) return QStringLiteral("\u2014");
        return QStringLiteral("%1 (%2)").arg(rank.phase, format_duration(std::max(0.0, time_ - rank.phase_since)));
      case kIteration:
        // 1-based, as in the job summary ("2 / 3"); the record's iteration field is 0-based.
        return rank.iteration >= 0 ? QVariant(rank.iteration + 1) : QVariant(QStringLiteral("\u2014"));
      case kDeviceUsed: {
        if (rank.device_total <= 0) return format_bytes(rank.device_used);
        // "20.3 / 79.6 GiB" when both have the same unit.
        QString used = format_bytes(rank.device_used);
        const QString total = format_bytes(rank.device_total);
        const QString unit = total.section(' ', 1);
        if (used.section(' ', 1) == unit) used = used.section(' ', 0, 0);
        return QStringLiteral("%1 / %2").arg(used, total);
      }
      case kHeadroom:
        return headroom >= 0 ? QStringLiteral("%1 %").arg(100 * headroom, 0, 'f', 1) : QString();
      case kTracked:
        return format_bytes(rank.tracked);
      case kCached:
        return format_bytes(rank.cached);
      case kUntracked:
        return format_bytes(untracked);
      case kUp:
        return rank.up ? QStringLiteral("up") : QStringLiteral("down");
      default:
        return {};
    }
  }
  if (role == kSortRole) {
    switch (index.column()) {
      case kRank:
        return rank.rank;
      case kHost:
        return rank.host;
      case kStage:
        return job_.pipeline_stage(rank.rank);
      case kPhase:
        return rank.phase;
      case kIteration:
        return rank.iteration;
      case kDeviceUsed:
        return static_cast<qlonglong>(rank.device_used);
      case kHeadroom:
        return headroom;
      case kTracked:
        return static_cast<qlonglong>(rank.tracked);
      case kCached:
        return static_cast<qlonglong>(rank.cached);
      case kUntracked:
        return static_cast<qlonglong>(untracked);
      case kUp:
        return rank.up;
      default:
        return {};
    }
  }
  if (role == Qt::TextAlignmentRole) {
    const bool numeric = index.column() == kRank || index.column() == kIteration || index.column() >= kDeviceUsed;
    return QVariant::fromValue(numeric ? (Qt::AlignRight | Qt::AlignVCenter) : (Qt::AlignLeft | Qt::AlignVCenter));
  }
  if (role == Qt::ForegroundRole) {
    if (index.column() == kUp && !rank.up) return QBrush(QColor(0xC6, 0x28, 0x28));
    if (index.column() == kHeadroom && headroom >= 0 && headroom < 0.10) return QBrush(QColor(0xC6, 0x28, 0x28));
    return {};
  }
  if (role == Qt::ToolTipRole) {
    QString tip =
        QStringLiteral("rank %1 on %2, pid %3, device %4").arg(rank.rank).arg(rank.host).arg(rank.pid).arg(rank.device);
    if (!rank.up && !rank.down_reason.isEmpty()) tip += QStringLiteral("\ndown: ") + rank.down_reason;
    if (rank.last_enter_seconds >= 0)
      tip += QStringLiteral("\nlast enter %1").arg(format_duration(rank.last_enter_seconds));
    if (rank.last_exit_seconds >= 0)
      tip += QStringLiteral("\nlast exit %1").arg(format_duration(rank.last_exit_seconds));
    if (rank.check_failures > 0) tip += QStringLiteral("\n%1 failed checks").arg(rank.check_failures);
    return tip;
  }
  return {};
}

QVariant RankTableModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
    return QAbstractTableModel::headerData(section, orientation, role);
  switch (section) {
    case kRank:
      return QStringLiteral("Rank");
    case kHost:
      return QStringLiteral("Host");
    case kStage:
      return QStringLiteral("Stage");
    case kPhase:
      return QStringLiteral("Phase");
    case kIteration:
      return QStringLiteral("Iter");
    case kDeviceUsed:
      return QStringLiteral("Used / total");
    case kHeadroom:
      return QStringLiteral("Free");
    case kTracked:
      return QStringLiteral("Tracked");
    case kCached:
      return QStringLiteral("Cached");
    case kUntracked:
      return QStringLiteral("Untracked");
    case kUp:
      return QStringLiteral("Up");
    default:
      return {};
  }
}

}  // namespace hybridshard::gui
