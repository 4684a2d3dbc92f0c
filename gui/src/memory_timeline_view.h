// The memory timeline of the selected ranks (QtCharts): tracked bytes stacked by kind, untracked bytes above them
// up to device used, device capacity, in GiB; under it the phase band on the same time axis.
#pragma once

#include <QHash>
#include <QWidget>

class QChart;
class QChartView;
class QLineSeries;
class QAreaSeries;
class QValueAxis;
class QLabel;

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
  void set_time_range(double begin, double end);
  void set_chart_view(QChartView* view) { view_ = view; }  // the band lines up with this chart's plot area
  void set_cursor(double time);                            // a vertical line at the current time; < 0 for none
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

  // Fix the time axis to [0, end] (a replay: the whole run); 0 lets it follow the data.
  void set_fixed_duration(double seconds) { fixed_duration_ = seconds; }
  void set_cursor_visible(bool visible) { cursor_visible_ = visible; }
  QChart* chart() const { return chart_; }

 private:
  void rebuild();

  MemorySeriesModel* memory_;
  PhaseIntervalModel* phases_;
  QChart* chart_;
  QChartView* view_;
  PhaseBand* band_;
  QLabel* title_;
  QValueAxis* axis_x_;
  QValueAxis* axis_y_;
  QVector<QLineSeries*> stack_lines_;  // upper edge of each kind, then untracked
  QVector<QAreaSeries*> stack_areas_;
  QLineSeries* used_;
  QLineSeries* capacity_;
  QLineSeries* cursor_;
  double fixed_duration_ = 0;
  bool cursor_visible_ = false;
};

}  // namespace hybridshard::gui
