// dashboard_frame_bench RECORD.jsonl [--size WxH] [--frames N]: how long the dashboard takes per frame on a record
// (make one with tests/gui/data/make_sample_record.py --world 64 | 512). Offscreen; prints a table, exits 0. Not a
// test: figures, for docs/dashboard.md.
//
// A frame is what playing a replay or a live poll costs: a new snapshot through every model (update), then the whole
// window rendered into a QImage (paint). Scenarios: playing forward at 10x (0.5 s of record per 50 ms tick), seeking
// to spread-out moments, and the same with every rank selected in the timeline and with the grid ungrouped.
#include <QApplication>
#include <QCheckBox>
#include <QImage>
#include <QPainter>
#include <QTextStream>
#include <algorithm>
#include <ctime>
#include <functional>
#include <vector>

#include "alert_model.h"
#include "buffer_grid_model.h"
#include "dashboard_window.h"
#include "job_summary.h"
#include "rank_table_model.h"
#include "replay_source.h"
#include "residency_grid_view.h"
#include "timeline_models.h"

using namespace hybridshard::gui;

namespace {

// CPU milliseconds of this thread: on a shared, loaded machine wall time measures the neighbours too.
double thread_ms() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return now.tv_sec * 1e3 + now.tv_nsec / 1e6;
}

struct Figures {
  std::vector<double> update_ms, paint_ms;
};

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double largest(const std::vector<double>& values) {
  return values.empty() ? 0 : *std::max_element(values.begin(), values.end());
}

// Renders the window as the screen would: layout, then every widget painted into one image.
double paint(DashboardWindow& window, QImage& image) {
  const double begin = thread_ms();
  QApplication::processEvents();  // pending layouts and deferred updates
  image.fill(Qt::white);
  QPainter painter(&image);
  window.render(&painter);
  painter.end();
  return thread_ms() - begin;
}

Figures run(DashboardWindow& window, ReplaySource& replay, const std::vector<double>& moments) {
  QImage image(window.size(), QImage::Format_ARGB32_Premultiplied);
  Figures figures;
  paint(window, image);  // warm: fonts, caches
  for (double moment : moments) {
    const double begin = thread_ms();
    replay.seek(moment);
    figures.update_ms.push_back(thread_ms() - begin);
    figures.paint_ms.push_back(paint(window, image));
  }
  return figures;
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  QFont font(QStringLiteral("DejaVu Sans"));
  font.setPointSizeF(9.5);
  QApplication::setFont(font);
  QStringList arguments = QApplication::arguments().mid(1);
  QSize size(1600, 1000);
  int frames = 40;
  QString path;
  for (int index = 0; index < arguments.size(); ++index) {
    if (arguments[index] == QLatin1String("--size") && index + 1 < arguments.size()) {
      const QStringList parts = arguments[++index].split('x');
      size = QSize(parts.value(0).toInt(), parts.value(1).toInt());
    } else if (arguments[index] == QLatin1String("--frames") && index + 1 < arguments.size()) {
      frames = std::max(1, arguments[++index].toInt());
    } else {
      path = arguments[index];
    }
  }
  QTextStream out(stdout);
  if (path.isEmpty() || size.width() < 320 || size.height() < 240) {
    QTextStream(stderr) << "usage: dashboard_frame_bench RECORD.jsonl [--size WxH] [--frames N]\n";
    return 2;
  }

  const double load_begin = thread_ms();
  ReplaySource replay;
  QString error;
  if (!replay.load(path, &error)) {
    QTextStream(stderr) << error << '\n';
    return 2;
  }
  const double load_ms = thread_ms() - load_begin;
  replay.seek(replay.duration());
  const int ranks = static_cast<int>(replay.snapshot().ranks.size());
  std::size_t samples = replay.snapshot().memory.size();

  DashboardWindow window(&replay);
  window.resize(size);
  window.show();
  QApplication::processEvents();

  const double duration = replay.duration();
  std::vector<double> playing, seeking;
  const double start = duration * 0.3;
  for (int frame = 0; frame < frames; ++frame) playing.push_back(start + 0.5 * frame);
  for (int frame = 0; frame < frames; ++frame) seeking.push_back(duration * ((frame * 7919) % frames) / frames);

  out << "record: " << path.section('/', -1) << ", " << ranks << " ranks, " << samples << " memory samples at the end, "
      << QString::number(duration, 'f', 1) << " s; loaded in " << QString::number(load_ms, 'f', 0) << " ms\n";
  out << "window " << size.width() << "x" << size.height() << ", " << frames
      << " frames per scenario, offscreen; CPU ms of the GUI thread, median and largest\n\n";
  out << QStringLiteral("%1 %2 %3 %4 %5 %6\n")
             .arg(QStringLiteral("scenario"), -34)
             .arg(QStringLiteral("update ms"), 10)
             .arg(QStringLiteral("(max)"), 8)
             .arg(QStringLiteral("paint ms"), 10)
             .arg(QStringLiteral("(max)"), 8)
             .arg(QStringLiteral("frame ms"), 10);
  auto report = [&](const QString& name, const Figures& figures) {
    const double update = median(figures.update_ms), paint_median = median(figures.paint_ms);
    out << QStringLiteral("%1 %2 %3 %4 %5 %6\n")
               .arg(name, -34)
               .arg(update, 10, 'f', 1)
               .arg(largest(figures.update_ms), 8, 'f', 1)
               .arg(paint_median, 10, 'f', 1)
               .arg(largest(figures.paint_ms), 8, 'f', 1)
               .arg(update + paint_median, 10, 'f', 1);
    out.flush();
  };

  report(QStringLiteral("play 10x, rank 0"), run(window, replay, playing));
  report(QStringLiteral("seek, rank 0"), run(window, replay, seeking));
  QVector<int> all;
  for (const RankState& rank : replay.snapshot().ranks) all << rank.rank;
  window.select_ranks(all);
  report(QStringLiteral("play 10x, all ranks summed"), run(window, replay, playing));
  if (auto* group = window.findChild<ResidencyGridView*>()->findChild<QCheckBox*>()) group->setChecked(false);
  report(QStringLiteral("play 10x, all ranks, grid per rank"), run(window, replay, playing));

  // Where an update goes: each model alone on the record's last snapshot.
  out << "\nupdate by part (last snapshot, CPU ms, median of 5):\n";
  replay.seek(duration * 0.999);
  const JobSnapshot snapshot = replay.snapshot();
  auto part = [&](const QString& name, const std::function<void()>& work) {
    std::vector<double> times;
    for (int round = 0; round < 5; ++round) {
      const double begin = thread_ms();
      work();
      times.push_back(thread_ms() - begin);
    }
    out << QStringLiteral("  %1 %2\n").arg(name, -40).arg(median(times), 8, 'f', 1);
  };
  RankTableModel rank_model;
  BufferGridModel grid_model;
  AlertModel alert_model;
  MemorySeriesModel memory_model;
  PhaseIntervalModel phase_model;
  ReplaySource player;  // no window attached: the record player alone
  player.load(path, &error);
  double at = duration * 0.5;
  part(QStringLiteral("record player: 0.5 s forward"), [&] { player.seek(at += 0.5); });
  part(QStringLiteral("record player: back to the middle"), [&] { player.seek(duration * 0.5); });
  part(QStringLiteral("rank table"), [&] { rank_model.set_snapshot(snapshot); });
  part(QStringLiteral("residency grid, grouped"), [&] {
    grid_model.set_aggregated(true);
    grid_model.set_snapshot(snapshot);
  });
  part(QStringLiteral("residency grid, per rank"), [&] {
    grid_model.set_aggregated(false);
    grid_model.set_snapshot(snapshot);
  });
  part(QStringLiteral("alerts"), [&] { alert_model.set_snapshot(snapshot); });
  part(QStringLiteral("job summary"), [&] { summarize(snapshot); });
  part(QStringLiteral("memory series, rank 0"), [&] {
    memory_model.set_ranks({0});
    memory_model.set_snapshot(snapshot);
  });
  part(QStringLiteral("memory series, all ranks"), [&] {
    memory_model.set_ranks(all);
    memory_model.set_snapshot(snapshot);
  });
  part(QStringLiteral("phase intervals, all ranks"), [&] {
    phase_model.set_ranks(all);
    phase_model.set_snapshot(snapshot);
  });
  return 0;
}
