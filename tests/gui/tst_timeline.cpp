// The memory timeline over a long history: the whole job or the last minutes (following new data), zoom, pan and
// reset (buttons, wheel, drag, double-click), the phase band drawn under the same times at every zoom, the y axis
// fitted with or without the capacity line or logarithmic, and the rank picker.
#include <QAbstractAxis>
#include <QChart>
#include <QChartView>
#include <QLineEdit>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QToolButton>
#include <QValueAxis>
#include <QtTest>

#include "buffer_grid_model.h"
#include "dashboard_window.h"
#include "memory_timeline_view.h"
#include "status_json.h"
#include "test_support.h"
#include "time_window.h"
#include "timeline_models.h"

using namespace hybridshard::gui;

namespace {

constexpr double kStart = 1'000'000.0;
constexpr double kGiB = 1024.0 * 1024 * 1024;
constexpr double kCycle = 60;  // train 30 s, enter 5 s, rollout 20 s, exit 5 s

const char* phase_at(double seconds) {
  const double in_cycle = std::fmod(seconds, kCycle);
  return in_cycle < 30 ? "train" : in_cycle < 35 ? "enter" : in_cycle < 55 ? "rollout" : "exit";
}

// `ranks` ranks for `seconds` (samples every 5 s): params 2 GiB always; optimizer 4 GiB in train; KV cache 8 GiB in
// rollout; capacity `capacity` bytes per rank.
JobSnapshot long_job(double seconds, int ranks = 2, double capacity = 80 * kGiB, double scale = 1) {
  JobSnapshot snapshot;
  snapshot.started = kStart;
  snapshot.time = kStart + seconds;
  snapshot.state = QStringLiteral("running");
  for (int rank = 0; rank < ranks; ++rank) {
    RankState state;
    state.rank = rank;
    state.up = true;
    snapshot.ranks.push_back(state);
  }
  for (double time = 0; time <= seconds; time += 5) {
    const QString phase = QString::fromLatin1(phase_at(time));
    for (int rank = 0; rank < ranks; ++rank) {
      MemorySample sample;
      sample.time = kStart + time;
      sample.rank = rank;
      sample.by_kind[QStringLiteral("params")] = static_cast<std::int64_t>(2 * kGiB * scale);
      if (phase == QLatin1String("train"))
        sample.by_kind[QStringLiteral("optimizer")] = static_cast<std::int64_t>(4 * kGiB * scale);
      if (phase == QLatin1String("rollout"))
        sample.by_kind[QStringLiteral("kv_cache")] = static_cast<std::int64_t>(8 * kGiB * scale);
      for (auto it = sample.by_kind.cbegin(); it != sample.by_kind.cend(); ++it) sample.tracked += it.value();
      sample.device_used = sample.tracked + static_cast<std::int64_t>(kGiB * scale);
      sample.device_total = static_cast<std::int64_t>(capacity);
      snapshot.memory.push_back(sample);
    }
  }
  for (double begin = 0; begin < seconds; begin += kCycle) {
    const double bounds[] = {0, 30, 35, 55, 60};
    const char* names[] = {"train", "enter", "rollout", "exit"};
    for (int part = 0; part < 4; ++part) {
      for (int rank = 0; rank < ranks; ++rank) {
        PhaseInterval phase;
        phase.rank = rank;
        phase.iteration = static_cast<int>(begin / kCycle);
        phase.phase = QString::fromLatin1(names[part]);
        phase.begin = kStart + begin + bounds[part];
        phase.end = begin + bounds[part + 1] <= seconds ? kStart + begin + bounds[part + 1] : -1;
        if (begin + bounds[part] < seconds) snapshot.phases.push_back(phase);
      }
    }
  }
  return snapshot;
}

// The models and the view, as the window wires them.
struct Timeline {
  MemorySeriesModel memory;
  PhaseIntervalModel phases;
  MemoryTimelineView view{&memory, &phases};

  explicit Timeline(const JobSnapshot& snapshot) {
    view.resize(1200, 520);
    view.show();
    feed(snapshot);
  }
  void feed(const JobSnapshot& snapshot) {
    memory.set_snapshot(snapshot);
    phases.set_snapshot(snapshot);
    settle();
  }
  void settle() {
    QApplication::processEvents();
    view.phase_band()->repaint();
  }
  QValueAxis* x_axis() const { return qobject_cast<QValueAxis*>(view.chart()->axes(Qt::Horizontal).value(0)); }
};

bool near(double a, double b, double tolerance = 1e-6) {
  return std::abs(a - b) <= tolerance * std::max(1.0, std::abs(b));
}

}  // namespace

class TestTimeline : public QObject {
  Q_OBJECT

 private slots:
  void time_window_follows_or_stays() {
    TimeWindow window;
    QVERIFY(window.following() && window.whole_job());
    QCOMPARE(window.span(7200).begin, 0.0);
    QCOMPARE(window.span(7200).end, 7200.0);
    window.show_last(300);
    QCOMPARE(window.span(7200).begin, 6900.0);
    QCOMPARE(window.span(7500).begin, 7200.0);  // follows new data
    QCOMPARE(window.span(100).begin, 0.0);      // a job shorter than the window: all of it
    QCOMPARE(window.span(100).end, 100.0);
    // Zoom in at 7000 s: it stays where it was on screen (two thirds across), and the span stays put.
    window.show_whole_job();
    window.zoom(0.5, 4800, 7200);
    QVERIFY(!window.following());
    QCOMPARE(window.span(9999).begin, 2400.0);
    QCOMPARE(window.span(9999).end, 6000.0);
    window.pan(-3000, 7200);  // stops at the start
    QCOMPARE(window.span(7200).begin, 0.0);
    QCOMPARE(window.span(7200).length(), 3600.0);
    window.pan(1e9, 7200);  // and at the end
    QCOMPARE(window.span(7200).end, 7200.0);
    window.zoom(1e-9, 7100, 7200);  // no deeper than 10 ms
    QVERIFY(near(window.span(7200).length(), TimeWindow::kMinimumSeconds));
    window.zoom(1e9, 7100, 7200);  // no wider than the job
    QCOMPARE(window.span(7200).begin, 0.0);
    QCOMPARE(window.span(7200).end, 7200.0);
    window.zoom(std::nan(""), 10, 7200);  // ignored
    QCOMPARE(window.span(7200).end, 7200.0);
    window.show_last(300);
    window.zoom(0.5, 7200, 7200);
    window.reset();
    QVERIFY(window.following());
    QCOMPARE(window.span(8000).begin, 7700.0);  // back to the last 5 minutes
  }

  void a_long_job_shows_whole_or_last_minutes_and_thins_to_the_plot() {
    Timeline timeline(long_job(7200));
    QCOMPARE(timeline.memory.rowCount(), 1441);
    QCOMPARE(timeline.view.visible_span().begin, 0.0);
    QCOMPARE(timeline.view.visible_span().end, 7200.0);
    // Two hours read in minutes.
    QCOMPARE(timeline.x_axis()->min(), 0.0);
    QCOMPARE(timeline.x_axis()->max(), 120.0);
    QVERIFY(timeline.x_axis()->titleText().startsWith(QStringLiteral("minutes")));
    QVERIFY2(timeline.view.points_drawn() <= 2 * 1200 + 2, qPrintable(QString::number(timeline.view.points_drawn())));

    timeline.view.show_last(300);
    QCOMPARE(timeline.view.visible_span().begin, 6900.0);
    QVERIFY(timeline.x_axis()->titleText().startsWith(QStringLiteral("seconds")));
    QCOMPARE(timeline.x_axis()->min(), 6900.0);
    QVERIFY(timeline.view.points_drawn() <= 62 + 2);
    timeline.feed(long_job(7260));  // a minute later: the window follows
    QCOMPARE(timeline.view.visible_span().begin, 6960.0);
    QCOMPARE(timeline.view.visible_span().end, 7260.0);
    QCOMPARE(timeline.view.phase_band()->begin(), 6960.0);
    QCOMPARE(timeline.view.phase_band()->end(), 7260.0);
  }

  void zoom_pan_and_reset_with_buttons_wheel_and_drag() {
    Timeline timeline(long_job(7200));
    auto* zoom_in = timeline.view.findChild<QToolButton*>(QStringLiteral("zoom_in"));
    auto* zoom_out = timeline.view.findChild<QToolButton*>(QStringLiteral("zoom_out"));
    auto* reset = timeline.view.findChild<QToolButton*>(QStringLiteral("reset"));
    QVERIFY(zoom_in && zoom_out && reset);
    zoom_in->click();
    QCOMPARE(timeline.view.visible_span().begin, 1800.0);
    QCOMPARE(timeline.view.visible_span().end, 5400.0);
    QVERIFY(!timeline.view.time_window().following());
    timeline.feed(long_job(7300));  // new data does not move a zoomed view
    QCOMPARE(timeline.view.visible_span().begin, 1800.0);
    zoom_out->click();
    QCOMPARE(timeline.view.visible_span().length(), 7200.0);

    // The wheel zooms at the pointer: the time under it stays under it.
    reset->click();
    QVERIFY(timeline.view.time_window().following());
    QCOMPARE(timeline.view.visible_span().end, 7300.0);
    QWidget* viewport = timeline.view.chart_view()->viewport();
    const QRectF plot = timeline.view.chart()->plotArea();
    const QPointF at = timeline.view.chart_view()->mapFromScene(plot.left() + plot.width() / 4, plot.center().y());
    const double before = timeline.view.visible_span().begin + timeline.view.visible_span().length() / 4;
    QWheelEvent wheel(at, viewport->mapToGlobal(at), QPoint(), QPoint(0, 3 * 120), Qt::NoButton, Qt::NoModifier,
                      Qt::NoScrollPhase, false);
    QApplication::sendEvent(viewport, &wheel);
    const TimeSpan zoomed = timeline.view.visible_span();
    QVERIFY2(near(zoomed.length(), 7300 * std::pow(0.8, 3)), qPrintable(QString::number(zoomed.length())));
    const double pixel = 7300 / plot.width();  // the pointer sits on whole pixels
    QVERIFY2(std::abs(zoomed.begin + zoomed.length() / 4 - before) < pixel, qPrintable(QString::number(zoomed.begin)));

    // Dragging right by a tenth of the plot shows what was a tenth earlier.
    const QPoint from = at.toPoint();
    const QPoint to = from + QPoint(static_cast<int>(plot.width() / 10), 0);
    QTest::mousePress(viewport, Qt::LeftButton, Qt::NoModifier, from);
    QMouseEvent move(QEvent::MouseMove, to, viewport->mapToGlobal(to), Qt::NoButton, Qt::LeftButton, Qt::NoModifier);
    QApplication::sendEvent(viewport, &move);
    QTest::mouseRelease(viewport, Qt::LeftButton, Qt::NoModifier, to);
    const double moved = (to.x() - from.x()) * zoomed.length() / plot.width();
    QVERIFY2(near(timeline.view.visible_span().begin, zoomed.begin - moved, 1e-9),
             qPrintable(QStringLiteral("%1 vs %2").arg(timeline.view.visible_span().begin).arg(zoomed.begin - moved)));

    // A double-click goes back.
    QTest::mouseDClick(viewport, Qt::LeftButton, Qt::NoModifier, from);
    QVERIFY(timeline.view.time_window().following());
    QCOMPARE(timeline.view.visible_span().length(), 7300.0);
  }

  // At every zoom, the band's colour changes where the chart's x axis puts the phase boundary.
  void the_phase_band_lines_up_with_the_plot_at_every_zoom_data() {
    QTest::addColumn<double>("job");
    QTest::addColumn<double>("begin");
    QTest::addColumn<double>("end");
    QTest::addColumn<double>("boundary");  // seconds; a train -> enter boundary
    QTest::addColumn<QString>("before");
    QTest::addColumn<QString>("after");
    QTest::newRow("whole job, 10 min") << 600.0 << 0.0 << 0.0 << 330.0 << "train"
                                       << "enter";
    QTest::newRow("whole job, 2 h") << 7200.0 << 0.0 << 0.0 << 3600.0 << "rollout"
                                    << "train";
    QTest::newRow("ten minutes of 2 h") << 7200.0 << 3300.0 << 3900.0 << 3630.0 << "train"
                                        << "enter";
    QTest::newRow("ten seconds") << 7200.0 << 3625.0 << 3635.0 << 3630.0 << "train"
                                 << "enter";
    QTest::newRow("rollout to exit, 2 s") << 7200.0 << 3714.0 << 3716.0 << 3715.0 << "rollout"
                                          << "exit";
  }

  void the_phase_band_lines_up_with_the_plot_at_every_zoom() {
    QFETCH(double, job);
    QFETCH(double, begin);
    QFETCH(double, end);
    QFETCH(double, boundary);
    QFETCH(QString, before);
    QFETCH(QString, after);
    Timeline timeline(long_job(job));
    if (end > begin) {
      timeline.view.zoom((end - begin) / job, 0);  // to [0, length], then along
      timeline.view.pan(begin);
      timeline.settle();
    }
    const TimeSpan span = timeline.view.visible_span();
    QVERIFY2(end <= begin || (near(span.begin, begin) && near(span.end, end)),
             qPrintable(QStringLiteral("%1 .. %2").arg(span.begin).arg(span.end)));
    QCOMPARE(timeline.view.phase_band()->begin(), span.begin);
    QCOMPARE(timeline.view.phase_band()->end(), span.end);

    // Where the chart puts the boundary, in the band's coordinates.
    const double unit = timeline.x_axis()->titleText().startsWith(QStringLiteral("minutes")) ? 60 : 1;
    const QPointF scene = timeline.view.chart()->mapToPosition(QPointF(boundary / unit, 0));
    const QPoint in_view = timeline.view.chart_view()->mapFromScene(scene);
    const QPoint global = timeline.view.chart_view()->viewport()->mapToGlobal(in_view);
    PhaseBand* band = timeline.view.phase_band();
    const int x = band->mapFromGlobal(global).x();
    const QImage image = band->grab().toImage();
    const int y = 2 + 8;  // the middle of the first lane (two lanes of 16 px from y = 2)
    auto colour_at = [&](int pixel) { return image.pixelColor(pixel * image.width() / band->width(), y); };
    QCOMPARE(colour_at(x - 2), phase_color(before));
    QCOMPARE(colour_at(x + 2), phase_color(after));
  }

  // Before the full-rate window the band shows a history bucket's phase shares, lighter than measured intervals.
  void history_buckets_draw_lighter_in_the_band() {
    JobSnapshot snapshot = long_job(600);
    for (PhaseInterval& phase : snapshot.phases) phase.coarse = phase.begin < kStart + 300;
    Timeline timeline(snapshot);
    PhaseBand* band = timeline.view.phase_band();
    const auto [left, right] = band->lane_extent();
    const QImage image = band->grab().toImage();
    auto colour_at = [&](double seconds) {
      const double x = left + seconds / 600 * (right - left);
      return image.pixelColor(static_cast<int>(x * image.width() / band->width()), 2 + 8);
    };
    const QColor in_bucket = colour_at(60 + 15);  // train of the second cycle: a bucket's share
    const QColor measured = colour_at(360 + 15);  // the same phase later: measured
    QCOMPARE(measured, phase_color(QStringLiteral("train")));
    QVERIFY2(in_bucket.lightness() > measured.lightness(), qPrintable(in_bucket.name()));
  }

  void the_y_axis_fits_with_or_without_capacity_or_logarithmic() {
    Timeline timeline(long_job(600));  // rank 0: peak 2 + 8 + 1 = 11 GiB used, 80 GiB capacity
    QCOMPARE(timeline.view.y_unit(), QStringLiteral("GiB"));
    QVERIFY(timeline.view.capacity_visible());
    QVERIFY2(timeline.view.y_max() >= 80, qPrintable(QString::number(timeline.view.y_max())));
    timeline.view.set_capacity_visible(false);
    QVERIFY2(timeline.view.y_max() >= 11 && timeline.view.y_max() < 20,
             qPrintable(QString::number(timeline.view.y_max())));

    // The quickstart's sizes: MiB under a 1 GiB capacity line; without the line the axis is in MiB.
    timeline.feed(long_job(600, 2, kGiB, 1.0 / 1024));
    QCOMPARE(timeline.view.y_unit(), QStringLiteral("MiB"));
    QVERIFY2(timeline.view.y_max() >= 11 && timeline.view.y_max() < 20,
             qPrintable(QString::number(timeline.view.y_max())));
    timeline.view.set_capacity_visible(true);
    QCOMPARE(timeline.view.y_unit(), QStringLiteral("GiB"));

    timeline.view.set_log_scale(true);
    auto* log_axis = qobject_cast<QLogValueAxis*>(timeline.view.chart()->axes(Qt::Vertical).value(1));
    QVERIFY(log_axis && log_axis->isVisible());
    QVERIFY(!timeline.view.chart()->axes(Qt::Vertical).value(0)->isVisible());
    QVERIFY(log_axis->min() > 0);
    QVERIFY(log_axis->max() >= 1);  // the 1 GiB capacity
    for (QAbstractSeries* series : timeline.view.chart()->series()) QVERIFY(series->attachedAxes().contains(log_axis));
    timeline.view.set_log_scale(false);
    QVERIFY(timeline.view.chart()->axes(Qt::Vertical).value(0)->isVisible());
  }

  void the_rank_picker_chooses_the_summed_ranks() {
    testing::FakeSource source;
    DashboardWindow window(&source);
    window.show();
    source.publish(parse_status(testing::status_document(8, 2)).snapshot);
    QLineEdit* picker = window.timeline()->rank_picker();
    QCOMPARE(picker->text(), QStringLiteral("0"));
    picker->setText(QStringLiteral("1, 3-4"));
    emit picker->editingFinished();
    QCOMPARE(window.memory_model()->ranks(), (QVector<int>{1, 3, 4}));
    QCOMPARE(window.phase_model()->ranks(), (QVector<int>{1, 3, 4}));
    QCOMPARE(picker->text(), QStringLiteral("1,3-4"));
    // A typo leaves the selection and marks the field.
    picker->setText(QStringLiteral("3-x"));
    emit picker->editingFinished();
    QCOMPARE(window.memory_model()->ranks(), (QVector<int>{1, 3, 4}));
    QVERIFY(picker->property("invalid").toBool());
    // Ranks the job does not have are left out; none at all puts the selection back in the field.
    picker->setText(QStringLiteral("6-9"));
    emit picker->editingFinished();
    QCOMPARE(window.memory_model()->ranks(), (QVector<int>{6, 7}));
    picker->setText(QStringLiteral("100"));
    emit picker->editingFinished();
    QCOMPARE(window.memory_model()->ranks(), (QVector<int>{6, 7}));
    QCOMPARE(picker->text(), QStringLiteral("6-7"));
    // Selecting elsewhere shows in the field.
    window.select_ranks({2});
    QCOMPARE(picker->text(), QStringLiteral("2"));
  }

  // 512 ranks: the grid groups by host x stage, and the picker sums all of them.
  void five_hundred_ranks_group_and_sum() {
    testing::FakeSource source;
    DashboardWindow window(&source);
    window.resize(1600, 1000);
    window.show();
    JobSnapshot snapshot = long_job(600, 512);
    const JobSnapshot status = parse_status(testing::status_document(512, 64)).snapshot;
    snapshot.job = status.job;
    snapshot.ranks = status.ranks;
    source.publish(snapshot);
    QVERIFY(window.grid_model()->aggregated());
    QCOMPARE(window.grid_model()->rowCount(), 64);
    window.timeline()->rank_picker()->setText(QStringLiteral("0-511"));
    emit window.timeline()->rank_picker()->editingFinished();
    QCOMPARE(window.memory_model()->ranks().size(), 512);
    QCOMPARE(window.memory_model()->rowCount(), 121);
    // 512 x (2 + 4 + 1) GiB at t = 0 (train), summed exactly.
    QCOMPARE(window.memory_model()->value(0, MemorySeriesModel::kDeviceUsed), 512.0 * 7);
    QVERIFY(window.timeline()->y_unit() == QStringLiteral("TiB"));
    QVERIFY(!window.grab().isNull());
  }
};

QTEST_MAIN(TestTimeline)
#include "tst_timeline.moc"
