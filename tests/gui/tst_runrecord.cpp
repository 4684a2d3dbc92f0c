// Run records: loading (errors name file and line), and the state at any time, forward or backward.
#include <QtTest>

#include "run_record.h"
#include "test_support.h"

using namespace hybridshard::gui;

namespace {

// One rank, one buffer: created at 10, gpu at 11, cpu at 20, freed (none) at 30, destroyed at 40.
const QByteArray kSmallRecord =
    R"({"type":"job","time":10,"world_size":1,"train":{"tp":1,"pp":1,"vpp":1,"dp":1},"rollout":{"tp":1,"dp":1}}
{"type":"rank_up","time":10.5,"rank":0,"iteration":-1,"host":"h","pid":1,"device":"cpu"}
{"type":"buffer_created","time":10.5,"rank":0,"iteration":-1,"buffer":"train.grads.pp0.vpp0","kind":"grads","dtype":"fp32","bytes":64,"shape":"[2 tensors] 16 elems"}
{"type":"residency","time":11,"rank":0,"iteration":0,"buffer":"train.grads.pp0.vpp0","kind":"grads","dtype":"fp32","bytes":64,"from":"none","to":"gpu"}
{"type":"phase_begin","time":19,"rank":0,"iteration":0,"phase":"enter"}
{"type":"transfer","time":19.5,"rank":0,"iteration":0,"path":"network","bytes":3000,"seconds":0.1,"peer":1,"operation":"enter.round0.recv"}
{"type":"residency","time":20,"rank":0,"iteration":0,"buffer":"train.grads.pp0.vpp0","kind":"grads","dtype":"fp32","bytes":64,"from":"gpu","to":"cpu"}
{"type":"phase_end","time":21,"rank":0,"iteration":0,"phase":"enter","seconds":2.0}
{"type":"residency","time":30,"rank":0,"iteration":0,"buffer":"train.grads.pp0.vpp0","kind":"grads","dtype":"fp32","bytes":64,"from":"cpu","to":"none"}
{"type":"check","time":35,"rank":0,"iteration":0,"name":"rollout_reference","ok":false,"detail":"token 3 differs"}
{"type":"buffer_destroyed","time":40,"rank":0,"iteration":0,"buffer":"train.grads.pp0.vpp0","kind":"grads","bytes":64}
{"type":"job_end","time":41,"ok":false,"message":"check failed","seconds":31}
)";

}  // namespace

class TestRunRecord : public QObject {
  Q_OBJECT

 private slots:
  void residency_changes_exactly_at_event_times_data() {
    QTest::addColumn<double>("time");
    QTest::addColumn<QString>("residency");  // "" = no such buffer
    QTest::newRow("before creation") << 10.4 << "";
    QTest::newRow("created, not allocated") << 10.5 << "none";
    QTest::newRow("just before gpu") << 10.999 << "none";
    QTest::newRow("on gpu") << 11.0 << "gpu";
    QTest::newRow("still gpu") << 19.999 << "gpu";
    QTest::newRow("offloaded") << 20.0 << "cpu";
    QTest::newRow("freed") << 30.0 << "none";
    QTest::newRow("destroyed") << 40.0 << "";
  }

  void residency_changes_exactly_at_event_times() {
    QFETCH(double, time);
    QFETCH(QString, residency);
    RunRecord record;
    QString error;
    QVERIFY2(record.load_from_data(kSmallRecord, "small.jsonl", &error), qPrintable(error));
    const JobSnapshot snapshot = snapshot_at(record, time);
    const RankState* rank = snapshot.find_rank(0);
    const BufferState* buffer = rank ? rank->find_buffer("train.grads.pp0.vpp0") : nullptr;
    QCOMPARE(buffer ? residency_name(buffer->residency) : QString(), residency);
  }

  void keeps_transition_results_checks_and_the_end() {
    RunRecord record;
    QString error;
    QVERIFY(record.load_from_data(kSmallRecord, "small.jsonl", &error));
    const JobSnapshot during = snapshot_at(record, 20.5);
    QCOMPARE(during.ranks[0].phase, QStringLiteral("enter"));
    QCOMPARE(during.ranks[0].last_enter_seconds, -1.0);
    const JobSnapshot after = snapshot_at(record, 36);
    QCOMPARE(after.ranks[0].last_enter_seconds, 2.0);
    QCOMPARE(after.ranks[0].last_enter_network_bytes, std::int64_t{3000});
    QCOMPARE(after.ranks[0].check_failures, 1);
    QCOMPARE(after.phases.size(), 1);
    QCOMPARE(after.phases[0].end, 21.0);
    QCOMPARE(after.state, QStringLiteral("running"));
    const JobSnapshot end = snapshot_at(record, 41);
    QCOMPARE(end.state, QStringLiteral("failed"));
    QCOMPARE(end.message, QStringLiteral("check failed"));
  }

  void seeking_back_gives_the_same_state_as_a_fresh_replay() {
    RunRecord record;
    QString error;
    QVERIFY2(record.load(testing::sample_record_path(), &error), qPrintable(error));
    RecordPlayer player(&record);
    for (double time : {5.0, 50.0, 56.9, 12.25}) player.seek(testing::kSampleStart + time);
    const JobSnapshot fresh = snapshot_at(record, testing::kSampleStart + 12.25);
    const JobSnapshot& replayed = player.snapshot();
    QCOMPARE(replayed.ranks.size(), fresh.ranks.size());
    QCOMPARE(replayed.memory.size(), fresh.memory.size());
    QCOMPARE(replayed.phases.size(), fresh.phases.size());
    for (int index = 0; index < fresh.ranks.size(); ++index) {
      QCOMPARE(replayed.ranks[index].phase, fresh.ranks[index].phase);
      QCOMPARE(replayed.ranks[index].buffers.size(), fresh.ranks[index].buffers.size());
      for (int buffer = 0; buffer < fresh.ranks[index].buffers.size(); ++buffer) {
        QCOMPARE(replayed.ranks[index].buffers[buffer].residency, fresh.ranks[index].buffers[buffer].residency);
      }
    }
  }

  void sample_record_covers_the_whole_run() {
    RunRecord record;
    QString error;
    QVERIFY2(record.load(testing::sample_record_path(), &error), qPrintable(error));
    QCOMPARE(record.begin_time(), testing::kSampleStart);
    QVERIFY(record.end_time() - record.begin_time() > 56.0);
    const JobSnapshot end = snapshot_at(record, record.end_time());
    QCOMPARE(end.state, QStringLiteral("finished"));
    QCOMPARE(end.job.world_size, 4);
    QCOMPARE(end.ranks.size(), 4);
    QCOMPARE(end.iteration, 2);
    for (const RankState& rank : end.ranks) QVERIFY(rank.last_enter_seconds > 0);
  }

  void names_the_line_of_a_bad_event_data() {
    QTest::addColumn<QByteArray>("data");
    QTest::addColumn<QString>("expected");
    QTest::newRow("not JSON") << QByteArray("{\"type\":\"job\",\"time\":1}\n{oops\n{\"type\":\"x\",\"time\":2}\n")
                              << "bad.jsonl:2: not a JSON object";
    QTest::newRow("no type") << QByteArray("{\"time\":1}\n") << "bad.jsonl:1: type";
    QTest::newRow("no time") << QByteArray("\n\n{\"type\":\"job\"}\n") << "bad.jsonl:3: time";
  }

  void names_the_line_of_a_bad_event() {
    QFETCH(QByteArray, data);
    QFETCH(QString, expected);
    RunRecord record;
    QString error;
    QVERIFY(!record.load_from_data(data, "bad.jsonl", &error));
    QVERIFY2(error.startsWith(expected), qPrintable(error));
  }

  void ignores_a_last_line_still_being_written() {
    RunRecord record;
    QString error;
    QVERIFY2(record.load_from_data("{\"type\":\"job\",\"time\":1,\"world_size\":1}\n{\"type\":\"rank_up\",\"ti",
                                   "live.jsonl", &error),
             qPrintable(error));
    QCOMPARE(record.events().size(), 1);
  }

  void reports_a_missing_file() {
    RunRecord record;
    QString error;
    QVERIFY(!record.load("/nonexistent/run.jsonl", &error));
    QVERIFY2(error.contains("/nonexistent/run.jsonl"), qPrintable(error));
  }
};

QTEST_MAIN(TestRunRecord)
#include "tst_runrecord.moc"
