// Alerts: the conditions of configs/alerts.yml, evaluated on the dashboard's own state, so that an operator sees
// the same alerts with or without Prometheus.
#pragma once

#include <QAbstractTableModel>
#include <QHash>

#include "job_snapshot.h"

namespace hybridshard::gui {

struct AlertRules {
  // Defaults are those of configs/alerts.yml. The dashboard fires at once (no `for:` delay).
  double min_headroom_fraction = 0.05;  // HybridshardDeviceMemoryHeadroomLow: free device memory below this fraction
  double max_enter_seconds = 30.0;      // HybridshardTransitionSlow: the last enter took longer than this
};

struct Alert {
  enum class Severity { kWarning, kCritical };
  Severity severity = Severity::kWarning;
  QString name;   // the alert's name in configs/alerts.yml
  int rank = -1;  // -1: the whole job
  QString detail;
  double since = 0;  // epoch seconds it was first seen (set by AlertModel)

  QString key() const { return name + QLatin1Char('/') + QString::number(rank); }
};

// Every condition that holds in `snapshot`, critical first, then by rank.
QVector<Alert> evaluate_alerts(const JobSnapshot& snapshot, const AlertRules& rules);

class AlertModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column { kSeverity, kName, kRank, kDetail, kSince, kColumnCount };
  enum Role { kSeverityRole = Qt::UserRole + 1 };

  explicit AlertModel(QObject* parent = nullptr) : QAbstractTableModel(parent) {}

  void set_rules(const AlertRules& rules) { rules_ = rules; }
  const AlertRules& rules() const { return rules_; }
  void set_snapshot(const JobSnapshot& snapshot);
  const QVector<Alert>& alerts() const { return alerts_; }

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  int columnCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

 private:
  AlertRules rules_;
  QVector<Alert> alerts_;
  QHash<QString, double> first_seen_;
  double origin_ = 0;
  double time_ = 0;
};

}  // namespace hybridshard::gui
