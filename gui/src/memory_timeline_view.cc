#include "memory_timeline_view.h"

#include <QAreaSeries>
#include <QChart>
#include <QChartView>
#include <QLabel>
#include <QLegendMarker>
#include <QLineSeries>
#include <QPainter>
#include <QVBoxLayout>
#include <QValueAxis>
#include <algorithm>
#include <cmath>

#include "job_snapshot.h"
#include "timeline_models.h"

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
  return QColor(0xBA, 0xB0, 0xAC);
}

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

void PhaseBand::paintEvent(QPaintEvent*) {
  QPainter painter(this);
  painter.fillRect(rect(), palette().window());
  double left = 60;
  double right = width() - 20;
  if (view_ != nullptr && view_->chart() != nullptr) {
    // The chart's plot area, from scene coordinates to this widget's.
    const QRectF plot = view_->chart()->plotArea();
    left = mapFromGlobal(view_->viewport()->mapToGlobal(view_->mapFromScene(plot.topLeft()))).x();
    right = mapFromGlobal(view_->viewport()->mapToGlobal(view_->mapFromScene(plot.topRight()))).x();
    if (right <= left) right = left + 1;
  }
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
    painter.fillRect(QRectF(x0, top + lane * lane_height + 1, std::max(1.5, x1 - x0), lane_height - 2),
                     phase_color(phase.phase));
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
                   QStringLiteral("phase of each selected rank"));
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
      used_(new QLineSeries(chart_)),
      capacity_(new QLineSeries(chart_)),
      cursor_(new QLineSeries(chart_)) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->setSpacing(0);
  title_->setStyleSheet(QStringLiteral("font-weight: 600; padding: 2px 4px"));
  layout->addWidget(title_);
  layout->addWidget(view_, 1);
  layout->addWidget(band_);

  view_->setRenderHint(QPainter::Antialiasing, true);
  chart_->setMargins(QMargins(4, 4, 8, 0));
  chart_->setBackgroundRoundness(0);
  chart_->legend()->setAlignment(Qt::AlignTop);
  chart_->legend()->setFont(QFont(font().family(), static_cast<int>(font().pointSizeF() * 0.9)));
  chart_->setAnimationOptions(QChart::NoAnimation);

  axis_x_->setTitleText(QStringLiteral("seconds since job start"));
  axis_x_->setLabelFormat(QStringLiteral("%.0f"));
  axis_y_->setTitleText(QStringLiteral("GiB"));
  axis_y_->setLabelFormat(QStringLiteral("%.0f"));
  chart_->addAxis(axis_x_, Qt::AlignBottom);
  chart_->addAxis(axis_y_, Qt::AlignLeft);

  // Stacked areas: each kind between the previous kind's upper edge and its own; untracked on top.
  QStringList stack_names = buffer_kinds();
  stack_names << QStringLiteral("untracked");
  QLineSeries* lower = nullptr;
  for (const QString& name : stack_names) {
    auto* upper = new QLineSeries(chart_);
    auto* area = new QAreaSeries(upper, lower);
    const bool untracked = name == QLatin1String("untracked");
    area->setName(untracked ? QStringLiteral("Untracked (used \u2212 tracked)") : buffer_kind_label(name));
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
    area->attachAxis(axis_y_);
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
    series->attachAxis(axis_y_);
  }
  for (QLegendMarker* marker : chart_->legend()->markers(cursor_)) marker->setVisible(false);

  connect(memory_, &QAbstractItemModel::modelReset, this, &MemoryTimelineView::rebuild);
  connect(phases_, &QAbstractItemModel::modelReset, this, &MemoryTimelineView::rebuild);
  band_->set_chart_view(view_);
  connect(chart_, &QChart::plotAreaChanged, band_, qOverload<>(&QWidget::update));
  rebuild();
}

void MemoryTimelineView::rebuild() {
  const int rows = memory_->rowCount();
  const QVector<int> ranks = memory_->ranks();
  QStringList names;
  for (int rank : ranks.mid(0, 6)) names << QString::number(rank);
  if (ranks.size() > 6) names << QStringLiteral("\u2026");
  title_->setText(ranks.size() == 1
                      ? QStringLiteral("Memory of rank %1 (GiB)").arg(ranks.front())
                      : QStringLiteral("Memory of ranks %1, summed (GiB)").arg(names.join(QStringLiteral(", "))));

  double y_max = 1;
  QVector<QList<QPointF>> stacks(stack_lines_.size());
  QList<QPointF> used, capacity;
  QVector<bool> nonzero(stack_lines_.size(), false);
  for (int row = 0; row < rows; ++row) {
    const double time = memory_->value(row, MemorySeriesModel::kTime);
    double sum = 0;
    for (int kind = 0; kind < stack_lines_.size(); ++kind) {
      const int column =
          kind < stack_lines_.size() - 1 ? MemorySeriesModel::kFirstKind + kind : int{MemorySeriesModel::kUntracked};
      const double value = memory_->value(row, column);
      nonzero[kind] = nonzero[kind] || value > 0;
      sum += value;
      // A step: the previous value holds until this sample.
      if (!stacks[kind].isEmpty()) stacks[kind].append(QPointF(time, stacks[kind].back().y()));
      stacks[kind].append(QPointF(time, sum));
    }
    const double used_value = memory_->value(row, MemorySeriesModel::kDeviceUsed);
    const double total = memory_->value(row, MemorySeriesModel::kDeviceTotal);
    if (!used.isEmpty()) used.append(QPointF(time, used.back().y()));
    used.append(QPointF(time, used_value));
    capacity.append(QPointF(time, total));
    y_max = std::max({y_max, used_value, total, sum});
  }
  for (int kind = 0; kind < stack_lines_.size(); ++kind) {
    stack_lines_[kind]->replace(stacks[kind]);
    for (QLegendMarker* marker : chart_->legend()->markers(stack_areas_[kind])) marker->setVisible(nonzero[kind]);
  }
  used_->replace(used);
  capacity_->replace(capacity);

  const double now = memory_->now();
  const double x_end = std::max({fixed_duration_, now, rows > 0 ? memory_->value(rows - 1, 0) : 0.0, 1.0});
  axis_x_->setRange(0, x_end);
  const double step = y_max > 200 ? 50 : y_max > 80 ? 20 : y_max > 40 ? 10 : y_max > 16 ? 5 : y_max > 4 ? 1 : 0.25;
  axis_y_->setRange(0, std::ceil(y_max * 1.06 / step) * step);
  axis_y_->setTickType(QValueAxis::TicksDynamic);
  axis_y_->setTickAnchor(0);
  axis_y_->setTickInterval(step);
  axis_y_->setLabelFormat(step < 1 ? QStringLiteral("%.2f") : QStringLiteral("%.0f"));
  const double x_step = x_end > 600 ? 120 : x_end > 120 ? 30 : x_end > 40 ? 10 : x_end > 12 ? 5 : 1;
  axis_x_->setTickType(QValueAxis::TicksDynamic);
  axis_x_->setTickAnchor(0);
  axis_x_->setTickInterval(x_step);

  if (cursor_visible_ && now < x_end - 1e-6) {
    cursor_->replace(QList<QPointF>{QPointF(now, 0), QPointF(now, axis_y_->max())});
    band_->set_cursor(now);
  } else {
    cursor_->clear();
    band_->set_cursor(-1);
  }
  band_->set_time_range(0, x_end);
}

}  // namespace hybridshard::gui
