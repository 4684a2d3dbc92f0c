#include "residency_grid_view.h"

#include <QCheckBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QPainter>
#include <QPainterPath>
#include <QTableView>
#include <QVBoxLayout>
#include <algorithm>

#include "buffer_grid_model.h"
#include "units.h"

namespace hybridshard::gui {

QColor ResidencyColors::gpu() { return QColor(0x43, 0xA0, 0x47); }
QColor ResidencyColors::cpu() { return QColor(0x1E, 0x88, 0xE5); }
QColor ResidencyColors::none() { return QColor(0xB0, 0xB4, 0xBA); }

QColor ResidencyColors::of(const QString& residency) {
  if (residency == QLatin1String("gpu")) return gpu();
  if (residency == QLatin1String("cpu")) return cpu();
  return none();
}

namespace {

QColor tint(const QColor& color, double strength) {
  return QColor::fromRgbF(1 - (1 - color.redF()) * strength, 1 - (1 - color.greenF()) * strength,
                          1 - (1 - color.blueF()) * strength);
}

QWidget* legend_swatch(const QColor& color, const QString& text, QWidget* parent) {
  auto* label = new QLabel(parent);
  label->setTextFormat(Qt::RichText);
  label->setText(QStringLiteral("<span style='color:%1; font-size:14px'>\u25A0</span> %2").arg(color.name(), text));
  return label;
}

}  // namespace

QSize ResidencyCellDelegate::sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const {
  const QFontMetrics metrics(option.font);
  return QSize(metrics.horizontalAdvance(QStringLiteral("00.00 GiB")) + 16, metrics.height() + 10);
}

void ResidencyCellDelegate::paint(QPainter* painter, const QStyleOptionViewItem& option,
                                  const QModelIndex& index) const {
  painter->save();
  painter->setRenderHint(QPainter::Antialiasing, true);
  const bool selected = option.state & QStyle::State_Selected;
  painter->fillRect(option.rect, selected ? QColor(0xE3, 0xEC, 0xFA) : option.palette.base().color());

  // A heavier line above the first row of a new host or pipeline stage.
  const QAbstractItemModel* model = index.model();
  if (model->headerData(index.row(), Qt::Vertical, BufferGridModel::kGroupStartRole).toBool()) {
    painter->setPen(QPen(QColor(0x60, 0x66, 0x70), 2));
    painter->drawLine(option.rect.topLeft(), option.rect.topRight());
  }

  const QString residency = index.data(BufferGridModel::kResidencyRole).toString();
  if (residency.isEmpty()) {  // no such buffer on this rank
    painter->restore();
    return;
  }
  const QRectF cell = QRectF(option.rect).adjusted(3, 3, -3, -3);
  const double fill = std::clamp(index.data(BufferGridModel::kFillRole).toDouble(), 0.0, 1.0);
  QPainterPath outline;
  outline.addRoundedRect(cell, 3, 3);
  painter->setClipPath(outline);

  QColor text_color(0x1A, 0x1D, 0x21);
  const bool aggregated = index.data(BufferGridModel::kBufferNameRole).toString().isEmpty();
  if (aggregated) {
    // Aggregated row: the share of ranks in each residency, left to right gpu, cpu, none.
    const int gpu = index.data(BufferGridModel::kGpuCountRole).toInt();
    const int cpu = index.data(BufferGridModel::kCpuCountRole).toInt();
    const int none = index.data(BufferGridModel::kNoneCountRole).toInt();
    const double total = std::max(1, gpu + cpu + none);
    double x = cell.left();
    const std::pair<int, QColor> parts[] = {
        {gpu, ResidencyColors::gpu()}, {cpu, ResidencyColors::cpu()}, {none, tint(ResidencyColors::none(), 0.5)}};
    for (const auto& [count, color] : parts) {
      const double width = cell.width() * count / total;
      painter->fillRect(QRectF(x, cell.top(), width, cell.height()), tint(color, 0.75));
      x += width;
    }
  } else {
    const QColor color = ResidencyColors::of(residency);
    if (residency == QLatin1String("none")) {
      painter->fillRect(cell, QColor(0xF4, 0xF5, 0xF7));
      text_color = QColor(0x8A, 0x90, 0x99);
    } else {
      painter->fillRect(cell, tint(color, 0.22));
      const double width = std::max(3.0, cell.width() * fill);
      painter->fillRect(QRectF(cell.left(), cell.top(), width, cell.height()), tint(color, 0.72));
    }
  }
  painter->setClipping(false);
  const QColor border = residency == QLatin1String("none")    ? ResidencyColors::none()
                        : residency == QLatin1String("mixed") ? QColor(0x80, 0x86, 0x90)
                                                              : ResidencyColors::of(residency).darker(125);
  QPen pen(border, 1);
  if (residency == QLatin1String("none")) pen.setStyle(Qt::DashLine);
  painter->setPen(pen);
  painter->setBrush(Qt::NoBrush);
  painter->drawPath(outline);

  QFont font = option.font;
  if (cell.height() < 16) font.setPointSizeF(font.pointSizeF() * 0.85);
  painter->setFont(font);
  painter->setPen(text_color);
  painter->drawText(cell.adjusted(4, 0, -4, 0), Qt::AlignCenter, index.data(Qt::DisplayRole).toString());
  painter->restore();
}

ResidencyGridView::ResidencyGridView(BufferGridModel* model, QWidget* parent)
    : QWidget(parent),
      model_(model),
      table_(new QTableView(this)),
      aggregate_(new QCheckBox(this)),
      scale_(new QLabel(this)) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  layout->setSpacing(4);

  auto* legend = new QHBoxLayout();
  legend->setSpacing(14);
  legend->addWidget(legend_swatch(ResidencyColors::gpu(), QStringLiteral("on GPU"), this));
  legend->addWidget(legend_swatch(ResidencyColors::cpu(), QStringLiteral("on host (pinned)"), this));
  legend->addWidget(legend_swatch(ResidencyColors::none(), QStringLiteral("freed"), this));
  scale_->setStyleSheet(QStringLiteral("color: #5f6670"));
  legend->addWidget(scale_);
  legend->addStretch(1);
  aggregate_->setText(QStringLiteral("Group by host \u00d7 stage"));
  aggregate_->setToolTip(QStringLiteral("One row per host and pipeline stage, showing the share of ranks on gpu, cpu "
                                        "and none (automatic above %1 ranks)")
                             .arg(auto_aggregate_above_));
  legend->addWidget(aggregate_);
  layout->addLayout(legend);

  table_->setModel(model_);
  table_->setItemDelegate(new ResidencyCellDelegate(table_));
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::ExtendedSelection);
  table_->setShowGrid(false);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setMouseTracking(true);
  table_->setVerticalScrollMode(QAbstractItemView::ScrollPerPixel);
  table_->setHorizontalScrollMode(QAbstractItemView::ScrollPerPixel);
  // Columns as wide as their title and cells need; the last one takes what is left.
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  table_->horizontalHeader()->setStretchLastSection(true);
  table_->horizontalHeader()->setHighlightSections(false);
  table_->verticalHeader()->setSectionResizeMode(QHeaderView::Fixed);
  table_->verticalHeader()->setDefaultSectionSize(28);
  table_->verticalHeader()->setDefaultAlignment(Qt::AlignLeft | Qt::AlignVCenter);
  layout->addWidget(table_, 1);

  connect(aggregate_, &QCheckBox::toggled, this, [this](bool on) {
    user_chose_aggregation_ = true;
    model_->set_aggregated(on);
  });
  connect(model_, &QAbstractItemModel::modelReset, this, &ResidencyGridView::on_model_reset);
  connect(model_, &QAbstractItemModel::dataChanged, this, [this] {
    if (scale_->text().isEmpty()) on_model_reset();
  });
  connect(table_->selectionModel(), &QItemSelectionModel::selectionChanged, this,
          &ResidencyGridView::on_selection_changed);
  on_model_reset();
}

void ResidencyGridView::on_model_reset() {
  int ranks = 0;
  for (int row = 0; row < model_->rowCount(); ++row) ranks += model_->ranks_of_row(row).size();
  if (!user_chose_aggregation_ && !model_->aggregated() && ranks > auto_aggregate_above_) {
    const QSignalBlocker blocker(aggregate_);
    aggregate_->setChecked(true);
    model_->set_aggregated(true);  // resets the model again, which calls back here
    return;
  }
  table_->verticalHeader()->setDefaultSectionSize(model_->rowCount() > 32 ? 20 : model_->rowCount() > 12 ? 26 : 34);
  std::int64_t largest = 0;
  for (int row = 0; row < model_->rowCount(); ++row) {
    for (int column = 0; column < model_->columnCount(); ++column) {
      const QModelIndex index = model_->index(row, column);
      const double fill = index.data(BufferGridModel::kFillRole).toDouble();
      if (fill >= 1.0 && !model_->aggregated())
        largest = std::max<std::int64_t>(largest, index.data(BufferGridModel::kBytesRole).toLongLong());
    }
  }
  scale_->setText(largest > 0 ? QStringLiteral("fill = bytes, full cell = %1").arg(format_bytes(largest))
                              : QStringLiteral("fill = share of ranks"));
}

void ResidencyGridView::on_selection_changed() {
  if (selecting_) return;
  QVector<int> ranks;
  for (const QModelIndex& index : table_->selectionModel()->selectedRows()) ranks += model_->ranks_of_row(index.row());
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  if (!ranks.isEmpty()) emit ranks_selected(ranks);
}

void ResidencyGridView::select_ranks(const QVector<int>& ranks) {
  selecting_ = true;
  QItemSelection selection;
  for (int row = 0; row < model_->rowCount(); ++row) {
    for (int rank : model_->ranks_of_row(row)) {
      if (ranks.contains(rank)) {
        selection.select(model_->index(row, 0), model_->index(row, std::max(0, model_->columnCount() - 1)));
        break;
      }
    }
  }
  table_->selectionModel()->select(selection, QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
  selecting_ = false;
}

}  // namespace hybridshard::gui
