// The main window: job summary and connection state on top, residency grid beside ranks and alerts, the memory
// timeline with its phase band below, and replay controls for a recorded run. It owns the models and feeds them
// from one DataSource; the widgets only draw the models.
#pragma once

#include <QMainWindow>

#include "data_source.h"

class QLabel;
class QSlider;
class QToolButton;
class QComboBox;
class QTableView;

namespace hybridshard::gui {

class AlertModel;
class BufferGridModel;
class MemorySeriesModel;
class MemoryTimelineView;
class PhaseIntervalModel;
class RankTableModel;
class ReplaySource;
class ResidencyGridView;

class DashboardWindow : public QMainWindow {
  Q_OBJECT

 public:
  // `source` stays owned by the caller (or by its QObject parent).
  explicit DashboardWindow(DataSource* source, QWidget* parent = nullptr);

  RankTableModel* rank_model() const { return rank_model_; }
  BufferGridModel* grid_model() const { return grid_model_; }
  AlertModel* alert_model() const { return alert_model_; }
  MemorySeriesModel* memory_model() const { return memory_model_; }
  PhaseIntervalModel* phase_model() const { return phase_model_; }
  MemoryTimelineView* timeline() const { return timeline_; }
  QString connection_text() const;  // what the connection indicator shows
  void select_ranks(const QVector<int>& ranks);

 private:
  QWidget* build_header();
  QWidget* build_replay_bar(ReplaySource* replay);
  void on_snapshot();
  void on_connection_state(ConnectionState state, const QString& detail);

  DataSource* source_;
  RankTableModel* rank_model_;
  BufferGridModel* grid_model_;
  AlertModel* alert_model_;
  MemorySeriesModel* memory_model_;
  PhaseIntervalModel* phase_model_;
  ResidencyGridView* grid_view_ = nullptr;
  QTableView* rank_view_ = nullptr;
  QTableView* alert_view_ = nullptr;
  MemoryTimelineView* timeline_ = nullptr;
  QLabel* connection_ = nullptr;
  QLabel* alerts_title_ = nullptr;
  QHash<QString, QLabel*> cards_;
  QVector<int> selected_ranks_{0};
  bool user_selected_ = false;
  bool syncing_selection_ = false;
};

}  // namespace hybridshard::gui
