// The residency grid: draws BufferGridModel. Colour = residency (gpu / cpu / none), fill = bytes relative to the
// largest buffer, a heavier line where the host or pipeline stage changes; aggregated rows draw the share of ranks
// in each residency.
#pragma once

#include <QStyledItemDelegate>
#include <QWidget>

class QTableView;
class QCheckBox;
class QLabel;

namespace hybridshard::gui {

class BufferGridModel;

struct ResidencyColors {
  static QColor gpu();
  static QColor cpu();
  static QColor none();
  static QColor of(const QString& residency);  // "gpu", "cpu", "none"
};

class ResidencyCellDelegate : public QStyledItemDelegate {
  Q_OBJECT

 public:
  using QStyledItemDelegate::QStyledItemDelegate;
  void paint(QPainter* painter, const QStyleOptionViewItem& option, const QModelIndex& index) const override;
  QSize sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const override;
};

class ResidencyGridView : public QWidget {
  Q_OBJECT

 public:
  explicit ResidencyGridView(BufferGridModel* model, QWidget* parent = nullptr);

  QTableView* table() const { return table_; }
  // Aggregate by host and pipeline stage automatically above this many ranks (the checkbox overrides it).
  void set_auto_aggregate_above(int ranks) { auto_aggregate_above_ = ranks; }
  void select_ranks(const QVector<int>& ranks);

 signals:
  void ranks_selected(const QVector<int>& ranks);

 private:
  void on_model_reset();
  void on_selection_changed();

  BufferGridModel* model_;
  QTableView* table_;
  QCheckBox* aggregate_;
  QLabel* scale_;
  int auto_aggregate_above_ = 64;
  bool user_chose_aggregation_ = false;
  bool selecting_ = false;
};

}  // namespace hybridshard::gui
