#include "alert_model.h"

#include <QBrush>
#include <QColor>
#include <algorithm>

#include "units.h"

namespace hybridshard::gui {

QVector<Alert> evaluate_alerts(const JobSnapshot& snapshot, const AlertRules& rules) {
  QVector<Alert> alerts;
  if (snapshot.state == QLatin1String("failed")) {
    alerts.push_back({Alert::Severity::kCritical, QStringLiteral("HybridshardJobFailed"), -1,
                      snapshot.message.isEmpty() ? QStringLiteral("the job failed") : snapshot.message, 0});
  }
  const bool finished = snapshot.state == QLatin1String("finished");
  for (const RankState& rank : snapshot.ranks) {
    if (!rank.up && !finished) {
      alerts.push_back({Alert::Severity::kCritical, QStringLiteral("HybridshardRankDown"), rank.rank,
                        QStringLiteral("rank %1 on %2 is down%3")
                            .arg(rank.rank)
                            .arg(rank.host.isEmpty() ? QStringLiteral("?") : rank.host)
                            .arg(rank.down_reason.isEmpty() ? QString() : QStringLiteral(": ") + rank.down_reason),
                        0});
    }
    if (rank.check_failures > 0) {
      alerts.push_back({Alert::Severity::kCritical, QStringLiteral("HybridshardRolloutCheckFailed"), rank.rank,
                        QStringLiteral("%1 rollout check(s) failed on rank %2: stale or wrong weights")
                            .arg(rank.check_failures)
                            .arg(rank.rank),
                        0});
    }
    if (rank.up && rank.device_total > 0) {
      // As configs/alerts.yml: hybridshard's cache is free for hybridshard (an allocation releases it first).
      const double headroom =
          static_cast<double>(rank.device_total - rank.device_used + rank.cached) / rank.device_total;
      if (headroom < rules.min_headroom_fraction) {
        alerts.push_back(
            {Alert::Severity::kWarning, QStringLiteral("HybridshardDeviceMemoryHeadroomLow"), rank.rank,
             QStringLiteral("%1 % device memory free (%2 of %3 used, %4 of it cached), below %5 %")
                 .arg(100 * headroom, 0, 'f', 1)
                 .arg(format_bytes(rank.device_used), format_bytes(rank.device_total), format_bytes(rank.cached))
                 .arg(100 * rules.min_headroom_fraction, 0, 'f', 0),
             0});
      }
    }
    if (rank.last_enter_seconds > rules.max_enter_seconds) {
      alerts.push_back({Alert::Severity::kWarning, QStringLiteral("HybridshardTransitionSlow"), rank.rank,
                        QStringLiteral("last enter took %1, over %2")
                            .arg(format_duration(rank.last_enter_seconds), format_duration(rules.max_enter_seconds)),
                        0});
    }
  }
  std::stable_sort(alerts.begin(), alerts.end(), [](const Alert& a, const Alert& b) {
    if (a.severity != b.severity) return a.severity == Alert::Severity::kCritical;
    return a.rank < b.rank;
  });
  return alerts;
}

void AlertModel::set_snapshot(const JobSnapshot& snapshot) {
  QVector<Alert> alerts = evaluate_alerts(snapshot, rules_);
  QHash<QString, double> first_seen;
  for (Alert& alert : alerts) {
    // A condition that held at the previous update keeps its first time; going back in a replay forgets it.
    const double previous = first_seen_.value(alert.key(), -1);
    alert.since = previous >= 0 && previous <= snapshot.time ? previous : snapshot.time;
    first_seen.insert(alert.key(), alert.since);
  }
  bool same_rows = alerts.size() == alerts_.size();
  for (int row = 0; same_rows && row < alerts.size(); ++row) same_rows = alerts[row].key() == alerts_[row].key();
  if (!same_rows) beginResetModel();
  alerts_ = std::move(alerts);
  first_seen_ = std::move(first_seen);
  origin_ = snapshot.origin();
  time_ = snapshot.time;
  if (!same_rows) {
    endResetModel();
  } else if (!alerts_.isEmpty()) {
    emit dataChanged(index(0, 0), index(rowCount() - 1, kColumnCount - 1));
  }
}

int AlertModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : alerts_.size(); }

int AlertModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : kColumnCount; }

QVariant AlertModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  const Alert& alert = alerts_[index.row()];
  const bool critical = alert.severity == Alert::Severity::kCritical;
  if (role == kSeverityRole) return critical ? QStringLiteral("critical") : QStringLiteral("warning");
  if (role == Qt::DisplayRole) {
    switch (index.column()) {
      case kSeverity:
        return critical ? QStringLiteral("critical") : QStringLiteral("warning");
      case kName:
        return alert.name;
      case kRank:
        return alert.rank >= 0 ? QVariant(alert.rank) : QVariant(QStringLiteral("job"));
      case kDetail:
        return alert.detail;
      case kSince:
        return QStringLiteral("t = %1 s").arg(alert.since - origin_, 0, 'f', 1);
      default:
        return {};
    }
  }
  if (role == Qt::ToolTipRole) return QStringLiteral("%1: %2").arg(alert.name, alert.detail);
  if (role == Qt::ForegroundRole && index.column() == kSeverity) {
    return QBrush(critical ? QColor(0xC6, 0x28, 0x28) : QColor(0xB2, 0x6A, 0x00));
  }
  return {};
}

QVariant AlertModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
    return QAbstractTableModel::headerData(section, orientation, role);
  switch (section) {
    case kSeverity:
      return QStringLiteral("Severity");
    case kName:
      return QStringLiteral("Alert");
    case kRank:
      return QStringLiteral("Rank");
    case kDetail:
      return QStringLiteral("Detail");
    case kSince:
      return QStringLiteral("Since");
    default:
      return {};
  }
}

}  // namespace hybridshard::gui
