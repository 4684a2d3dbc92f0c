// Bytes, rates and durations read in the unit that fits, with three significant digits, wherever the dashboard
// shows them (the job summary, the rank table).
#include <QtTest>

#include "job_summary.h"
#include "rank_table_model.h"
#include "units.h"

using namespace hybridshard::gui;

class TestUnits : public QObject {
  Q_OBJECT

 private slots:
  void bytes_data() {
    QTest::addColumn<qint64>("bytes");
    QTest::addColumn<QString>("text");
    QTest::newRow("zero") << qint64{0} << "0 B";
    QTest::newRow("bytes") << qint64{17} << "17 B";
    QTest::newRow("just below a KiB") << qint64{1023} << "1023 B";
    QTest::newRow("one KiB") << qint64{1024} << "1.00 KiB";
    QTest::newRow("quickstart enter") << qint64{636'000} << "621 KiB";
    QTest::newRow("rounds up into the next unit") << qint64{1024 * 1024 - 1} << "1.00 MiB";
    QTest::newRow("MiB") << qint64{256} * 1024 * 1024 << "256 MiB";
    QTest::newRow("GiB") << qint64{13'421'772'800} << "12.5 GiB";
    QTest::newRow("TiB") << qint64{3} * 1024 * 1024 * 1024 * 1024 << "3.00 TiB";
    QTest::newRow("huge stays in TiB") << qint64{5000} * 1024 * 1024 * 1024 * 1024 << "5000 TiB";
    QTest::newRow("negative") << qint64{-2048} << "\u22122.00 KiB";
    QTest::newRow("most negative") << std::numeric_limits<qint64>::min() << "\u22128388608 TiB";
  }

  void bytes() {
    QFETCH(qint64, bytes);
    QFETCH(QString, text);
    QCOMPARE(format_bytes(bytes), text);
  }

  void rates_data() {
    QTest::addColumn<double>("bytes_per_second");
    QTest::addColumn<QString>("text");
    QTest::newRow("zero") << 0.0 << "0 B/s";
    QTest::newRow("B/s") << 512.0 << "512 B/s";
    QTest::newRow("rounds into kB/s") << 999.7 << "1.00 kB/s";
    QTest::newRow("kB/s") << 3400.0 << "3.40 kB/s";
    QTest::newRow("quickstart enter, was 0.0 GB/s") << 636'000 / 0.05 << "12.7 MB/s";
    QTest::newRow("MB/s") << 621e6 << "621 MB/s";
    QTest::newRow("GB/s") << 29.14e9 << "29.1 GB/s";
    QTest::newRow("TB/s") << 1.5e12 << "1.50 TB/s";
    QTest::newRow("negative") << -1.0 << "\u2014";
    QTest::newRow("not a number") << std::nan("") << "\u2014";
    QTest::newRow("infinite") << std::numeric_limits<double>::infinity() << "\u2014";
  }

  void rates() {
    QFETCH(double, bytes_per_second);
    QFETCH(QString, text);
    QCOMPARE(format_rate(bytes_per_second), text);
  }

  void durations_data() {
    QTest::addColumn<double>("seconds");
    QTest::addColumn<QString>("text");
    QTest::newRow("zero") << 0.0 << "0 s";
    QTest::newRow("nanoseconds") << 4e-9 << "0.00 \u00b5s";
    QTest::newRow("microseconds") << 850e-6 << "850 \u00b5s";
    QTest::newRow("rounds into ms") << 999.9e-6 << "1.00 ms";
    QTest::newRow("quickstart phase, was 0.0 s") << 0.0123 << "12.3 ms";
    QTest::newRow("ms") << 0.412 << "412 ms";
    QTest::newRow("rounds into s") << 0.9996 << "1.00 s";
    QTest::newRow("seconds") << 4.2 << "4.20 s";
    QTest::newRow("tens of seconds") << 42.75 << "42.8 s";
    QTest::newRow("rounds into minutes") << 59.96 << "1 min 00 s";
    QTest::newRow("minutes") << 200.0 << "3 min 20 s";
    QTest::newRow("hours") << 2 * 3600.0 + 5 * 60 + 10 << "2 h 05 min";
    QTest::newRow("days stay in hours") << 50 * 3600.0 << "50 h 00 min";
    QTest::newRow("unknown") << -1.0 << "\u2014";
    QTest::newRow("not a number") << std::nan("") << "\u2014";
  }

  void durations() {
    QFETCH(double, seconds);
    QFETCH(QString, text);
    QCOMPARE(format_duration(seconds), text);
  }

  void axis_units_data() {
    QTest::addColumn<double>("largest");
    QTest::addColumn<QString>("unit");
    QTest::addColumn<double>("size");
    QTest::newRow("nothing") << 0.0 << "B" << 1.0;
    QTest::newRow("bytes") << 1000.0 << "B" << 1.0;
    QTest::newRow("KiB") << 5000.0 << "KiB" << 1024.0;
    QTest::newRow("quickstart buffers") << 12.0 * 1024 * 1024 << "MiB" << 1024.0 * 1024;
    QTest::newRow("an H100") << 85.5e9 << "GiB" << 1024.0 * 1024 * 1024;
    QTest::newRow("512 ranks summed") << 512 * 85.5e9 << "TiB" << 1024.0 * 1024 * 1024 * 1024;
  }

  void axis_units() {
    QFETCH(double, largest);
    QFETCH(QString, unit);
    QFETCH(double, size);
    QCOMPARE(byte_unit_for(largest).name, unit);
    QCOMPARE(byte_unit_for(largest).bytes, size);
  }

  void time_axis_units() {
    QCOMPARE(time_unit_for(57).name, QStringLiteral("seconds"));
    QCOMPARE(time_unit_for(600).seconds, 1.0);
    QCOMPARE(time_unit_for(3 * 3600).name, QStringLiteral("minutes"));
    QCOMPARE(time_unit_for(3 * 3600).seconds, 60.0);
    QCOMPARE(time_unit_for(48 * 3600).name, QStringLiteral("hours"));
  }

  // The quickstart's tiny model: 621 KiB received per rank in 50 ms read as such, not "0.0 GB/s" and "(0.0 s)".
  void the_dashboard_shows_small_transitions_in_units_that_read() {
    JobSnapshot snapshot;
    snapshot.time = 100.0123;
    for (int index = 0; index < 2; ++index) {
      RankState rank;
      rank.rank = index;
      rank.phase = QStringLiteral("rollout");
      rank.phase_since = 100.0;
      rank.last_enter_seconds = index == 0 ? 0.05 : 0.025;
      rank.last_exit_seconds = 0.000850;
      rank.last_enter_network_bytes = 636'000;
      rank.device_used = 12 * 1024 * 1024;
      rank.device_total = 1024 * 1024 * 1024;
      snapshot.ranks.push_back(rank);
    }
    const JobSummary summary = summarize(snapshot);
    QCOMPARE(summary.last_enter, QStringLiteral("50.0 ms"));
    QCOMPARE(summary.last_exit, QStringLiteral("850 \u00b5s"));
    QCOMPARE(summary.bandwidth, QStringLiteral("621 KiB at 19.1 MB/s"));  // mean of 12.7 and 25.4 MB/s

    RankTableModel ranks;
    ranks.set_snapshot(snapshot);
    QCOMPARE(ranks.index(0, RankTableModel::kPhase).data().toString(), QStringLiteral("rollout (12.3 ms)"));
    QCOMPARE(ranks.index(0, RankTableModel::kDeviceUsed).data().toString(), QStringLiteral("12.0 MiB / 1.00 GiB"));
    QVERIFY(ranks.index(0, 0).data(Qt::ToolTipRole).toString().contains(QStringLiteral("last enter 50.0 ms")));
  }
};

QTEST_MAIN(TestUnits)
#include "tst_units.moc"
