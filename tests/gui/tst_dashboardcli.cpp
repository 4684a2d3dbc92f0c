// The hybridshard-dashboard program: --screenshot writes a PNG and exits 0; bad arguments and files exit non-zero
// with a message; --help and --version answer without a display.
#include <QImage>
#include <QProcess>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QtTest>

#include "fake_status_server.h"
#include "test_support.h"

namespace {

struct Run {
  int exit_code = -1;
  QString output;
};

enum class Screen { kOffscreen, kNone };

Run run_dashboard(const QStringList& arguments, Screen screen = Screen::kOffscreen) {
  QProcess process;
  process.setProcessChannelMode(QProcess::MergedChannels);
  QProcessEnvironment environment = QProcessEnvironment::systemEnvironment();
  if (screen == Screen::kOffscreen) {
    environment.insert("QT_QPA_PLATFORM", "offscreen");
  } else {
    for (const char* name : {"QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"}) environment.remove(name);
  }
  process.setProcessEnvironment(environment);
  process.start(QStringLiteral(HYBRIDSHARD_DASHBOARD_EXE), arguments);
  Run run;
  if (!process.waitForFinished(60000)) {
    process.kill();
    process.waitForFinished(5000);
    run.output = QStringLiteral("timed out");
    return run;
  }
  run.exit_code = process.exitStatus() == QProcess::NormalExit ? process.exitCode() : -1;
  run.output = QString::fromUtf8(process.readAll());
  return run;
}

}  // namespace

class TestDashboardCli : public QObject {
  Q_OBJECT

 private slots:
  void screenshot_of_a_replay_data() {
    QTest::addColumn<QStringList>("extra");
    QTest::newRow("end of the run") << QStringList();
    QTest::newRow("in a rollout, two ranks") << QStringList{"--at", "30", "--ranks", "0,2"};
    QTest::newRow("last minute, no capacity line, log scale")
        << QStringList{"--at", "50", "--last", "1", "--no-capacity", "--log"};
    QTest::newRow("small window") << QStringList{"--at", "11.8", "--size", "1024x700"};
  }

  void screenshot_of_a_replay() {
    QFETCH(QStringList, extra);
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const QString path = dir.filePath("shot.png");
    const Run run = run_dashboard(
        QStringList{"--replay", hybridshard::gui::testing::sample_record_path(), "--screenshot", path} + extra);
    QVERIFY2(run.exit_code == 0, qPrintable(run.output));
    const QImage image(path);
    QVERIFY2(!image.isNull(), qPrintable(run.output));
    QVERIFY(image.width() >= 1000 && image.height() >= 700);
    QVERIFY(QFileInfo(path).size() > 10000);
  }

  // A synthetic 64-rank record (the sample generator, 8 hosts x 8 ranks) replays and renders.
  void a_64_rank_record_replays() {
    const QString python = QStandardPaths::findExecutable(QStringLiteral("python3"));
    QVERIFY2(!python.isEmpty(), "python3 (Debian's) writes the record");
    QTemporaryDir dir;
    const QString record = dir.filePath("run64.jsonl");
    QProcess generator;
    generator.setProcessChannelMode(QProcess::MergedChannels);
    generator.start(
        python, {QStringLiteral(HYBRIDSHARD_GUI_TEST_DATA "/make_sample_record.py"), "--world", "64", "--out", record});
    QVERIFY(generator.waitForFinished(60000));
    QVERIFY2(generator.exitCode() == 0, generator.readAll().constData());
    const QString path = dir.filePath("shot.png");
    const Run run = run_dashboard({"--replay", record, "--at", "15", "--ranks", "0-63", "--screenshot", path});
    QVERIFY2(run.exit_code == 0, qPrintable(run.output));
    QVERIFY(!QImage(path).isNull());
  }

  void screenshot_of_a_live_job() {
    hybridshard::gui::testing::FakeStatusServer server;
    QVERIFY(server.listen_on_loopback());
    server.set_response(hybridshard::gui::testing::status_document(8));
    QTemporaryDir dir;
    const QString path = dir.filePath("live.png");
    // The child process polls this process's server: serve it while waiting.
    QProcess process;
    process.setProcessChannelMode(QProcess::MergedChannels);
    QProcessEnvironment environment = QProcessEnvironment::systemEnvironment();
    environment.insert("QT_QPA_PLATFORM", "offscreen");
    process.setProcessEnvironment(environment);
    process.start(QStringLiteral(HYBRIDSHARD_DASHBOARD_EXE), {"--connect", server.url(), "--screenshot", path});
    QTRY_VERIFY_WITH_TIMEOUT(process.state() == QProcess::NotRunning, 60000);
    const QString output = QString::fromUtf8(process.readAll());
    QVERIFY2(process.exitCode() == 0, qPrintable(output));
    QVERIFY2(output.contains("connected"), qPrintable(output));
    QVERIFY(!QImage(path).isNull());
  }

  void errors_exit_non_zero_with_a_message_data() {
    QTest::addColumn<QStringList>("arguments");
    QTest::addColumn<QString>("message");
    QTest::newRow("no source") << QStringList{} << "exactly one of --connect URL and --replay FILE";
    QTest::newRow("missing record") << QStringList{"--replay", "/nonexistent/run.jsonl"} << "/nonexistent/run.jsonl";
    QTest::newRow("bad size") << QStringList{"--replay", hybridshard::gui::testing::sample_record_path(), "--size",
                                             "big"}
                              << "--size";
    QTest::newRow("bad ranks") << QStringList{"--replay", hybridshard::gui::testing::sample_record_path(), "--ranks",
                                              "x"}
                               << "--ranks";
    QTest::newRow("backwards rank range")
        << QStringList{"--replay", hybridshard::gui::testing::sample_record_path(), "--ranks", "3-1"} << "--ranks";
    QTest::newRow("bad time") << QStringList{"--replay", hybridshard::gui::testing::sample_record_path(), "--at", "-4"}
                              << "--at";
    QTest::newRow("no minutes") << QStringList{"--replay", hybridshard::gui::testing::sample_record_path(), "--last",
                                               "0"}
                                << "--last: expected minutes > 0";
    QTest::newRow("unknown option") << QStringList{"--replay", "x.jsonl", "--bogus"} << "Unknown option 'bogus'";
    QTest::newRow("stray argument") << QStringList{"--replay", "x.jsonl", "extra"} << "unexpected argument 'extra'";
  }

  void errors_exit_non_zero_with_a_message() {
    QFETCH(QStringList, arguments);
    QFETCH(QString, message);
    QTemporaryDir dir;
    const Run run = run_dashboard(arguments + QStringList{"--screenshot", dir.filePath("never.png")});
    QVERIFY2(run.exit_code != 0, qPrintable(run.output));
    QVERIFY2(run.output.contains(message), qPrintable(run.output));
    QVERIFY(!QFileInfo::exists(dir.filePath("never.png")));
  }

  // No DISPLAY, no WAYLAND_DISPLAY, no QT_QPA_PLATFORM: the Qt platform plugin would abort; these must not need it.
  void help_and_version_need_no_display_data() {
    QTest::addColumn<QString>("argument");
    QTest::addColumn<QString>("expected");
    QTest::newRow("--help") << "--help"
                            << "--replay <FILE>";
    QTest::newRow("-h") << "-h"
                        << "--screenshot <FILE.png>";
    QTest::newRow("--help-all") << "--help-all"
                                << "--connect <URL>";
    QTest::newRow("--version") << "--version"
                               << "hybridshard-dashboard 0.";
    QTest::newRow("-v") << "-v"
                        << "hybridshard-dashboard 0.";
  }

  void help_and_version_need_no_display() {
    QFETCH(QString, argument);
    QFETCH(QString, expected);
    const Run run = run_dashboard({argument}, Screen::kNone);
    QVERIFY2(run.exit_code == 0, qPrintable(run.output));
    QVERIFY2(run.output.contains(expected), qPrintable(run.output));
    QVERIFY2(!run.output.contains("platform plugin"), qPrintable(run.output));
  }

  void without_a_display_it_says_so_or_names_the_bad_argument_data() {
    QTest::addColumn<QStringList>("arguments");
    QTest::addColumn<QString>("message");
    QTest::newRow("valid arguments") << QStringList{"--replay", hybridshard::gui::testing::sample_record_path()}
                                     << "no display";
    QTest::newRow("no source") << QStringList{} << "exactly one of --connect URL and --replay FILE";
    QTest::newRow("unknown option") << QStringList{"--replay", "x.jsonl", "--colour"} << "Unknown option 'colour'";
  }

  void without_a_display_it_says_so_or_names_the_bad_argument() {
    QFETCH(QStringList, arguments);
    QFETCH(QString, message);
    const Run run = run_dashboard(arguments, Screen::kNone);
    QCOMPARE(run.exit_code, 2);
    QVERIFY2(run.output.contains(message), qPrintable(run.output));
    QVERIFY2(!run.output.contains("platform plugin"), qPrintable(run.output));
  }

  void a_screenshot_needs_no_display() {
    QTemporaryDir dir;
    const QString path = dir.filePath("shot.png");
    const Run run = run_dashboard({"--replay", hybridshard::gui::testing::sample_record_path(), "--screenshot", path},
                                  Screen::kNone);
    QVERIFY2(run.exit_code == 0, qPrintable(run.output));
    QCOMPARE(QImage(path).size(), QSize(1600, 1000));
  }
};

QTEST_MAIN(TestDashboardCli)
#include "tst_dashboardcli.moc"
