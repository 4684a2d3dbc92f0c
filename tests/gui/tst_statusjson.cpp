// Reading GET /status: a valid document gives every field; each kind of malformed document gives an error that
// names the key, never a crash or a half-filled snapshot.
#include <QtTest>

#include "status_json.h"
#include "test_support.h"

using namespace hybridshard::gui;

class TestStatusJson : public QObject {
  Q_OBJECT

 private slots:
  void reads_every_field_of_a_valid_document() {
    const StatusParseResult result = parse_status(testing::status_document(3));
    QVERIFY2(result.ok, qPrintable(result.error));
    const JobSnapshot& snapshot = result.snapshot;
    QCOMPARE(snapshot.state, QStringLiteral("running"));
    QCOMPARE(snapshot.time, 101.0);
    QCOMPARE(snapshot.started, 90.0);
    QCOMPARE(snapshot.job.world_size, 3);
    QCOMPARE(snapshot.job.train_dp, 3);
    QCOMPARE(snapshot.job.architecture, QStringLiteral("qwen2"));
    QCOMPARE(snapshot.ranks.size(), 3);
    const RankState& rank = snapshot.ranks[2];
    QCOMPARE(rank.rank, 2);
    QCOMPARE(rank.host, QStringLiteral("host-0"));
    QCOMPARE(rank.device_used, std::int64_t{600});
    QCOMPARE(rank.last_enter_network_bytes, std::int64_t{1000000000});
    QCOMPARE(rank.buffers.size(), 2);
    QCOMPARE(rank.buffers[0].bytes, std::int64_t{1002});
    QCOMPARE(rank.buffers[0].residency, Residency::kGpu);
    QCOMPARE(rank.buffers[1].residency, Residency::kNone);
    QCOMPARE(rank.buffers[0].shape, QStringLiteral("[12 tensors] 500 elems"));
    QCOMPARE(snapshot.memory.size(), 1);
    QCOMPARE(snapshot.memory[0].by_kind.value(QStringLiteral("params")), std::int64_t{500});
    QCOMPARE(snapshot.phases.size(), 1);
    QCOMPARE(snapshot.phases[0].phase, QStringLiteral("rollout"));
  }

  void reads_the_cached_kind_and_untracked_leaves_it_out() {
    QJsonObject root = QJsonDocument::fromJson(testing::status_document(1)).object();
    QJsonArray ranks = root.value("ranks").toArray();
    QJsonObject rank = ranks[0].toObject();
    rank["cached"] = 70;  // used 600 = tracked 500 + cached 70 + untracked 30
    ranks[0] = rank;
    root["ranks"] = ranks;
    QJsonArray memory = root.value("memory").toArray();
    QJsonObject sample = memory[0].toObject();
    sample["cached"] = 40;
    memory[0] = sample;
    root["memory"] = memory;
    const StatusParseResult result = parse_status(QJsonDocument(root).toJson());
    QVERIFY2(result.ok, qPrintable(result.error));
    QCOMPARE(result.snapshot.ranks[0].cached, std::int64_t{70});
    QCOMPARE(result.snapshot.ranks[0].untracked(), std::int64_t{30});
    QCOMPARE(result.snapshot.memory[0].cached, std::int64_t{40});
    // A document without it (before the cached kind): nothing cached.
    const StatusParseResult old = parse_status(testing::status_document(1));
    QCOMPARE(old.snapshot.ranks[0].cached, std::int64_t{0});
  }

  void sorts_ranks_by_number() {
    QJsonObject root = QJsonDocument::fromJson(testing::status_document(3)).object();
    QJsonArray ranks = root.value("ranks").toArray();
    QJsonArray reversed;
    for (int index = ranks.size() - 1; index >= 0; --index) reversed.append(ranks[index]);
    root.insert("ranks", reversed);
    const StatusParseResult result = parse_status(QJsonDocument(root).toJson());
    QVERIFY(result.ok);
    QCOMPARE(result.snapshot.ranks[0].rank, 0);
    QCOMPARE(result.snapshot.ranks[2].rank, 2);
  }

  void rejects_malformed_documents_data() {
    QTest::addColumn<QByteArray>("body");
    QTest::addColumn<QString>("expected_in_error");
    QTest::newRow("not JSON") << QByteArray("<html>502 Bad Gateway</html>") << "not JSON";
    QTest::newRow("empty body") << QByteArray() << "not JSON";
    QTest::newRow("an array") << QByteArray("[1, 2]") << "JSON object";
    QTest::newRow("no ranks") << QByteArray(R"({"state": "running", "time": 1})") << "ranks: missing";
    QTest::newRow("ranks not an array") << QByteArray(R"({"state": "running", "time": 1, "ranks": 3})")
                                        << "ranks: expected an array";
    QTest::newRow("time a string") << QByteArray(R"({"state": "running", "time": "now", "ranks": []})")
                                   << "time: expected a number";
    QTest::newRow("rank not an object") << QByteArray(R"({"state": "running", "time": 1, "ranks": [7]})")
                                        << "ranks[0]: expected an object";
    QTest::newRow("rank without number") << QByteArray(R"({"state": "running", "time": 1, "ranks": [{"host": "a"}]})")
                                         << "ranks[0].rank: missing";
    QTest::newRow("unknown residency") << QByteArray(
                                              R"({"state": "running", "time": 1, "ranks": [{"rank": 0, "buffers": [)"
                                              R"({"name": "b", "kind": "params", "bytes": 1, "residency": "disk"}]}]})")
                                       << "ranks[0].buffers[0].residency: expected gpu, cpu or none";
    QTest::newRow("negative bytes")
        << QByteArray(R"({"state": "running", "time": 1, "ranks": [{"rank": 0, "device_used": -5}]})")
        << "ranks[0].device_used";
    QTest::newRow("by_kind not numbers")
        << QByteArray(R"({"state": "running", "time": 1, "ranks": [], "memory": [{"time": 1, "rank": 0, )"
                      R"("by_kind": {"params": "many"}}]})")
        << "memory[0].by_kind.params";
    QTest::newRow("job without world size")
        << QByteArray(R"({"state": "running", "time": 1, "ranks": [], "job": {"x": 1}})") << "job.world_size: missing";
    QTest::newRow("history bucket without its high sample")
        << QByteArray(R"({"state": "running", "time": 1, "ranks": [], "history": [{"rank": 0, )"
                      R"("memory_bucket_seconds": 1, "phase_bucket_seconds": 1, "memory": [{"bucket": 3}]}]})")
        << "history[0].memory[0].high: missing";
    QTest::newRow("history bucket width zero")
        << QByteArray(R"({"state": "running", "time": 1, "ranks": [], "history": [{"rank": 0, )"
                      R"("memory_bucket_seconds": 0, "phase_bucket_seconds": 1}]})")
        << "history[0]: bucket seconds must be > 0";
    QTest::newRow("phase seconds not numbers")
        << QByteArray(R"({"state": "running", "time": 1, "ranks": [], "history": [{"rank": 0, )"
                      R"("memory_bucket_seconds": 1, "phase_bucket_seconds": 1, "phases": [{"bucket": 3, )"
                      R"("seconds": {"train": "long"}}]}]})")
        << "history[0].phases[0].seconds.train";
  }

  void rejects_malformed_documents() {
    QFETCH(QByteArray, body);
    QFETCH(QString, expected_in_error);
    const StatusParseResult result = parse_status(body);
    QVERIFY(!result.ok);
    QVERIFY2(result.error.contains(expected_in_error), qPrintable(result.error));
    QVERIFY(result.snapshot.ranks.isEmpty());
  }
};

QTEST_MAIN(TestStatusJson)
#include "tst_statusjson.moc"
