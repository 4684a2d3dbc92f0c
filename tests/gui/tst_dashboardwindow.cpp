// The window with an injected source: models follow the source, connection state is always shown, the timeline
// follows the selected ranks, large jobs are grouped, and it survives empty and shrinking states.
#include <QCheckBox>
#include <QLabel>
#include <QScrollBar>
#include <QTableView>
#include <QtTest>

#include "alert_model.h"
#include "buffer_grid_model.h"
#include "dashboard_window.h"
#include "rank_table_model.h"
#include "residency_grid_view.h"
#include "status_json.h"
#include "test_support.h"
#include "timeline_models.h"

using namespace hybridshard::gui;

namespace {

JobSnapshot status_snapshot(int ranks, int hosts) {
  StatusParseResult parsed = parse_status(testing::status_document(ranks, hosts));
  return parsed.snapshot;
}

}  // namespace

class TestDashboardWindow : public QObject {
  Q_OBJECT

 private slots:
  void models_follow_the_source() {
    testing::FakeSource source;
    DashboardWindow window(&source);
    window.show();
    QCOMPARE(window.rank_model()->rowCount(), 0);
    source.publish(status_snapshot(4, 2));
    QCOMPARE(window.rank_model()->rowCount(), 4);
    QCOMPARE(window.grid_model()->rowCount(), 4);
    QCOMPARE(window.alert_model()->rowCount(), 0);
    JobSnapshot down = status_snapshot(4, 2);
    down.ranks[2].up = false;
    source.publish(down);
    QCOMPARE(window.alert_model()->rowCount(), 1);
    QCOMPARE(window.alert_model()->alerts()[0].name, QStringLiteral("HybridshardRankDown"));
    source.publish(JobSnapshot());
    QCOMPARE(window.rank_model()->rowCount(), 0);
    QCOMPARE(window.grid_model()->rowCount(), 0);
  }

  void connection_state_is_always_visible_data() {
    QTest::addColumn<int>("state");
    QTest::addColumn<QString>("shown");
    QTest::newRow("connecting") << int(ConnectionState::kConnecting) << "connecting";
    QTest::newRow("connected") << int(ConnectionState::kConnected) << "connected";
    QTest::newRow("refused") << int(ConnectionState::kRefused) << "refused";
    QTest::newRow("malformed") << int(ConnectionState::kMalformed) << "malformed response";
    QTest::newRow("stale") << int(ConnectionState::kStale) << "stale";
  }

  void connection_state_is_always_visible() {
    QFETCH(int, state);
    QFETCH(QString, shown);
    testing::FakeSource source;
    DashboardWindow window(&source);
    source.set_connection_state(ConnectionState(state), QStringLiteral("detail %1").arg(state));
    auto* label = window.findChild<QLabel*>(QStringLiteral("connection"));
    QVERIFY(label);
    QVERIFY2(label->text().contains(">" + shown + "<"), qPrintable(label->text()));
    QCOMPARE(label->toolTip(), QStringLiteral("detail %1").arg(state));
    QCOMPARE(window.connection_text(), shown + QStringLiteral(": detail %1").arg(state));
  }

  void selecting_ranks_feeds_the_timeline() {
    testing::FakeSource source;
    DashboardWindow window(&source);
    source.publish(status_snapshot(4, 2));
    QCOMPARE(window.memory_model()->ranks(), QVector<int>{0});
    window.select_ranks({3, 1});
    QCOMPARE(window.memory_model()->ranks(), (QVector<int>{1, 3}));
    QCOMPARE(window.phase_model()->ranks(), (QVector<int>{1, 3}));
    auto* grid = window.findChild<ResidencyGridView*>();
    QVERIFY(grid);
    QCOMPARE(grid->table()->selectionModel()->selectedRows().size(), 2);
    // Selection survives new data.
    source.publish(status_snapshot(4, 2));
    QCOMPARE(window.memory_model()->ranks(), (QVector<int>{1, 3}));
  }

  void large_jobs_are_grouped_by_host_and_stage() {
    testing::FakeSource source;
    DashboardWindow window(&source);
    window.resize(1600, 1000);
    window.show();
    source.publish(status_snapshot(256, 32));
    QCOMPARE(window.rank_model()->rowCount(), 256);
    QVERIFY(window.grid_model()->aggregated());
    QCOMPARE(window.grid_model()->rowCount(), 32);
    int ranks = 0;
    for (int row = 0; row < window.grid_model()->rowCount(); ++row)
      ranks += window.grid_model()->ranks_of_row(row).size();
    QCOMPARE(ranks, 256);
    // The operator can still look at every rank: scrolling, not squeezing.
    auto* grid = window.findChild<ResidencyGridView*>();
    auto* group = grid->findChild<QCheckBox*>();
    QVERIFY(group && group->isChecked());
    group->setChecked(false);
    QCOMPARE(window.grid_model()->rowCount(), 256);
    source.publish(status_snapshot(256, 32));  // stays per rank: the operator chose it
    QCOMPARE(window.grid_model()->rowCount(), 256);
    QApplication::processEvents();
    QVERIFY(grid->table()->verticalScrollBar()->maximum() > 0);
    QVERIFY(grid->table()->rowHeight(0) >= 18);
  }
};

QTEST_MAIN(TestDashboardWindow)
#include "tst_dashboardwindow.moc"
