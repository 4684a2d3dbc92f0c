// The incremental poll (GET /status?since=CURSOR, docs/record-format.md) against the service's own documents: the
// dashboard's merge of a whole document and then only the changes gives the snapshot the whole document of that
// moment gives, with small limits (trimming, widening) and the defaults; a cursor of another job starts over; hours
// of a job stay bounded and cover the whole job; the live source asks with its cursor and merges.
#include <QtTest>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "fake_status_server.h"
#include "hybridshard/service/observe/job_state.h"
#include "live_source.h"
#include "long_job_record.h"
#include "snapshot_compare.h"
#include "status_json.h"
#include "status_mirror.h"
#include "test_support.h"

using namespace hybridshard::gui;
namespace service = hybridshard::service;

namespace {

// A record's events in the order the replay applies them (by time, ties in file order).
std::vector<nlohmann::json> events_of(const QByteArray& record) {
  std::vector<nlohmann::json> events;
  for (const QByteArray& line : record.split('\n')) {
    if (!line.trimmed().isEmpty()) events.push_back(nlohmann::json::parse(line.toStdString()));
  }
  std::stable_sort(events.begin(), events.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a["time"].get<double>() < b["time"].get<double>();
  });
  return events;
}

QByteArray sample_record() {
  QFile file(testing::sample_record_path());
  if (!file.open(QIODevice::ReadOnly)) qFatal("cannot open the sample record");
  return file.readAll();
}

StatusParseResult parsed(const nlohmann::json& document) {
  StatusParseResult result = parse_status(QByteArray::fromStdString(document.dump()));
  if (!result.ok) qFatal("status does not parse: %s", qPrintable(result.error));
  return result;
}

std::string cursor_of(const StatusMirror& mirror) { return mirror.cursor().toStdString(); }

}  // namespace

class TestIncrementalStatus : public QObject {
  Q_OBJECT

 private slots:
  void merged_changes_equal_the_whole_document_data() {
    QTest::addColumn<int>("memory_per_rank");
    QTest::addColumn<int>("phases_per_rank");
    QTest::addColumn<int>("history_buckets");
    QTest::addColumn<int>("events_per_poll");
    QTest::newRow("the service's defaults") << 600 << 200 << 256 << 37;
    QTest::newRow("small: trimming and widening") << 20 << 6 << 8 << 11;
    QTest::newRow("small, an event per poll") << 7 << 3 << 4 << 1;
  }

  void merged_changes_equal_the_whole_document() {
    QFETCH(int, memory_per_rank);
    QFETCH(int, phases_per_rank);
    QFETCH(int, history_buckets);
    QFETCH(int, events_per_poll);
    const std::vector<nlohmann::json> events = events_of(sample_record());
    service::JobState state(service::JobStateLimits{.memory_samples_per_rank = std::size_t(memory_per_rank),
                                                    .phases_per_rank = std::size_t(phases_per_rank),
                                                    .history_buckets = std::size_t(history_buckets)});
    StatusMirror mirror;
    std::size_t next = 0;
    int polls = 0;
    int coarse_seen = 0;
    while (next < events.size()) {
      const std::size_t end = std::min(events.size(), next + std::size_t(events_per_poll));
      for (; next < end; ++next) state.apply(events[next]);
      // The first poll has no cursor: the whole document. Then only changes.
      const nlohmann::json answer = polls == 0 ? state.status_json() : state.status_json_since(cursor_of(mirror));
      QCOMPARE(answer.contains("since"), polls > 0);
      mirror.apply(parsed(answer));
      ++polls;
      if (events_per_poll > 1 || polls % 50 == 0 || next == events.size()) {
        const JobSnapshot whole = parsed(state.status_json()).snapshot;
        const QString difference = testing::first_difference(mirror.snapshot(), whole);
        QVERIFY2(difference.isEmpty(), qPrintable(QStringLiteral("after %1 events: %2").arg(next).arg(difference)));
        coarse_seen += std::count_if(whole.memory.begin(), whole.memory.end(),
                                     [](const MemorySample& sample) { return sample.coarse; });
      }
    }
    QCOMPARE(mirror.snapshot().state, QStringLiteral("finished"));
    // With small limits the history shows; with the defaults the sample record fits in the full-rate window.
    QCOMPARE(coarse_seen > 0, memory_per_rank < 100);
  }

  void a_cursor_of_another_job_starts_over() {
    const std::vector<nlohmann::json> events = events_of(sample_record());
    service::JobState first;
    service::JobState second;
    for (std::size_t index = 0; index < events.size(); ++index) {
      first.apply(events[index]);
      if (index < events.size() / 2) second.apply(events[index]);
    }
    StatusMirror mirror;
    mirror.apply(parsed(first.status_json()));
    const nlohmann::json answer = second.status_json_since(cursor_of(mirror));
    QVERIFY(!answer.contains("since"));
    mirror.apply(parsed(answer));
    QCOMPARE(testing::first_difference(mirror.snapshot(), parsed(second.status_json()).snapshot), QString());
    QCOMPARE(mirror.cursor(), QString::fromStdString(second.status_json()["cursor"].get<std::string>()));
  }

  void hours_of_a_job_stay_bounded_and_cover_the_whole_job() {
    const int ranks = 4;
    const std::vector<nlohmann::json> events = events_of(testing::long_job_record(ranks, 3.0));
    service::JobState state;
    StatusMirror mirror;
    mirror.apply(parsed(state.status_json()));
    double next_poll = testing::kLongJobStart + 60;
    std::size_t incremental_bytes = 0;
    int polls = 0;
    for (const nlohmann::json& event : events) {
      if (event["time"].get<double>() >= next_poll) {
        const std::string answer = state.status_json_since(cursor_of(mirror)).dump();
        incremental_bytes += answer.size();
        ++polls;
        mirror.apply(parse_status(QByteArray::fromStdString(answer)));
        next_poll += 60;
      }
      state.apply(event);
    }
    mirror.apply(parsed(state.status_json_since(cursor_of(mirror))));
    const std::string whole_text = state.status_json().dump();
    const JobSnapshot whole = parse_status(QByteArray::fromStdString(whole_text)).snapshot;
    QCOMPARE(testing::first_difference(mirror.snapshot(), whole), QString());
    qInfo(
        "3 h, %d ranks, a sample a second: whole document %zu bytes; %d polls a minute apart, %zu bytes each on "
        "average",
        ranks, whole_text.size(), polls, incremental_bytes / std::max(polls, 1));

    const JobSnapshot& snapshot = mirror.snapshot();
    for (int rank = 0; rank < ranks; ++rank) {
      QVERIFY2(mirror.history().memory_held(rank) <= 600 + 2 * 256, qPrintable(QString::number(rank)));
      QVERIFY2(mirror.history().phases_held(rank) <= 200 + 256, qPrintable(QString::number(rank)));
      // The whole job: from its first samples and phases to its last.
      double first_sample = 1e300;
      double last_sample = 0;
      double first_phase = 1e300;
      for (const MemorySample& sample : snapshot.memory) {
        if (sample.rank != rank) continue;
        first_sample = std::min(first_sample, sample.time);
        last_sample = std::max(last_sample, sample.time);
      }
      for (const PhaseInterval& phase : snapshot.phases) {
        if (phase.rank == rank) first_phase = std::min(first_phase, phase.begin);
      }
      QVERIFY2(first_sample < testing::kLongJobStart + 64, qPrintable(QString::number(first_sample, 'f', 1)));
      QCOMPARE(last_sample, testing::kLongJobStart + 3 * 3600);
      QVERIFY2(first_phase < testing::kLongJobStart + 64, qPrintable(QString::number(first_phase, 'f', 1)));
    }
    QVERIFY(std::is_sorted(snapshot.memory.begin(), snapshot.memory.end(),
                           [](const MemorySample& a, const MemorySample& b) { return a.time < b.time; }));
    QVERIFY(std::is_sorted(snapshot.phases.begin(), snapshot.phases.end(),
                           [](const PhaseInterval& a, const PhaseInterval& b) { return a.begin < b.begin; }));
    // Rank 0's spike, an hour in and long out of the full-rate window, is still there.
    const auto spike = std::find_if(snapshot.memory.begin(), snapshot.memory.end(), [](const MemorySample& sample) {
      return sample.rank == 0 && sample.device_used == 8LL << 30;
    });
    QVERIFY(spike != snapshot.memory.end());
    QVERIFY(spike->coarse);
    // Old phases as shares of their buckets: train most of each cycle.
    double train = 0;
    double all = 0;
    for (const PhaseInterval& phase : snapshot.phases) {
      if (!phase.coarse || phase.rank != 1) continue;
      all += phase.end - phase.begin;
      if (phase.phase == QLatin1String("train")) train += phase.end - phase.begin;
    }
    QVERIFY(all > 3600);
    QVERIFY2(std::abs(train / all - 5.5 / 9.4) < 0.01, qPrintable(QString::number(train / all)));
  }

  void the_live_source_polls_incrementally_and_merges() {
    const std::vector<nlohmann::json> events = events_of(sample_record());
    service::JobState state(service::JobStateLimits{.memory_samples_per_rank = 30, .phases_per_rank = 10});
    for (std::size_t index = 0; index < events.size() / 3; ++index) state.apply(events[index]);
    testing::FakeStatusServer server;
    QVERIFY(server.listen_on_loopback());
    server.set_responder([&](const QByteArray& request_line) {
      // "GET /status?since=CURSOR HTTP/1.1"
      const QUrlQuery query(QUrl(QString::fromLatin1(request_line.split(' ').value(1))));
      const QString since = query.queryItemValue(QStringLiteral("since"), QUrl::FullyDecoded);
      const nlohmann::json answer =
          since.isEmpty() ? state.status_json() : state.status_json_since(since.toStdString());
      return QByteArray::fromStdString(answer.dump());
    });
    LiveSourceOptions options;
    options.poll_interval_ms = 50;
    LiveSource source(QUrl(server.url()), options);
    source.start();
    QTRY_COMPARE_WITH_TIMEOUT(source.connection_state(), ConnectionState::kConnected, 15000);
    for (std::size_t index = events.size() / 3; index < events.size(); ++index) state.apply(events[index]);
    const qint64 answered = source.polls_answered();
    QTRY_VERIFY_WITH_TIMEOUT(source.polls_answered() > answered + 1, 15000);
    QCOMPARE(testing::first_difference(source.snapshot(), parsed(state.status_json()).snapshot), QString());
    QVERIFY(source.snapshot().state == QLatin1String("finished"));
    QVERIFY2(!server.requests().first().contains("since="), server.requests().first().constData());
    QVERIFY2(server.requests().last().contains("since="), server.requests().last().constData());
  }
};

QTEST_MAIN(TestIncrementalStatus)
#include "tst_incrementalstatus.moc"
