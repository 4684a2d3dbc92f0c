// The contract between the service's fold (JobState: what GET /status serves while a job runs) and the dashboard's
// replay (RecordPlayer: what it shows of a record afterwards). The dashboard links no core, so the rules exist twice;
// this test replays one record through both, at many moments, and compares the states field by field. The one
// difference on purpose: the dashboard's replay keeps last_enter_seconds / last_exit_seconds at -1 until the first
// enter / exit ended, where the status document says 0.
#include <QtTest>
#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "hybridshard/service/observe/job_state.h"
#include "hybridshard/service/observe/record.h"
#include "long_job_record.h"
#include "run_record.h"
#include "snapshot_compare.h"
#include "status_json.h"
#include "test_support.h"

using namespace hybridshard::gui;
namespace service = hybridshard::service;

namespace {

// The service's state after every event with time <= `time`, in the order the replay applies them (by time, ties
// in file order), read back through the dashboard's status parser.
JobSnapshot folded_at(const std::vector<nlohmann::json>& events, double time) {
  service::JobState state;
  for (const nlohmann::json& event : events) {
    if (event["time"].get<double>() <= time) state.apply(event);
  }
  const std::string body = state.status_json().dump();
  StatusParseResult parsed = parse_status(QByteArray::fromStdString(body));
  if (!parsed.ok) qFatal("status does not parse: %s", qPrintable(parsed.error));
  return parsed.snapshot;
}

double seconds_or_unset(double status_value, bool ended) { return ended ? status_value : -1.0; }

}  // namespace

class TestFoldContract : public QObject {
  Q_OBJECT

 private slots:
  void the_replay_and_the_service_fold_agree_at_every_moment() {
    const QString path = testing::sample_record_path();
    RunRecord record;
    QString error;
    QVERIFY2(record.load(path, &error), qPrintable(error));
    std::vector<nlohmann::json> events = service::RecordReader::open(path.toStdString()).read_all();
    std::stable_sort(events.begin(), events.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
      return a["time"].get<double>() < b["time"].get<double>();
    });

    // Every moment an event happens at, plus the end.
    std::vector<double> moments;
    for (const nlohmann::json& event : events) moments.push_back(event["time"].get<double>());
    moments.erase(std::unique(moments.begin(), moments.end()), moments.end());
    QVERIFY(moments.size() > 100);

    RecordPlayer player(&record);
    int compared = 0;
    for (std::size_t index = 0; index < moments.size(); index += 7) {
      const double time = moments[index];
      const JobSnapshot live = folded_at(events, time);
      const JobSnapshot replay = player.seek(time);
      const QString at = QStringLiteral(" at +%1 s").arg(time - moments.front());
      QVERIFY2(live.state == replay.state, qPrintable(live.state + " vs " + replay.state + at));
      QCOMPARE(live.message, replay.message);
      QCOMPARE(live.started, replay.started);
      QCOMPARE(live.iteration, replay.iteration);
      QCOMPARE(live.job.world_size, replay.job.world_size);
      QCOMPARE(live.ranks.size(), replay.ranks.size());
      for (int r = 0; r < live.ranks.size(); ++r) {
        const RankState& a = live.ranks[r];
        const RankState& b = replay.ranks[r];
        const QString where = QStringLiteral("rank %1").arg(a.rank) + at;
        QVERIFY2(a.rank == b.rank, qPrintable(where));
        QVERIFY2(a.up == b.up, qPrintable(where + " up"));
        QVERIFY2(a.host == b.host && a.pid == b.pid && a.device == b.device, qPrintable(where + " host/pid/device"));
        QVERIFY2(a.down_reason == b.down_reason, qPrintable(where + " down_reason"));
        QVERIFY2(a.phase == b.phase, qPrintable(where + " phase: " + a.phase + " vs " + b.phase));
        QVERIFY2(a.phase_since == b.phase_since, qPrintable(where + " phase_since"));
        QVERIFY2(a.iteration == b.iteration, qPrintable(where + " iteration"));
        QVERIFY2(a.device_used == b.device_used && a.device_total == b.device_total && a.tracked == b.tracked &&
                     a.cached == b.cached,
                 qPrintable(where + " memory"));
        QVERIFY2(seconds_or_unset(a.last_enter_seconds, b.last_enter_seconds >= 0) == b.last_enter_seconds,
                 qPrintable(where + " last_enter_seconds"));
        QVERIFY2(seconds_or_unset(a.last_exit_seconds, b.last_exit_seconds >= 0) == b.last_exit_seconds,
                 qPrintable(where + " last_exit_seconds"));
        QVERIFY2(b.last_enter_seconds >= 0 || a.last_enter_seconds == 0, qPrintable(where + " enter unset"));
        QVERIFY2(a.last_enter_network_bytes == b.last_enter_network_bytes,
                 qPrintable(where + QStringLiteral(" last_enter_network_bytes %1 vs %2")
                                        .arg(a.last_enter_network_bytes)
                                        .arg(b.last_enter_network_bytes)));
        QVERIFY2(a.check_failures == b.check_failures, qPrintable(where + " check_failures"));
        QVERIFY2(a.buffers.size() == b.buffers.size(), qPrintable(where + " buffers"));
        for (int k = 0; k < a.buffers.size(); ++k) {
          const BufferState& x = a.buffers[k];
          const BufferState& y = b.buffers[k];
          QVERIFY2(x.name == y.name && x.kind == y.kind && x.dtype == y.dtype && x.bytes == y.bytes &&
                       x.residency == y.residency && x.since == y.since && x.shape == y.shape,
                   qPrintable(where + " buffer " + x.name));
        }
      }
      QVERIFY2(live.memory.size() == replay.memory.size(), qPrintable("memory samples" + at));
      for (int m = 0; m < live.memory.size(); ++m) {
        QCOMPARE(live.memory[m].time, replay.memory[m].time);
        QCOMPARE(live.memory[m].device_used, replay.memory[m].device_used);
        QCOMPARE(live.memory[m].cached, replay.memory[m].cached);
        QCOMPARE(live.memory[m].by_kind, replay.memory[m].by_kind);
      }
      QVERIFY2(live.phases.size() == replay.phases.size(), qPrintable("phases" + at));
      for (int p = 0; p < live.phases.size(); ++p) {
        QCOMPARE(live.phases[p].rank, replay.phases[p].rank);
        QCOMPARE(live.phases[p].phase, replay.phases[p].phase);
        QCOMPARE(live.phases[p].begin, replay.phases[p].begin);
        QCOMPARE(live.phases[p].end, replay.phases[p].end);
      }
      ++compared;
    }
    QVERIFY(compared > 10);
  }

  // Two hours of four ranks: the replay keeps the series as the fold does (recent at full rate, buckets of the whole
  // job), with the fold's limits, and agrees with the status document at moments along the way.
  void a_long_record_replays_as_the_fold_keeps_it_data() {
    QTest::addColumn<int>("memory_per_rank");
    QTest::addColumn<int>("phases_per_rank");
    QTest::addColumn<int>("history_buckets");
    QTest::newRow("the service's defaults") << 600 << 200 << 256;
    QTest::newRow("small") << 50 << 10 << 16;
  }

  void a_long_record_replays_as_the_fold_keeps_it() {
    QFETCH(int, memory_per_rank);
    QFETCH(int, phases_per_rank);
    QFETCH(int, history_buckets);
    const QByteArray data = testing::long_job_record(4, 2.0);
    RunRecord record;
    QString error;
    QVERIFY2(record.load_from_data(data, QStringLiteral("long.jsonl"), &error), qPrintable(error));
    service::JobState state(service::JobStateLimits{.memory_samples_per_rank = std::size_t(memory_per_rank),
                                                    .phases_per_rank = std::size_t(phases_per_rank),
                                                    .history_buckets = std::size_t(history_buckets)});
    HistoryLimits limits;
    limits.memory_per_rank = memory_per_rank;
    limits.phases_per_rank = phases_per_rank;
    limits.history_buckets = history_buckets;
    RecordPlayer player(&record, limits);
    int next = 0;
    for (const double hours : {0.25, 1.0, 1.5, 2.1}) {
      const double time = testing::kLongJobStart + hours * 3600;
      for (; next < record.events().size() && record.events()[next].time <= time; ++next) {
        state.apply(nlohmann::json::parse(
            QJsonDocument(record.events()[next].fields).toJson(QJsonDocument::Compact).toStdString()));
      }
      JobSnapshot live = parse_status(QByteArray::fromStdString(state.status_json().dump())).snapshot;
      const JobSnapshot& replay = player.seek(time);
      live.time = replay.time;  // the status says the newest event's time, the replay the moment asked for
      const QString difference = testing::first_difference(live, replay);
      QVERIFY2(difference.isEmpty(), qPrintable(QStringLiteral("at %1 h: %2").arg(hours).arg(difference)));
      QVERIFY(replay.memory.size() <= 4 * (memory_per_rank + 2 * history_buckets));
    }
  }
};

QTEST_GUILESS_MAIN(TestFoldContract)
#include "tst_foldcontract.moc"
