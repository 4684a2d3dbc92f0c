#include "dashboard_window.h"

#include <QComboBox>
#include <QFrame>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QSlider>
#include <QSplitter>
#include <QStatusBar>
#include <QTableView>
#include <QToolButton>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>

#include "alert_model.h"
#include "buffer_grid_model.h"
#include "job_summary.h"
#include "memory_timeline_view.h"
#include "rank_table_model.h"
#include "replay_source.h"
#include "residency_grid_view.h"
#include "timeline_models.h"

namespace hybridshard::gui {

namespace {

QColor connection_color(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnected:
      return QColor(0x2E, 0x7D, 0x32);
    case ConnectionState::kConnecting:
      return QColor(0x75, 0x75, 0x75);
    case ConnectionState::kStale:
      return QColor(0xB2, 0x6A, 0x00);
    case ConnectionState::kRefused:
    case ConnectionState::kMalformed:
      return QColor(0xC6, 0x28, 0x28);
    case ConnectionState::kReplay:
      break;
  }
  return QColor(0x37, 0x47, 0x8F);
}

QLabel* section_title(const QString& text, QWidget* parent) {
  auto* label = new QLabel(text, parent);
  label->setStyleSheet(QStringLiteral("font-weight: 600; font-size: 11pt; color: #23272e; padding: 2px 0"));
  return label;
}

QTableView* plain_table(QAbstractItemModel* model, QWidget* parent) {
  auto* view = new QTableView(parent);
  view->setModel(model);
  view->setEditTriggers(QAbstractItemView::NoEditTriggers);
  view->setSelectionBehavior(QAbstractItemView::SelectRows);
  view->setAlternatingRowColors(true);
  view->setShowGrid(false);
  view->setWordWrap(false);
  view->verticalHeader()->setVisible(false);
  view->verticalHeader()->setDefaultSectionSize(22);
  view->horizontalHeader()->setHighlightSections(false);
  view->horizontalHeader()->setDefaultAlignment(Qt::AlignLeft | Qt::AlignVCenter);
  return view;
}

}  // namespace

DashboardWindow::DashboardWindow(DataSource* source, QWidget* parent)
    : QMainWindow(parent),
      source_(source),
      rank_model_(new RankTableModel(this)),
      grid_model_(new BufferGridModel(this)),
      alert_model_(new AlertModel(this)),
      memory_model_(new MemorySeriesModel(this)),
      phase_model_(new PhaseIntervalModel(this)) {
  setWindowTitle(QStringLiteral("hybridshard dashboard \u2014 %1").arg(source_->description()));
  setStyleSheet(
      QStringLiteral("QMainWindow { background: #f4f5f7; }"
                     "QFrame#card { background: white; border: 1px solid #dde0e5; border-radius: 6px; }"
                     "QTableView { background: white; border: 1px solid #dde0e5; alternate-background-color: #f8f9fb;"
                     "  selection-background-color: #dbe7fb; selection-color: #111; }"
                     "QHeaderView::section { background: #eef0f3; border: none; border-bottom: 1px solid #d5d9df;"
                     "  padding: 3px 6px; color: #3a3f46; }"));

  auto* central = new QWidget(this);
  auto* layout = new QVBoxLayout(central);
  layout->setContentsMargins(10, 8, 10, 6);
  layout->setSpacing(8);
  layout->addWidget(build_header());

  // Grid on the left; ranks and alerts on the right.
  auto* top = new QSplitter(Qt::Horizontal, central);
  auto* grid_panel = new QFrame(top);
  grid_panel->setObjectName(QStringLiteral("card"));
  auto* grid_layout = new QVBoxLayout(grid_panel);
  grid_layout->setContentsMargins(10, 6, 10, 8);
  grid_layout->addWidget(section_title(QStringLiteral("Buffer residency per rank"), grid_panel));
  grid_view_ = new ResidencyGridView(grid_model_, grid_panel);
  grid_layout->addWidget(grid_view_, 1);

  auto* side = new QFrame(top);
  side->setObjectName(QStringLiteral("card"));
  auto* side_layout = new QVBoxLayout(side);
  side_layout->setContentsMargins(10, 6, 10, 8);
  side_layout->addWidget(section_title(QStringLiteral("Ranks"), side));
  rank_view_ = plain_table(rank_model_, side);
  rank_view_->setSelectionMode(QAbstractItemView::ExtendedSelection);
  rank_view_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  rank_view_->horizontalHeader()->setStretchLastSection(false);
  side_layout->addWidget(rank_view_, 3);
  alerts_title_ = section_title(QStringLiteral("Alerts"), side);
  side_layout->addWidget(alerts_title_);
  alert_view_ = plain_table(alert_model_, side);
  alert_view_->setSelectionMode(QAbstractItemView::SingleSelection);
  alert_view_->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
  alert_view_->horizontalHeader()->setSectionResizeMode(AlertModel::kDetail, QHeaderView::Stretch);
  alert_view_->horizontalHeader()->setStretchLastSection(false);
  side_layout->addWidget(alert_view_, 2);
  top->addWidget(grid_panel);
  top->addWidget(side);
  top->setStretchFactor(0, 1);
  top->setStretchFactor(1, 1);
  top->setSizes({900, 680});

  auto* timeline_panel = new QFrame(central);
  timeline_panel->setObjectName(QStringLiteral("card"));
  auto* timeline_layout = new QVBoxLayout(timeline_panel);
  timeline_layout->setContentsMargins(6, 4, 6, 4);
  timeline_ = new MemoryTimelineView(memory_model_, phase_model_, timeline_panel);
  timeline_layout->addWidget(timeline_);

  auto* vertical = new QSplitter(Qt::Vertical, central);
  vertical->addWidget(top);
  vertical->addWidget(timeline_panel);
  vertical->setStretchFactor(0, 1);
  vertical->setStretchFactor(1, 1);
  vertical->setSizes({430, 480});
  layout->addWidget(vertical, 1);

  if (auto* replay = qobject_cast<ReplaySource*>(source_)) {
    layout->addWidget(build_replay_bar(replay));
    timeline_->set_fixed_duration(replay->duration());
    timeline_->set_cursor_visible(true);
  }
  setCentralWidget(central);

  connect(source_, &DataSource::snapshot_changed, this, &DashboardWindow::on_snapshot);
  connect(source_, &DataSource::connection_state_changed, this, &DashboardWindow::on_connection_state);
  connect(grid_view_, &ResidencyGridView::ranks_selected, this, [this](const QVector<int>& ranks) {
    if (syncing_selection_) return;
    user_selected_ = true;
    select_ranks(ranks);
  });
  connect(rank_view_->selectionModel(), &QItemSelectionModel::selectionChanged, this, [this] {
    if (syncing_selection_) return;
    QVector<int> ranks;
    for (const QModelIndex& index : rank_view_->selectionModel()->selectedRows())
      ranks << rank_model_->rank_at(index.row());
    if (ranks.isEmpty()) return;
    user_selected_ = true;
    select_ranks(ranks);
  });
  connect(timeline_, &MemoryTimelineView::ranks_requested, this, [this](const QVector<int>& ranks) {
    // Only ranks the job has (all of them while nothing is known yet).
    QVector<int> known;
    for (int rank : ranks) {
      if (rank_model_->rowCount() == 0 || rank_model_->row_of(rank) >= 0) known << rank;
    }
    if (known.isEmpty()) {
      timeline_->show_ranks(selected_ranks_);
      return;
    }
    user_selected_ = true;
    select_ranks(known);
  });
  connect(rank_model_, &QAbstractItemModel::modelReset, this, [this] { select_ranks(selected_ranks_); });

  resize(1600, 1000);
  on_connection_state(source_->connection_state(), source_->connection_detail());
  on_snapshot();
}

QWidget* DashboardWindow::build_header() {
  auto* header = new QFrame(this);
  header->setObjectName(QStringLiteral("card"));
  auto* layout = new QHBoxLayout(header);
  layout->setContentsMargins(14, 8, 14, 8);
  layout->setSpacing(18);
  auto* title = new QVBoxLayout();
  title->setSpacing(0);
  auto* name = new QLabel(QStringLiteral("hybridshard"), header);
  name->setStyleSheet(QStringLiteral("font-size: 14pt; font-weight: 700; color: #1f2a44"));
  auto* model = new QLabel(QStringLiteral("—"), header);
  model->setStyleSheet(QStringLiteral("color: #6b727c; font-size: 8pt"));
  title->addWidget(name);
  title->addWidget(model);
  layout->addLayout(title);
  cards_.insert(QStringLiteral("model"), model);
  const std::pair<const char*, const char*> cards[] = {
      {"layout", "Layout"}, {"world", "World"},      {"iteration", "Iteration"},
      {"phase", "Phase"},   {"enter", "Last enter"}, {"bandwidth", "Enter: received per rank"},
      {"exit", "Last exit"}};
  for (const auto& [key, caption_text] : cards) {
    auto* box = new QVBoxLayout();
    box->setSpacing(0);
    auto* caption = new QLabel(QString::fromLatin1(caption_text), header);
    caption->setStyleSheet(QStringLiteral("color: #6b727c; font-size: 8pt"));
    auto* value = new QLabel(QStringLiteral("\u2014"), header);
    value->setStyleSheet(QStringLiteral("font-size: 10.5pt; font-weight: 600; color: #1a1d21"));
    value->setTextInteractionFlags(Qt::TextSelectableByMouse);
    box->addWidget(caption);
    box->addWidget(value);
    layout->addLayout(box);
    cards_.insert(QString::fromLatin1(key), value);
  }
  layout->addStretch(1);
  connection_ = new QLabel(header);
  connection_->setTextFormat(Qt::RichText);
  connection_->setObjectName(QStringLiteral("connection"));
  layout->addWidget(connection_);
  return header;
}

QWidget* DashboardWindow::build_replay_bar(ReplaySource* replay) {
  auto* bar = new QFrame(this);
  bar->setObjectName(QStringLiteral("card"));
  auto* layout = new QHBoxLayout(bar);
  layout->setContentsMargins(10, 4, 10, 4);
  auto* play = new QToolButton(bar);
  play->setText(QStringLiteral("\u25B6  Play"));
  play->setToolButtonStyle(Qt::ToolButtonTextOnly);
  play->setMinimumWidth(80);
  auto* slider = new QSlider(Qt::Horizontal, bar);
  constexpr int kSteps = 10000;
  slider->setRange(0, kSteps);
  auto* position = new QLabel(bar);
  position->setMinimumWidth(150);
  auto* speed = new QComboBox(bar);
  for (double factor : {0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0})
    speed->addItem(QStringLiteral("%1\u00d7").arg(factor), factor);
  speed->setCurrentIndex(2);
  layout->addWidget(play);
  layout->addWidget(new QLabel(QStringLiteral("Replay"), bar));
  layout->addWidget(slider, 1);
  layout->addWidget(position);
  layout->addWidget(new QLabel(QStringLiteral("Speed"), bar));
  layout->addWidget(speed);

  const double duration = std::max(replay->duration(), 1e-9);
  auto show_position = [=](double seconds) {
    const QSignalBlocker blocker(slider);
    slider->setValue(static_cast<int>(std::lround(seconds / duration * kSteps)));
    position->setText(QStringLiteral("t = %1 s / %2 s").arg(seconds, 0, 'f', 1).arg(replay->duration(), 0, 'f', 1));
  };
  connect(replay, &ReplaySource::position_changed, bar, show_position);
  connect(slider, &QSlider::valueChanged, replay, [=](int value) { replay->seek(value * duration / kSteps); });
  connect(play, &QToolButton::clicked, replay, [=] { replay->playing() ? replay->pause() : replay->play(); });
  connect(replay, &ReplaySource::playing_changed, play, [=](bool playing) {
    play->setText(playing ? QStringLiteral("\u275A\u275A  Pause") : QStringLiteral("\u25B6  Play"));
  });
  connect(speed, &QComboBox::currentIndexChanged, replay,
          [=](int index) { replay->set_speed(speed->itemData(index).toDouble()); });
  show_position(replay->position());
  return bar;
}

void DashboardWindow::on_snapshot() {
  const JobSnapshot& snapshot = source_->snapshot();
  if (!user_selected_ && !snapshot.ranks.isEmpty() && !snapshot.find_rank(selected_ranks_.value(0, -1))) {
    selected_ranks_ = {snapshot.ranks.front().rank};
  }
  rank_model_->set_snapshot(snapshot);
  grid_model_->set_snapshot(snapshot);
  alert_model_->set_snapshot(snapshot);
  memory_model_->set_snapshot(snapshot);
  phase_model_->set_snapshot(snapshot);
  if (memory_model_->ranks() != selected_ranks_) select_ranks(selected_ranks_);

  const JobSummary summary = summarize(snapshot);
  cards_.value(QStringLiteral("model"))->setText(summary.model.isEmpty() ? QStringLiteral("\u2014") : summary.model);
  cards_.value(QStringLiteral("model"))->setToolTip(snapshot.job.job_file);
  cards_.value(QStringLiteral("layout"))->setText(summary.layout);
  cards_.value(QStringLiteral("world"))->setText(summary.world);
  cards_.value(QStringLiteral("iteration"))->setText(summary.iteration + QStringLiteral("  \u00b7  ") + summary.state);
  cards_.value(QStringLiteral("phase"))->setText(summary.phases);
  cards_.value(QStringLiteral("enter"))->setText(summary.last_enter);
  cards_.value(QStringLiteral("bandwidth"))->setText(summary.bandwidth);
  cards_.value(QStringLiteral("exit"))->setText(summary.last_exit);

  const int alerts = alert_model_->rowCount();
  alerts_title_->setText(alerts == 0 ? QStringLiteral("Alerts \u2014 none firing")
                                     : QStringLiteral("Alerts \u2014 %1 firing").arg(alerts));
}

void DashboardWindow::select_ranks(const QVector<int>& ranks) {
  if (ranks.isEmpty()) return;
  selected_ranks_ = ranks;
  std::sort(selected_ranks_.begin(), selected_ranks_.end());
  if (memory_model_->ranks() != selected_ranks_) memory_model_->set_ranks(selected_ranks_);
  if (phase_model_->ranks() != selected_ranks_) phase_model_->set_ranks(selected_ranks_);
  timeline_->show_ranks(selected_ranks_);
  syncing_selection_ = true;
  grid_view_->select_ranks(selected_ranks_);
  QItemSelection selection;
  for (int rank : selected_ranks_) {
    const int row = rank_model_->row_of(rank);
    if (row >= 0)
      selection.select(rank_model_->index(row, 0), rank_model_->index(row, RankTableModel::kColumnCount - 1));
  }
  rank_view_->selectionModel()->select(selection, QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
  syncing_selection_ = false;
}

void DashboardWindow::on_connection_state(ConnectionState state, const QString& detail) {
  const QColor color = connection_color(state);
  const QString name = connection_state_name(state);
  const QString where = state == ConnectionState::kReplay ? source_->description() : source_->description();
  connection_->setText(QStringLiteral("<span style='color:%1; font-size:14pt'>\u25CF</span> "
                                      "<span style='font-weight:600; color:%1'>%2</span><br>"
                                      "<span style='color:#6b727c; font-size:8pt'>%3</span>")
                           .arg(color.name(), name.toHtmlEscaped(), where.toHtmlEscaped()));
  connection_->setToolTip(detail);
  statusBar()->showMessage(QStringLiteral("%1: %2").arg(name, detail));
}

QString DashboardWindow::connection_text() const {
  return QStringLiteral("%1: %2").arg(connection_state_name(source_->connection_state()), source_->connection_detail());
}

}  // namespace hybridshard::gui
