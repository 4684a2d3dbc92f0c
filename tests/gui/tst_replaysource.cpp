// Replaying the sample record: grid cells change colour at the times the record says, in the model and on screen;
// play, pause, speed and the end of the record.
#include <QFile>
#include <QJsonDocument>
#include <QJsonObject>
#include <QTableView>
#include <QtTest>

#include "buffer_grid_model.h"
#include "dashboard_window.h"
#include "rank_table_model.h"
#include "replay_source.h"
#include "residency_grid_view.h"
#include "test_support.h"

using namespace hybridshard::gui;

namespace {

QString cell_residency(const BufferGridModel* model, int rank, const QString& column_key) {
  const int column = model->column_keys().indexOf(column_key);
  if (column < 0) return QString();
  for (int row = 0; row < model->rowCount(); ++row) {
    if (model->ranks_of_row(row) == QVector<int>{rank}) {
      return model->index(row, column).data(BufferGridModel::kResidencyRole).toString();
    }
  }
  return QString();
}

// Classifies a pixel of the grid by the residency palette (green gpu, blue cpu, grey none).
QString colour_class(const QColor& color) {
  const int r = color.red(), g = color.green(), b = color.blue();
  if (b > g + 15 && b > r + 15) return QStringLiteral("cpu");
  if (g > b + 15 && g > r + 15) return QStringLiteral("gpu");
  // Freed cells are light grey, not the white of the view's background.
  if (std::abs(r - g) < 14 && std::abs(g - b) < 14 && std::max({r, g, b}) < 250) return QStringLiteral("none");
  return QStringLiteral("other");
}

// The first time (seconds since the start) the record moves `buffer` of `rank` to `to`.
double first_move(const QString& path, int rank, const QString& buffer, const QString& to) {
  QFile file(path);
  if (!file.open(QIODevice::ReadOnly)) return -1;
  while (!file.atEnd()) {
    const QJsonObject event = QJsonDocument::fromJson(file.readLine()).object();
    if (event.value("type") == "residency" && event.value("rank").toInt() == rank &&
        event.value("buffer").toString() == buffer && event.value("to").toString() == to) {
      return event.value("time").toDouble() - testing::kSampleStart;
    }
  }
  return -1;
}

}  // namespace

class TestReplaySource : public QObject {
  Q_OBJECT

 private slots:
  void cells_have_the_recorded_residency_data() {
    QTest::addColumn<double>("seconds");
    QTest::addColumn<int>("rank");
    QTest::addColumn<QString>("column");
    QTest::addColumn<QString>("residency");
    QTest::newRow("optimizer on gpu while training") << 8.0 << 0 << "train.exp_avg.pp*.vpp0"
                                                     << "gpu";
    QTest::newRow("no KV cache before the first rollout") << 8.0 << 0 << "rollout.kv_cache"
                                                          << "";
    QTest::newRow("grads offloaded during enter") << 11.5 << 1 << "train.grads.pp*.vpp0"
                                                  << "cpu";
    QTest::newRow("staging on gpu during enter") << 11.8 << 2 << "enter.staging.recv"
                                                 << "gpu";
    QTest::newRow("staging gone after enter") << 13.0 << 2 << "enter.staging.recv"
                                              << "";
    QTest::newRow("inference shard on gpu in rollout") << 15.0 << 3 << "rollout.params"
                                                       << "gpu";
    QTest::newRow("KV cache on gpu in rollout") << 15.0 << 0 << "rollout.kv_cache"
                                                << "gpu";
    QTest::newRow("Adam moments on host in rollout") << 15.0 << 2 << "train.exp_avg_sq.pp*.vpp0"
                                                     << "cpu";
    QTest::newRow("train params stay on gpu in rollout") << 15.0 << 2 << "train.params.pp*.vpp0"
                                                         << "gpu";
    QTest::newRow("KV cache freed after exit") << 25.0 << 0 << "rollout.kv_cache"
                                               << "none";
    QTest::newRow("inference shard freed after exit") << 25.0 << 2 << "rollout.params"
                                                      << "none";
    QTest::newRow("optimizer back on gpu after exit") << 25.0 << 3 << "train.exp_avg_sq.pp*.vpp0"
                                                      << "gpu";
    QTest::newRow("master on host in the third rollout") << 50.0 << 0 << "train.master.pp*.vpp0"
                                                         << "cpu";
    QTest::newRow("everything freed at shutdown") << 57.0 << 1 << "train.params.pp*.vpp0"
                                                  << "none";
  }

  void cells_have_the_recorded_residency() {
    QFETCH(double, seconds);
    QFETCH(int, rank);
    QFETCH(QString, column);
    QFETCH(QString, residency);
    ReplaySource source;
    QString error;
    QVERIFY2(source.load(testing::sample_record_path(), &error), qPrintable(error));
    DashboardWindow window(&source);
    source.seek(57.0);  // from the end backwards: seeking must rebuild the state
    source.seek(seconds);
    QCOMPARE(cell_residency(window.grid_model(), rank, column), residency);
  }

  void a_cell_changes_colour_exactly_when_the_record_moves_its_buffer() {
    const double offload = first_move(testing::sample_record_path(), 0, "train.grads.pp0.vpp0", "cpu");
    const double reload = first_move(testing::sample_record_path(), 0, "rollout.params", "none");
    QVERIFY(offload > 11.0 && offload < 12.0);
    QVERIFY(reload > 19.0 && reload < 20.0);
    ReplaySource source;
    QString error;
    QVERIFY(source.load(testing::sample_record_path(), &error));
    DashboardWindow window(&source);
    source.seek(offload - 0.0005);
    QCOMPARE(cell_residency(window.grid_model(), 0, "train.grads.pp*.vpp0"), QStringLiteral("gpu"));
    source.seek(offload);
    QCOMPARE(cell_residency(window.grid_model(), 0, "train.grads.pp*.vpp0"), QStringLiteral("cpu"));
    source.seek(reload - 0.0005);
    QCOMPARE(cell_residency(window.grid_model(), 0, "rollout.params"), QStringLiteral("gpu"));
    source.seek(reload);
    QCOMPARE(cell_residency(window.grid_model(), 0, "rollout.params"), QStringLiteral("none"));
  }

  void the_grid_draws_the_residency_colours() {
    ReplaySource source;
    QString error;
    QVERIFY(source.load(testing::sample_record_path(), &error));
    DashboardWindow window(&source);
    window.resize(1600, 1000);
    window.show();
    QVERIFY(QTest::qWaitForWindowExposed(&window));
    const auto* grid = window.findChild<ResidencyGridView*>();
    QVERIFY(grid);
    const struct {
      double seconds;
      const char* column;
      const char* expected;
    } cases[] = {{8.0, "train.grads.pp*.vpp0", "gpu"},
                 {15.0, "train.grads.pp*.vpp0", "cpu"},
                 {25.0, "rollout.kv_cache", "none"},
                 {15.0, "rollout.kv_cache", "gpu"}};
    for (const auto& c : cases) {
      source.seek(c.seconds);
      QApplication::processEvents();
      const int column = window.grid_model()->column_keys().indexOf(QString::fromLatin1(c.column));
      QVERIFY(column >= 0);
      grid->table()->scrollTo(window.grid_model()->index(0, column));
      QApplication::processEvents();
      const QRect rect = grid->table()->visualRect(window.grid_model()->index(0, column));
      QVERIFY(grid->table()->viewport()->rect().contains(rect));
      QVERIFY(!rect.isEmpty());
      const QImage image = grid->table()->viewport()->grab().toImage();
      const QColor pixel = image.pixelColor(rect.right() - 6, rect.top() + 6);
      QCOMPARE(colour_class(pixel), QString::fromLatin1(c.expected));
    }
  }

  void play_advances_and_stops_at_the_end() {
    ReplaySource source;
    QString error;
    QVERIFY(source.load(testing::sample_record_path(), &error));
    QSignalSpy positions(&source, &ReplaySource::position_changed);
    source.set_speed(50);
    source.play();
    QVERIFY(source.playing());
    QTRY_VERIFY_WITH_TIMEOUT(source.position() > 1.0, 10000);
    source.pause();
    QVERIFY(!source.playing());
    QVERIFY(positions.count() > 0);
    source.seek(source.duration() - 0.5);
    source.play();
    QTRY_VERIFY_WITH_TIMEOUT(!source.playing(), 10000);
    QCOMPARE(source.position(), source.duration());
    QCOMPARE(source.snapshot().state, QStringLiteral("finished"));
  }

  void seek_is_clamped_to_the_record() {
    ReplaySource source;
    QString error;
    QVERIFY(source.load(testing::sample_record_path(), &error));
    source.seek(-5);
    QCOMPARE(source.position(), 0.0);
    source.seek(1e6);
    QCOMPARE(source.position(), source.duration());
  }

  void a_bad_record_is_an_error_not_a_crash() {
    ReplaySource source;
    QString error;
    QVERIFY(!source.load_from_data("{\"type\":\"job\",\"time\":1}\nnot json\n{}\n", "broken.jsonl", &error));
    QVERIFY2(error.startsWith("broken.jsonl:2:"), qPrintable(error));
  }
};

QTEST_MAIN(TestReplaySource)
#include "tst_replaysource.moc"
