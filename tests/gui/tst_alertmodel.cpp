// Alerts: the conditions of configs/alerts.yml (same names, same default thresholds), one case each, and what
// does not fire.
#include <QAbstractItemModelTester>
#include <QtTest>

#include "alert_model.h"

using namespace hybridshard::gui;

namespace {

JobSnapshot healthy_job() {
  JobSnapshot snapshot;
  snapshot.state = QStringLiteral("running");
  snapshot.time = 100;
  snapshot.started = 50;
  for (int index = 0; index < 2; ++index) {
    RankState rank;
    rank.rank = index;
    rank.host = QStringLiteral("h");
    rank.up = true;
    rank.device_total = 1000;
    rank.device_used = 500;
    rank.last_enter_seconds = 0.5;
    snapshot.ranks.push_back(rank);
  }
  return snapshot;
}

}  // namespace

class TestAlertModel : public QObject {
  Q_OBJECT

 private slots:
  void conditions_data() {
    QTest::addColumn<QString>("change");
    QTest::addColumn<QString>("alert");  // "" = none fires
    QTest::addColumn<QString>("severity");
    QTest::newRow("healthy") << "none"
                             << ""
                             << "";
    QTest::newRow("headroom 4.9 %") << "used=951"
                                    << "HybridshardDeviceMemoryHeadroomLow"
                                    << "warning";
    QTest::newRow("headroom exactly 5 %") << "used=950"
                                          << ""
                                          << "";
    // hybridshard's cache is free for hybridshard: 99 % used of which 40 % cached leaves 41 %.
    QTest::newRow("headroom 1 % but 40 % cached") << "used=990,cached=400"
                                                  << ""
                                                  << "";
    QTest::newRow("enter 31 s") << "enter=31"
                                << "HybridshardTransitionSlow"
                                << "warning";
    QTest::newRow("enter 30 s") << "enter=30"
                                << ""
                                << "";
    QTest::newRow("rank down") << "down"
                               << "HybridshardRankDown"
                               << "critical";
    QTest::newRow("rank down after the job finished") << "down,finished"
                                                      << ""
                                                      << "";
    QTest::newRow("rollout check failed") << "check"
                                          << "HybridshardRolloutCheckFailed"
                                          << "critical";
    QTest::newRow("job failed") << "failed"
                                << "HybridshardJobFailed"
                                << "critical";
  }

  void conditions() {
    QFETCH(QString, change);
    QFETCH(QString, alert);
    QFETCH(QString, severity);
    JobSnapshot snapshot = healthy_job();
    RankState& rank = snapshot.ranks[1];
    for (const QString& part : change.split(',')) {
      if (part.startsWith("used=")) rank.device_used = part.mid(5).toLongLong();
      if (part.startsWith("cached=")) rank.cached = part.mid(7).toLongLong();
      if (part.startsWith("enter=")) rank.last_enter_seconds = part.mid(6).toDouble();
      if (part == "down") rank.up = false;
      if (part == "finished") snapshot.state = "finished";
      if (part == "check") rank.check_failures = 1;
      if (part == "failed") snapshot.state = "failed";
    }
    AlertModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::Fatal);
    model.set_snapshot(snapshot);
    if (alert.isEmpty()) {
      QCOMPARE(model.rowCount(), 0);
      return;
    }
    QCOMPARE(model.rowCount(), 1);
    QCOMPARE(model.index(0, AlertModel::kName).data().toString(), alert);
    QCOMPARE(model.index(0, AlertModel::kSeverity).data().toString(), severity);
    if (alert != "HybridshardJobFailed") QCOMPARE(model.index(0, AlertModel::kRank).data().toInt(), 1);
  }

  void thresholds_come_from_the_rules() {
    JobSnapshot snapshot = healthy_job();
    snapshot.ranks[0].device_used = 850;  // 15 % free
    AlertModel model;
    AlertRules rules;
    rules.min_headroom_fraction = 0.2;
    model.set_rules(rules);
    model.set_snapshot(snapshot);
    QCOMPARE(model.rowCount(), 1);
    QVERIFY(model.index(0, AlertModel::kDetail).data().toString().contains("15.0 %"));
  }

  void an_alert_keeps_the_time_it_started_and_critical_comes_first() {
    AlertModel model;
    JobSnapshot snapshot = healthy_job();
    snapshot.ranks[0].device_used = 960;
    model.set_snapshot(snapshot);
    snapshot.time = 110;
    snapshot.ranks[1].up = false;
    model.set_snapshot(snapshot);
    QCOMPARE(model.rowCount(), 2);
    QCOMPARE(model.alerts()[0].name, QStringLiteral("HybridshardRankDown"));
    QCOMPARE(model.alerts()[0].since, 110.0);
    QCOMPARE(model.alerts()[1].name, QStringLiteral("HybridshardDeviceMemoryHeadroomLow"));
    QCOMPARE(model.alerts()[1].since, 100.0);
    QCOMPARE(model.index(1, AlertModel::kSince).data().toString(), QStringLiteral("t = 50.0 s"));
  }
};

QTEST_MAIN(TestAlertModel)
#include "tst_alertmodel.moc"
