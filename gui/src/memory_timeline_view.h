// The memory timeline of the selected ranks (QtCharts): tracked bytes stacked by kind, untracked bytes above them
// up to device used, and the device capacity (optional); under it the phase band on the same time axis. Above it
// the controls: the whole job or the last minutes, zoom in / out / reset (also the mouse wheel, dragging and a
// double-click on the plot), the capacity line, a log scale, and the rank picker.
#pragma once

#include <QHash>
#include <QPoint>
#include <QWidget>

#include "time_window.h"

class QAbstractAxis;
class QAreaSeries;
class QChart;
class QChartView;
class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QLineSeries;
class QLogValueAxis;
class QValueAxis;

namespace hybridshard::gui {

class MemorySeriesModel;
class PhaseIntervalModel;

QColor phase_color(const QString& phase);
QColor kind_color(const QString& kind);

// Lanes of coloured phase intervals, one per selected rank (at most kMaxLanes), aligned with the chart's plot area.
class PhaseBand : public QWidget {
  Q_OBJECT

 public:
  static constexpr int kMaxLanes = 8;
  explicit PhaseBand(PhaseIntervalModel* model, QWidget* parent = nullptr);
  void set_time_range(double begin, double end);           // seconds since the job started, as the chart shows them
  void set_chart_view(QChartView* view) { view_ = view; }  // the band lines up with this chart's plot area
  void set_cursor(double time);                            // a vertical line at the current time; < 0 for none
  double begin() const { return begin_; }
  double end() const { return end_; }
  // Left and right of the lanes in this widget's coordinates: those of the chart's plot area.
  std::pair<double, double> lane_extent() const;
  QSize sizeHint() const override;

 protected:
  void paintEvent(QPaintEvent* event) override;

 private:
  PhaseIntervalModel* model_;
  double begin_ = 0, end_ = 1;
  QChartView* view_ = nullptr;
  double cursor_ = -1;
};

class MemoryTimelineView : public QWidget {
  Q_OBJECT

 public:
  MemoryTimelineView(MemorySeriesModel* memory, PhaseIntervalModel* phases, QWidget* parent = nullptr);

  // Fix the whole job to [0, seconds] (a replay: the whole run); 0 lets it follow the data.
  void set_fixed_duration(double seconds);
  void set_cursor_visible(bool visible);

  // What is visible of the time axis.
  void show_whole_job();
  void show_last(double seconds);
  void zoom(double factor, double anchor_seconds);  // factor < 1 zooms in, keeping the anchor in place
  void zoom(double factor);                         // around the middle of what is visible
  void pan(double seconds);                         // > 0: later
  void reset_zoom();                                // back to the whole job or the last minutes
  const TimeWindow& time_window() const { return window_; }
  TimeSpan visible_span() const { return visible_; }  // seconds since the job started

  // The y axis: fitted to what is visible; the capacity line counts only when shown; linear or logarithmic.
  void set_capacity_visible(bool visible);
  bool capacity_visible() const { return capacity_visible_; }
  void set_log_scale(bool on);
  bool log_scale() const { return log_scale_; }
  QString y_unit() const { return y_unit_; }  // "MiB", "GiB", ...
  double y_max() const;                       // top of the y axis, in y_unit()

  // The rank picker shows these (the window's selection); typing a list there emits ranks_requested.
  void show_ranks(const QVector<int>& ranks);
  QLineEdit* rank_picker() const { return rank_picker_; }
  QChart* chart() const { return chart_; }
  QChartView* chart_view() const { return view_; }
  PhaseBand* phase_band() const { return band_; }
  int points_drawn() const { return points_drawn_; }  // memory rows drawn after thinning to the plot's width

 signals:
  void ranks_requested(const QVector<int>& ranks);

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  QWidget* build_controls();
  void rebuild();
  double job_end() const;     // end of the whole job, seconds
  double follow_end() const;  // what "the last minutes" end at: the newest data, or the replay's cursor
  double seconds_at(QPoint global) const;
  void attach_y_axis(QAbstractAxis* axis);
  void sync_span_choice();

  MemorySeriesModel* memory_;
  PhaseIntervalModel* phases_;
  QChart* chart_;
  QChartView* view_;
  PhaseBand* band_;
  QLabel* title_;
  QComboBox* span_choice_ = nullptr;
  QLabel* span_text_ = nullptr;
  QCheckBox* capacity_box_ = nullptr;
  QCheckBox* log_box_ = nullptr;
  QLineEdit* rank_picker_ = nullptr;
  QValueAxis* axis_x_;
  QValueAxis* axis_y_;
  QLogValueAxis* axis_log_;
  QLineSeries* baseline_;              // lower edge of the first kind: 0, or the log axis's floor
  QVector<QLineSeries*> stack_lines_;  // upper edge of each kind, then untracked
  QVector<QAreaSeries*> stack_areas_;
  QLineSeries* used_;
  QLineSeries* capacity_;
  QLineSeries* cursor_;
  TimeWindow window_;
  TimeSpan visible_;
  double fixed_duration_ = 0;
  bool cursor_visible_ = false;
  bool capacity_visible_ = true;
  bool log_scale_ = false;
  QString y_unit_ = QStringLiteral("GiB");
  int points_drawn_ = 0;
  bool dragging_ = false;
  QPoint drag_from_;
};

}  // namespace hybridshard::gui
