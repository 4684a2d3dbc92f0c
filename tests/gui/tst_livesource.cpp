// Live mode against a local fake status endpoint: all ranks shown; refused, malformed, HTTP errors and silence
// become connection states in the window, never a crash or a hang.
#include <QtTest>

#include "buffer_grid_model.h"
#include "dashboard_window.h"
#include "fake_status_server.h"
#include "live_source.h"
#include "rank_table_model.h"
#include "test_support.h"

using namespace hybridshard::gui;
using testing::FakeStatusServer;

namespace {

LiveSourceOptions fast_options() {
  LiveSourceOptions options;
  options.poll_interval_ms = 100;
  options.request_timeout_ms = 500;
  options.stale_after_ms = 800;
  return options;
}

constexpr int kWaitMs = 15000;  // generous: the machine may be busy; nothing here measures time

}  // namespace

class TestLiveSource : public QObject {
  Q_OBJECT

 private slots:
  void shows_every_rank_of_a_running_job() {
    FakeStatusServer server;
    QVERIFY(server.listen_on_loopback());
    server.set_response(testing::status_document(8, 2));
    LiveSource source(QUrl(server.url()), fast_options());
    DashboardWindow window(&source);
    window.show();
    source.start();
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kConnected, kWaitMs);
    QCOMPARE(window.rank_model()->rowCount(), 8);
    QCOMPARE(window.grid_model()->rowCount(), 8);
    QCOMPARE(window.grid_model()->columnCount(), 2);
    QCOMPARE(window.rank_model()->index(7, RankTableModel::kHost).data().toString(), QStringLiteral("host-1"));
    QVERIFY(window.connection_text().startsWith("connected"));
    QVERIFY(server.requests().first().startsWith("GET /status HTTP/1.1"));
    // Polling goes on: a new document replaces the old one.
    server.set_response(testing::status_document(3, 1, "cpu"));
    QTRY_COMPARE_WITH_TIMEOUT(window.rank_model()->rowCount(), 3, kWaitMs);
    QCOMPARE(window.grid_model()->index(0, 0).data(BufferGridModel::kResidencyRole).toString(), QStringLiteral("cpu"));
  }

  void a_refused_connection_is_an_error_state() {
    quint16 port = 0;
    {
      QTcpServer closed;
      QVERIFY(closed.listen(QHostAddress::LocalHost, 0));
      port = closed.serverPort();
    }  // nothing listens there any more
    LiveSource source(QUrl(QStringLiteral("http://127.0.0.1:%1").arg(port)), fast_options());
    DashboardWindow window(&source);
    window.show();
    source.start();
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kRefused, kWaitMs);
    QVERIFY2(window.connection_text().startsWith("refused"), qPrintable(window.connection_text()));
    QVERIFY2(window.connection_text().contains(QString::number(port)), qPrintable(window.connection_text()));
    QCOMPARE(window.rank_model()->rowCount(), 0);
  }

  void a_malformed_response_is_an_error_state_data() {
    QTest::addColumn<QByteArray>("body");
    QTest::newRow("HTML") << QByteArray("<html><body>Bad gateway</body></html>");
    QTest::newRow("truncated JSON") << testing::status_document(4).left(100);
    QTest::newRow("wrong shape") << QByteArray(R"({"ranks": "all of them", "state": "running", "time": 1})");
  }

  void a_malformed_response_is_an_error_state() {
    QFETCH(QByteArray, body);
    FakeStatusServer server;
    QVERIFY(server.listen_on_loopback());
    server.set_response(body);
    LiveSource source(QUrl(server.url()), fast_options());
    DashboardWindow window(&source);
    window.show();
    source.start();
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kMalformed, kWaitMs);
    QVERIFY2(window.connection_text().startsWith("malformed response: status:"), qPrintable(window.connection_text()));
    QCOMPARE(window.rank_model()->rowCount(), 0);
  }

  void keeps_the_last_good_state_when_answers_turn_bad() {
    FakeStatusServer server;
    QVERIFY(server.listen_on_loopback());
    server.set_response(testing::status_document(4));
    LiveSource source(QUrl(server.url()), fast_options());
    DashboardWindow window(&source);
    source.start();
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kConnected, kWaitMs);
    server.set_response("{", "200 OK");
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kMalformed, kWaitMs);
    QCOMPARE(window.rank_model()->rowCount(), 4);
    server.set_response("", "500 Internal Server Error");
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kRefused, kWaitMs);
    QVERIFY2(source.connection_detail().contains("HTTP 500"), qPrintable(source.connection_detail()));
    server.set_response(testing::status_document(4));
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kConnected, kWaitMs);
  }

  void an_endpoint_that_stops_answering_turns_stale() {
    FakeStatusServer server;
    QVERIFY(server.listen_on_loopback());
    server.set_response(testing::status_document(2));
    LiveSource source(QUrl(server.url()), fast_options());
    source.start();
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kConnected, kWaitMs);
    server.set_mode(FakeStatusServer::Mode::kSilent);
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kStale, kWaitMs);
    QCOMPARE(source.snapshot().ranks.size(), 2);  // the last state stays visible
  }

  void accepts_a_full_status_url() {
    LiveSource source(QUrl("http://127.0.0.1:9464/status"));
    QCOMPARE(source.status_url().toString(), QStringLiteral("http://127.0.0.1:9464/status"));
    LiveSource base(QUrl("http://127.0.0.1:9464/"));
    QCOMPARE(base.status_url().toString(), QStringLiteral("http://127.0.0.1:9464/status"));
  }

  void picks_a_job_of_serve() {
    LiveSourceOptions options;
    options.job = QStringLiteral("slurm-job.2");
    LiveSource source(QUrl("http://127.0.0.1:9464"), options);
    QCOMPARE(source.status_url().toString(), QStringLiteral("http://127.0.0.1:9464/status?job=slurm-job.2"));
  }
};

QTEST_MAIN(TestLiveSource)
#include "tst_livesource.moc"
