#include "memory_timeline_view.h"

#include <QAreaSeries>
#include <QChart>
#include <QChartView>
#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLegendMarker>
#include <QLineEdit>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QMouseEvent>
#include <QPainter>
#include <QToolButton>
#include <QVBoxLayout>
#include <QValueAxis>
#include <QWheelEvent>
#include <algorithm>
#include <cmath>

#include "job_snapshot.h"
#include "rank_list.h"
#include "timeline_models.h"
#include "units.h"

namespace hybridshard::gui {

QColor phase_color(const QString& phase) {
  if (phase == QLatin1String("train")) return QColor(0x5C, 0x6B, 0xC0);
  if (phase == QLatin1String("enter")) return QColor(0xFB, 0x8C, 0x00);
  if (phase == QLatin1String("rollout")) return QColor(0x26, 0xA6, 0x9A);
  if (phase == QLatin1String("exit")) return QColor(0xD8, 0x1B, 0x60);
  return QColor(0xB0, 0xB4, 0xBA);
}

QColor kind_color(const QString& kind) {
  if (kind == QLatin1String("params")) return QColor(0x4E, 0x79, 0xA7);
  if (kind == QLatin1String("grads")) return QColor(0xF2, 0x8E, 0x2B);
  if (kind == QLatin1String("master_params")) return QColor(0xE1, 0x57, 0x59);
  if (kind == QLatin1String("optimizer")) return QColor(0x76, 0xB7, 0xB2);
  if (kind == QLatin1String("inference_params")) return QColor(0x59, 0xA1, 0x4F);
  if (kind == QLatin1String("kv_cache")) return QColor(0xED, 0xC9, 0x48);
  if (kind == QLatin1String("staging")) return QColor(0xB0, 0x7A, 0xA1);
  if (kind == QLatin1String("cached")) return QColor(0x9C, 0x75, 0x5F);  // held from the driver, free for hybridshard
  return QColor(0xBA, 0xB0, 0xAC);
}

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// A tick step of 1, 2 or 5 x 10^k that puts about `ticks` ticks over `range`.
double nice_step(double range, int ticks) {
  if (!(range > 0) || !std::isfinite(range)) return 1;
  const double raw = range / ticks;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double multiple : {1.0, 2.0, 5.0}) {
    if (raw <= multiple * power * 1.0000001) return multiple * power;
  }
  return 10 * power;
}

QString label_format(double step) {
  const int decimals = step >= 1 ? 0 : std::min(6, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  return QStringLiteral("%.%1f").arg(decimals);
}

// Range and tick interval together. With dynamic ticks QtCharts makes a tick item per interval as soon as either
// changes: a new range under the old interval (0 .. 7200 s with a 0.001 s step) would create millions of items.
void set_value_range(QValueAxis* axis, double min, double max, double step) {
  axis->setTickType(QValueAxis::TicksFixed);
  axis->setRange(min, max);
  axis->setTickInterval(step);
  axis->setLabelFormat(label_format(step));
  axis->setTickType(QValueAxis::TicksDynamic);
}

// How high a row reaches: device used, or the tracked sum where the device reports nothing.
double height_of(const MemorySeriesModel& model, int row) {
  return std::max(model.value(row, MemorySeriesModel::kDeviceUsed),
                  model.value(row, MemorySeriesModel::kTracked) + model.value(row, MemorySeriesModel::kCached) +
                      model.value(row, MemorySeriesModel::kUntracked));
}

// The first row whose time is after `time` (at or after, when `inclusive`); rows are in time order.
int first_row_from(const MemorySeriesModel& model, double time, bool inclusive) {
  int low = 0, high = model.rowCount();
  while (low < high) {
    const int middle = low + (high - low) / 2;
    const double at = model.value(middle, MemorySeriesModel::kTime);
    if (inclusive ? at < time : at <= time) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

// The model's rows to draw for `span`: from the one at or before its start (the step that enters the view) to the
// first at or after its end. Above `budget` rows, time is cut into budget / 2 buckets and each keeps its lowest and
// its highest row, so that peaks and troughs survive at any zoom.
QVector<int> rows_to_draw(const MemorySeriesModel& model, TimeSpan span, int budget) {
  const int first = std::max(0, first_row_from(model, span.begin, false) - 1);
  const int last = std::min(model.rowCount(), first_row_from(model, span.end, true) + 1);  // exclusive
  QVector<int> chosen;
  chosen.reserve(std::min(last - first, budget + 2));
  if (last - first <= budget) {
    for (int row = first; row < last; ++row) chosen.push_back(row);
    return chosen;
  }
  const int buckets = std::max(1, budget / 2);
  int bucket = -1, lowest = -1, highest = -1;
  auto flush = [&] {
    if (lowest >= 0) chosen.push_back(std::min(lowest, highest));
    if (highest != lowest) chosen.push_back(std::max(lowest, highest));
    lowest = highest = -1;
  };
  for (int row = first; row < last; ++row) {
    if (row == first || row == last - 1) {  // the edges stay exactly
      flush();
      chosen.push_back(row);
      bucket = -1;
      continue;
    }
    const double share = (model.value(row, MemorySeriesModel::kTime) - span.begin) / span.length();
    const int index = std::clamp(static_cast<int>(share * buckets), 0, buckets - 1);
    if (index != bucket || lowest < 0) {
      flush();
      bucket = index;
      lowest = highest = row;
      continue;
    }
    if (height_of(model, row) < height_of(model, lowest)) lowest = row;
    if (height_of(model, row) > height_of(model, highest)) highest = row;
  }
  flush();
  return chosen;
}

}  // namespace

PhaseBand::PhaseBand(PhaseIntervalModel* model, QWidget* parent) : QWidget(parent), model_(model) {
  connect(model_, &QAbstractItemModel::modelReset, this, qOverload<>(&QWidget::update));
  setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Fixed);
  setFixedHeight(sizeHint().height());
  connect(model_, &QAbstractItemModel::modelReset, this, [this] { setFixedHeight(sizeHint().height()); });
}

QSize PhaseBand::sizeHint() const {
  const int lanes = std::clamp(static_cast<int>(model_->ranks().size()), 1, kMaxLanes);
  const int lane_height = lanes > 2 ? 10 : 16;
  return QSize(400, 24 + lanes * lane_height);
}

void PhaseBand::set_time_range(double begin, double end) {
  begin_ = begin;
  end_ = std::max(end, begin + 1e-9);
  update();
}

void PhaseBand::set_cursor(double time) {
  cursor_ = time;
  update();
}

std::pair<double, double> PhaseBand::lane_extent() const {
  double left = 60;
  double right = width() - 20;
  if (view_ != nullptr && view_->chart() != nullptr) {
    // The chart's plot area, from scene coordinates to this widget's.
    const QRectF plot = view_->chart()->plotArea();
    left = mapFromGlobal(view_->viewport()->mapToGlobal(view_->mapFromScene(plot.topLeft()))).x();
    right = mapFromGlobal(view_->viewport()->mapToGlobal(view_->mapFromScene(plot.topRight()))).x();
    if (right <= left) right = left + 1;
  }
  return {left, right};
}

void PhaseBand::paintEvent(QPaintEvent*) {
  QPainter painter(this);
  painter.fillRect(rect(), palette().window());
  const auto [left, right] = lane_extent();
  const QVector<int> ranks = model_->ranks();
  const int lanes = std::clamp(static_cast<int>(ranks.size()), 1, kMaxLanes);
  const double lane_height = lanes > 2 ? 10 : 16;
  const double top = 2;
  auto x_of = [&](double time) { return left + (time - begin_) / (end_ - begin_) * (right - left); };

  QFont small = font();
  small.setPointSizeF(small.pointSizeF() * 0.85);
  painter.setFont(small);
  painter.setPen(QColor(0x5F, 0x66, 0x70));
  for (int lane = 0; lane < lanes && lane < ranks.size(); ++lane) {
    const QRectF label(0, top + lane * lane_height, left - 6, lane_height);
    painter.drawText(label, Qt::AlignRight | Qt::AlignVCenter, QStringLiteral("r%1").arg(ranks[lane]));
  }
  painter.fillRect(QRectF(left, top, right - left, lanes * lane_height), QColor(0xF1, 0xF2, 0xF4));
  for (int row = 0; row < model_->rowCount(); ++row) {
    const PhaseInterval& phase = model_->interval(row);
    const int lane = static_cast<int>(ranks.indexOf(phase.rank));
    if (lane < 0 || lane >= lanes) continue;
    const double x0 = std::max(left, x_of(phase.begin));
    const double x1 = std::min(right, x_of(phase.end));
    if (x1 <= left || x0 >= right) continue;
    // A history bucket's share of a phase (older than the full-rate intervals) is drawn lighter: its place inside
    // the bucket is laid out, not measured.
    QColor color = phase_color(phase.phase);
    if (phase.coarse)
      color = QColor::fromRgbF(0.45 + 0.55 * color.redF(), 0.45 + 0.55 * color.greenF(), 0.45 + 0.55 * color.blueF());
    painter.fillRect(QRectF(x0, top + lane * lane_height + 1, std::max(1.5, x1 - x0), lane_height - 2), color);
  }
  if (cursor_ >= 0) {
    painter.setPen(QPen(QColor(0x21, 0x21, 0x21), 1.5));
    const double x = x_of(cursor_);
    painter.drawLine(QPointF(x, top), QPointF(x, top + lanes * lane_height));
  }
  // Legend under the lanes.
  double x = left;
  const double legend_y = top + lanes * lane_height + 4;
  painter.setPen(QColor(0x3A, 0x3F, 0x46));
  for (const char* name : {"train", "enter", "rollout", "exit"}) {
    const QString text = QString::fromLatin1(name);
    painter.fillRect(QRectF(x, legend_y + 4, 10, 10), phase_color(text));
    painter.drawText(QRectF(x + 14, legend_y, 80, 18), Qt::AlignLeft | Qt::AlignVCenter, text);
    x += 20 + painter.fontMetrics().horizontalAdvance(text) + 12;
  }
  painter.drawText(QRectF(x + 8, legend_y, right - x - 8, 18), Qt::AlignLeft | Qt::AlignVCenter,
                   QStringLiteral("phase of each selected rank (lighter: a history bucket's shares)"));
}

MemoryTimelineView::MemoryTimelineView(MemorySeriesModel* memory, PhaseIntervalModel* phases, QWidget* parent)
    : QWidget(parent),
      memory_(memory),
      phases_(phases),
      chart_(new QChart()),
      view_(new QChartView(chart_, this)),
      band_(new PhaseBand(phases, this)),
      title_(new QLabel(this)),
      axis_x_(new QValueAxis(chart_)),
      axis_y_(new QValueAxis(chart_)),
      axis_log_(new QLogValueAxis(chart_)),
      baseline_(new QLineSeries(chart_)),
      used_(new QLineSeries(chart_)),
      capacity_(new QLineSeries(chart_)),
      cursor_(new QLineSeries(chart_)) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->setSpacing(0);
  layout->addWidget(build_controls());
  layout->addWidget(view_, 1);
  layout->addWidget(band_);

  view_->setRenderHint(QPainter::Antialiasing, true);
  chart_->setMargins(QMargins(4, 4, 8, 0));
  chart_->setBackgroundRoundness(0);
  chart_->legend()->setAlignment(Qt::AlignTop);
  chart_->legend()->setFont(QFont(font().family(), static_cast<int>(font().pointSizeF() * 0.9)));
  chart_->setAnimationOptions(QChart::NoAnimation);

  chart_->addAxis(axis_x_, Qt::AlignBottom);
  chart_->addAxis(axis_y_, Qt::AlignLeft);
  chart_->addAxis(axis_log_, Qt::AlignLeft);
  axis_log_->setBase(10);
  axis_log_->setLabelFormat(QStringLiteral("%g"));
  axis_log_->setVisible(false);
  axis_y_->setTickAnchor(0);
  axis_x_->setTickAnchor(0);

  // Stacked areas: each kind between the previous kind's upper edge and its own; then hybridshard's device cache,
  // and untracked on top.
  QStringList stack_names = buffer_kinds();
  stack_names << QStringLiteral("cached") << QStringLiteral("untracked");
  QLineSeries* lower = baseline_;
  for (const QString& name : stack_names) {
    auto* upper = new QLineSeries(chart_);
    auto* area = new QAreaSeries(upper, lower);
    const bool untracked = name == QLatin1String("untracked");
    area->setName(untracked                         ? QStringLiteral("Untracked (used \u2212 tracked \u2212 cached)")
                  : name == QLatin1String("cached") ? QStringLiteral("Cached (hybridshard's cache)")
                                                    : buffer_kind_label(name));
    const QColor color = kind_color(name);
    if (untracked) {
      QBrush brush(QColor(0x9E, 0x9E, 0x9E), Qt::BDiagPattern);
      area->setBrush(brush);
      area->setPen(QPen(QColor(0x9E, 0x9E, 0x9E), 0.8));
    } else {
      QColor fill = color;
      fill.setAlpha(215);
      area->setBrush(fill);
      area->setPen(QPen(color.darker(115), 0.8));
    }
    chart_->addSeries(area);
    area->attachAxis(axis_x_);
    stack_lines_.push_back(upper);
    stack_areas_.push_back(area);
    lower = upper;
  }
  used_->setName(QStringLiteral("Device used"));
  used_->setPen(QPen(QColor(0x21, 0x21, 0x21), 1.8));
  capacity_->setName(QStringLiteral("Capacity"));
  capacity_->setPen(QPen(QColor(0xC6, 0x28, 0x28), 1.6, Qt::DashLine));
  cursor_->setPen(QPen(QColor(0x21, 0x21, 0x21), 1.2, Qt::DotLine));
  for (QLineSeries* series : {used_, capacity_, cursor_}) {
    chart_->addSeries(series);
    series->attachAxis(axis_x_);
  }
  attach_y_axis(axis_y_);
  for (QLegendMarker* marker : chart_->legend()->markers(cursor_)) marker->setVisible(false);

  // The phase band redraws itself when its model resets; the chart follows the memory model.
  connect(memory_, &QAbstractItemModel::modelReset, this, &MemoryTimelineView::rebuild);
  band_->set_chart_view(view_);
  connect(chart_, &QChart::plotAreaChanged, band_, qOverload<>(&QWidget::update));
  view_->viewport()->installEventFilter(this);
  band_->installEventFilter(this);
  view_->viewport()->setCursor(Qt::OpenHandCursor);
  view_->setToolTip(QStringLiteral("Wheel: zoom at the pointer \u00b7 drag: pan \u00b7 double-click: reset"));
  rebuild();
}

QWidget* MemoryTimelineView::build_controls() {
  auto* bar = new QWidget(this);
  auto* layout = new QHBoxLayout(bar);
  layout->setContentsMargins(4, 2, 4, 2);
  layout->setSpacing(6);
  title_->setStyleSheet(QStringLiteral("font-weight: 600"));
  layout->addWidget(title_, 1);

  span_choice_ = new QComboBox(bar);
  span_choice_->setObjectName(QStringLiteral("span"));
  span_choice_->addItem(QStringLiteral("Whole job"), 0.0);
  span_choice_->addItem(QStringLiteral("Last minute"), 60.0);
  span_choice_->addItem(QStringLiteral("Last 5 min"), 300.0);
  span_choice_->addItem(QStringLiteral("Last 15 min"), 900.0);
  span_choice_->addItem(QStringLiteral("Last hour"), 3600.0);
  connect(span_choice_, &QComboBox::activated, this, [this](int index) {
    const double seconds = span_choice_->itemData(index).toDouble();
    seconds > 0 ? show_last(seconds) : show_whole_job();
  });
  layout->addWidget(span_choice_);

  auto tool = [&](const QString& text, const QString& name, const QString& tip, auto&& action) {
    auto* button = new QToolButton(bar);
    button->setText(text);
    button->setObjectName(name);
    button->setToolTip(tip);
    button->setAutoRaise(true);
    connect(button, &QToolButton::clicked, this, action);
    layout->addWidget(button);
  };
  tool(QStringLiteral("\u2212"), QStringLiteral("zoom_out"), QStringLiteral("Zoom out"), [this] { zoom(2.0); });
  tool(QStringLiteral("+"), QStringLiteral("zoom_in"), QStringLiteral("Zoom in"), [this] { zoom(0.5); });
  tool(QStringLiteral("Reset"), QStringLiteral("reset"), QStringLiteral("Back to the whole job or the last minutes"),
       [this] { reset_zoom(); });
  span_text_ = new QLabel(bar);
  span_text_->setStyleSheet(QStringLiteral("color: #5f6670"));
  span_text_->setMinimumWidth(fontMetrics().horizontalAdvance(QStringLiteral("00 h 00 min \u2013 00 h 00 min")));
  layout->addWidget(span_text_);

  capacity_box_ = new QCheckBox(QStringLiteral("Capacity"), bar);
  capacity_box_->setChecked(capacity_visible_);
  capacity_box_->setToolTip(QStringLiteral("The capacity line; without it the y axis fits the memory in use"));
  connect(capacity_box_, &QCheckBox::toggled, this, &MemoryTimelineView::set_capacity_visible);
  layout->addWidget(capacity_box_);
  log_box_ = new QCheckBox(QStringLiteral("Log"), bar);
  log_box_->setToolTip(QStringLiteral("A logarithmic y axis: small buffers beside a large KV cache"));
  connect(log_box_, &QCheckBox::toggled, this, &MemoryTimelineView::set_log_scale);
  layout->addWidget(log_box_);

  layout->addWidget(new QLabel(QStringLiteral("Ranks"), bar));
  rank_picker_ = new QLineEdit(bar);
  rank_picker_->setObjectName(QStringLiteral("rank_picker"));
  rank_picker_->setPlaceholderText(QStringLiteral("0,2 or 0-7"));
  rank_picker_->setToolTip(QStringLiteral("Ranks summed in the timeline, e.g. 0 or 0,2 or 0-7 (Enter to apply)"));
  rank_picker_->setMaximumWidth(fontMetrics().horizontalAdvance(QStringLiteral("000-000,000-000")) + 16);
  connect(rank_picker_, &QLineEdit::editingFinished, this, [this] {
    QVector<int> ranks;
    const bool ok = parse_rank_list(rank_picker_->text(), &ranks);
    rank_picker_->setStyleSheet(ok ? QString() : QStringLiteral("border: 1px solid #c62828"));
    rank_picker_->setProperty("invalid", !ok);
    if (ok) emit ranks_requested(ranks);
  });
  layout->addWidget(rank_picker_);
  return bar;
}

void MemoryTimelineView::attach_y_axis(QAbstractAxis* axis) {
  QVector<QAbstractSeries*> series;
  for (QAreaSeries* area : stack_areas_) series.push_back(area);
  for (QLineSeries* line : {used_, capacity_, cursor_}) series.push_back(line);
  for (QAbstractSeries* one : series) {
    for (QAbstractAxis* attached : one->attachedAxes()) {
      if (attached != axis_x_ && attached != axis) one->detachAxis(attached);
    }
    if (!one->attachedAxes().contains(axis)) one->attachAxis(axis);
  }
  axis_y_->setVisible(axis == axis_y_);
  axis_log_->setVisible(axis == axis_log_);
}

void MemoryTimelineView::set_fixed_duration(double seconds) {
  fixed_duration_ = seconds;
  rebuild();
}

void MemoryTimelineView::set_cursor_visible(bool visible) {
  cursor_visible_ = visible;
  rebuild();
}

double MemoryTimelineView::follow_end() const {
  const int rows = memory_->rowCount();
  const double newest = rows > 0 ? memory_->value(rows - 1, MemorySeriesModel::kTime) : 0.0;
  return std::max({memory_->now(), newest, TimeWindow::kMinimumSeconds});
}

double MemoryTimelineView::job_end() const { return std::max(fixed_duration_, follow_end()); }

void MemoryTimelineView::show_whole_job() {
  window_.show_whole_job();
  sync_span_choice();
  rebuild();
}

void MemoryTimelineView::show_last(double seconds) {
  window_.show_last(seconds);
  sync_span_choice();
  rebuild();
}

void MemoryTimelineView::sync_span_choice() {
  const double seconds = window_.last_seconds();
  int index = span_choice_->findData(seconds);
  if (index < 0) {
    span_choice_->addItem(QStringLiteral("Last %1").arg(format_duration(seconds)), seconds);
    index = span_choice_->count() - 1;
  }
  const QSignalBlocker blocker(span_choice_);
  span_choice_->setCurrentIndex(index);
}

void MemoryTimelineView::zoom(double factor, double anchor_seconds) {
  window_.zoom(factor, anchor_seconds, window_.whole_job() ? job_end() : follow_end());
  rebuild();
}

void MemoryTimelineView::zoom(double factor) { zoom(factor, (visible_.begin + visible_.end) / 2); }

void MemoryTimelineView::pan(double seconds) {
  window_.pan(seconds, window_.whole_job() ? job_end() : follow_end());
  rebuild();
}

void MemoryTimelineView::reset_zoom() {
  window_.reset();
  rebuild();
}

void MemoryTimelineView::set_capacity_visible(bool visible) {
  capacity_visible_ = visible;
  if (capacity_box_->isChecked() != visible) capacity_box_->setChecked(visible);
  rebuild();
}

void MemoryTimelineView::set_log_scale(bool on) {
  log_scale_ = on;
  if (log_box_->isChecked() != on) log_box_->setChecked(on);
  // The log axis never sees a value at or below 0: values come to its floor before it is attached, and it is
  // detached before they go back to 0.
  if (on) {
    rebuild();
    attach_y_axis(axis_log_);
  } else {
    attach_y_axis(axis_y_);
    rebuild();
  }
}

double MemoryTimelineView::y_max() const { return log_scale_ ? axis_log_->max() : axis_y_->max(); }

void MemoryTimelineView::show_ranks(const QVector<int>& ranks) {
  if (rank_picker_->hasFocus()) return;  // the operator is typing
  rank_picker_->setText(format_rank_list(ranks));
  rank_picker_->setStyleSheet(QString());
  rank_picker_->setProperty("invalid", false);
}

double MemoryTimelineView::seconds_at(QPoint global) const {
  const QRectF plot = chart_->plotArea();
  const double x = view_->mapToScene(view_->viewport()->mapFromGlobal(global)).x();
  const double share = plot.width() > 0 ? (x - plot.left()) / plot.width() : 0.5;
  return visible_.begin + share * visible_.length();
}

bool MemoryTimelineView::eventFilter(QObject* watched, QEvent* event) {
  if (watched != view_->viewport() && watched != band_) return QWidget::eventFilter(watched, event);
  switch (event->type()) {
    case QEvent::Wheel: {
      auto* wheel = static_cast<QWheelEvent*>(event);
      const double notches = wheel->angleDelta().y() / 120.0;
      if (notches != 0) zoom(std::pow(0.8, notches), seconds_at(wheel->globalPosition().toPoint()));
      return true;
    }
    case QEvent::MouseButtonPress: {
      auto* mouse = static_cast<QMouseEvent*>(event);
      if (mouse->button() != Qt::LeftButton) break;
      dragging_ = true;
      drag_from_ = mouse->globalPosition().toPoint();
      view_->viewport()->setCursor(Qt::ClosedHandCursor);
      return true;
    }
    case QEvent::MouseMove: {
      auto* mouse = static_cast<QMouseEvent*>(event);
      if (!dragging_) break;
      const QPoint at = mouse->globalPosition().toPoint();
      const double width = std::max(1.0, chart_->plotArea().width());
      pan(-(at.x() - drag_from_.x()) * visible_.length() / width);
      drag_from_ = at;
      return true;
    }
    case QEvent::MouseButtonRelease:
      if (!dragging_) break;
      dragging_ = false;
      view_->viewport()->setCursor(Qt::OpenHandCursor);
      return true;
    case QEvent::MouseButtonDblClick:
      reset_zoom();
      return true;
    default:
      break;
  }
  return QWidget::eventFilter(watched, event);
}

void MemoryTimelineView::rebuild() {
  const QVector<int> ranks = memory_->ranks();
  QString names = format_rank_list(ranks);
  if (names.size() > 40) names = QStringLiteral("%1 ranks").arg(ranks.size());
  title_->setText(ranks.size() == 1 ? QStringLiteral("Memory of rank %1").arg(names)
                                    : QStringLiteral("Memory of ranks %1, summed").arg(names));

  // What is visible, and the rows that draw it: about two per pixel column of the plot.
  const double whole = job_end();
  visible_ = window_.span(window_.whole_job() || !window_.following() ? whole : follow_end());
  const int budget = std::max(400, 2 * static_cast<int>(chart_->plotArea().width()));
  const QVector<int> rows = rows_to_draw(*memory_, visible_, budget);
  points_drawn_ = rows.size();

  // The y axis fits what is visible (and the capacity when it is shown), in the byte unit that reads.
  double top = 0;  // GiB
  for (int row : rows) {
    top = std::max(top, height_of(*memory_, row));
    if (capacity_visible_) top = std::max(top, memory_->value(row, MemorySeriesModel::kDeviceTotal));
  }
  if (top <= 0) top = 1;
  const ByteUnit unit = byte_unit_for(top * kGiB);
  y_unit_ = unit.name;
  const double scale = kGiB / unit.bytes;
  const double y_top = top * scale;
  // A log axis cannot show 0: values below a floor three decades under the top sit on the floor.
  const double floor = log_scale_ ? std::pow(10.0, std::floor(std::log10(y_top)) - 3) : 0.0;
  auto y_of = [&](double gib) { return std::max(gib * scale, floor); };

  const TimeUnit time_unit = time_unit_for(visible_.length());
  auto x_of = [&](double seconds) { return seconds / time_unit.seconds; };

  QVector<QList<QPointF>> stacks(stack_lines_.size());
  QList<QPointF> used, capacity, baseline;
  QVector<bool> nonzero(stack_lines_.size(), false);
  for (QList<QPointF>& stack : stacks) stack.reserve(2 * rows.size());
  used.reserve(2 * rows.size());
  for (int row : rows) {
    const double x = x_of(memory_->value(row, MemorySeriesModel::kTime));
    double sum = 0;
    for (int kind = 0; kind < stack_lines_.size(); ++kind) {
      // The kinds, then cached and untracked (the two columns after kTracked).
      const int kinds = stack_lines_.size() - 2;
      const int column =
          kind < kinds ? MemorySeriesModel::kFirstKind + kind : MemorySeriesModel::kTracked + 1 + (kind - kinds);
      const double value = memory_->value(row, column);
      nonzero[kind] = nonzero[kind] || value > 0;
      sum += value;
      // A step: the previous value holds until this sample.
      if (!stacks[kind].isEmpty()) stacks[kind].append(QPointF(x, stacks[kind].back().y()));
      stacks[kind].append(QPointF(x, y_of(sum)));
    }
    if (!used.isEmpty()) used.append(QPointF(x, used.back().y()));
    used.append(QPointF(x, y_of(memory_->value(row, MemorySeriesModel::kDeviceUsed))));
    if (capacity_visible_) capacity.append(QPointF(x, y_of(memory_->value(row, MemorySeriesModel::kDeviceTotal))));
    baseline.append(QPointF(x, floor));
  }
  baseline_->replace(baseline);
  for (int kind = 0; kind < stack_lines_.size(); ++kind) {
    stack_lines_[kind]->replace(stacks[kind]);
    for (QLegendMarker* marker : chart_->legend()->markers(stack_areas_[kind])) marker->setVisible(nonzero[kind]);
  }
  used_->replace(used);
  capacity_->replace(capacity);
  for (QLegendMarker* marker : chart_->legend()->markers(capacity_)) marker->setVisible(capacity_visible_);

  double y_axis_top = y_top;
  if (log_scale_) {
    y_axis_top = std::pow(10.0, std::ceil(std::log10(y_top * 1.05)));
    axis_log_->setRange(floor, y_axis_top);
    axis_log_->setTitleText(unit.name);
  } else {
    const double step = nice_step(y_top, 5);
    y_axis_top = std::ceil(y_top * 1.06 / step) * step;
    set_value_range(axis_y_, 0, y_axis_top, step);
    axis_y_->setTitleText(unit.name);
  }
  set_value_range(axis_x_, x_of(visible_.begin), x_of(visible_.end), nice_step(x_of(visible_.length()), 8));
  axis_x_->setTitleText(QStringLiteral("%1 since job start").arg(time_unit.name));

  const double now = memory_->now();
  if (cursor_visible_ && now < whole - 1e-6) {
    cursor_->replace(QList<QPointF>{QPointF(x_of(now), std::max(floor, 0.0)), QPointF(x_of(now), y_axis_top)});
    band_->set_cursor(now);
  } else {
    cursor_->clear();
    band_->set_cursor(-1);
  }
  band_->set_time_range(visible_.begin, visible_.end);
  span_text_->setText(QStringLiteral("%1 \u2013 %2%3")
                          .arg(format_duration(visible_.begin), format_duration(visible_.end),
                               window_.following() ? QString() : QStringLiteral(" (zoomed)")));
}

}  // namespace hybridshard::gui
