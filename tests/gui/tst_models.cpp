// Every model passes QAbstractItemModelTester while it follows a replay forward, backward, through column changes
// (staging buffers come and go), aggregation, and empty states; and the values it gives are the record's.
#include <QAbstractItemModelTester>
#include <QtTest>

#include "alert_model.h"
#include "buffer_grid_model.h"
#include "rank_table_model.h"
#include "run_record.h"
#include "test_support.h"
#include "timeline_models.h"

using namespace hybridshard::gui;

namespace {

constexpr auto kFatal = QAbstractItemModelTester::FailureReportingMode::Fatal;

// Times (seconds since the sample's start) that visit every kind of change: init, train, enter with staging,
// rollout, exit, the end, and jumps backwards.
const double kTour[] = {0, 0.3, 1.0, 5.0, 11.5, 11.3, 11.8, 15.0, 19.2, 30.0, 3.0, 47.5, 48.2, 56.0, 57.0, 0};

}  // namespace

class TestModels : public QObject {
  Q_OBJECT

 private:
  RunRecord record_;

  template <typename Model>
  void tour(Model* model) {
    RecordPlayer player(&record_);
    for (double time : kTour) model->set_snapshot(player.seek(testing::kSampleStart + time));
    model->set_snapshot(JobSnapshot());
    model->set_snapshot(player.seek(testing::kSampleStart + 47.5));
  }

 private slots:
  void initTestCase() {
    QString error;
    QVERIFY2(record_.load(testing::sample_record_path(), &error), qPrintable(error));
  }

  void rank_table_model_passes_the_tester() {
    RankTableModel model;
    QAbstractItemModelTester tester(&model, kFatal);
    tour(&model);
    QCOMPARE(model.rowCount(), 4);
    QCOMPARE(model.columnCount(), int{RankTableModel::kColumnCount});
    QCOMPARE(model.index(2, RankTableModel::kHost).data().toString(), QStringLiteral("node-b"));
    QCOMPARE(model.index(2, RankTableModel::kStage).data().toString(), QStringLiteral("pp1"));
    QVERIFY(model.index(0, RankTableModel::kPhase).data().toString().startsWith("enter"));
    QCOMPARE(model.index(3, RankTableModel::kUp).data().toString(), QStringLiteral("up"));
  }

  void buffer_grid_model_passes_the_tester_per_rank_and_aggregated() {
    BufferGridModel model;
    QAbstractItemModelTester tester(&model, kFatal);
    tour(&model);
    model.set_aggregated(true);
    tour(&model);
    QCOMPARE(model.rowCount(), 2);  // node-a/pp0 and node-b/pp1
    model.set_aggregated(false);
    tour(&model);
    QCOMPARE(model.rowCount(), 4);
  }

  void grid_puts_each_ranks_own_stage_in_one_column() {
    BufferGridModel model;
    model.set_snapshot(snapshot_at(record_, testing::kSampleStart + 5.0));
    const QStringList columns = model.column_keys();
    QCOMPARE(columns.first(), QStringLiteral("train.params.pp*.vpp0"));
    QVERIFY(!columns.contains("train.params.pp1.vpp0"));
    QCOMPARE(model.headerData(0, Qt::Horizontal).toString(), QStringLiteral("params"));
    const int column = columns.indexOf("train.exp_avg.pp*.vpp0");
    QVERIFY(column >= 0);
    // Rank 2 is on stage 1: its own params are train.params.pp1.vpp0.
    QCOMPARE(model.index(2, 0).data(BufferGridModel::kBufferNameRole).toString(),
             QStringLiteral("train.params.pp1.vpp0"));
    const QString tooltip = model.index(2, 0).data(Qt::ToolTipRole).toString();
    for (const char* part : {"train.params.pp1.vpp0", "params", "bf16", "tensors", "residency", "gpu", "since"}) {
      QVERIFY2(tooltip.contains(QLatin1String(part)), qPrintable(tooltip));
    }
  }

  void grid_fill_is_bytes_relative_to_the_largest_buffer() {
    BufferGridModel model;
    model.set_snapshot(snapshot_at(record_, testing::kSampleStart + 15.0));  // rollout: KV cache is the largest
    const int kv = model.column_keys().indexOf("rollout.kv_cache");
    const int params = model.column_keys().indexOf("train.params.pp*.vpp0");
    QCOMPARE(model.index(0, kv).data(BufferGridModel::kFillRole).toDouble(), 1.0);
    const double fill = model.index(0, params).data(BufferGridModel::kFillRole).toDouble();
    const double expected = model.index(0, params).data(BufferGridModel::kBytesRole).toDouble() /
                            model.index(0, kv).data(BufferGridModel::kBytesRole).toDouble();
    QCOMPARE(fill, expected);
    QVERIFY(fill > 0.1 && fill < 0.2);
  }

  void aggregated_rows_count_ranks_per_residency() {
    BufferGridModel model;
    model.set_aggregated(true);
    model.set_snapshot(snapshot_at(record_, testing::kSampleStart + 15.0));
    const int grads = model.column_keys().indexOf("train.grads.pp*.vpp0");
    QCOMPARE(model.headerData(0, Qt::Vertical).toString().left(6), QStringLiteral("node-a"));
    QCOMPARE(model.ranks_of_row(0), (QVector<int>{0, 1}));
    QCOMPARE(model.index(0, grads).data(BufferGridModel::kCpuCountRole).toInt(), 2);
    QCOMPARE(model.index(0, grads).data(BufferGridModel::kGpuCountRole).toInt(), 0);
    QCOMPARE(model.index(0, grads).data(BufferGridModel::kResidencyRole).toString(), QStringLiteral("cpu"));
  }

  void alert_model_passes_the_tester() {
    AlertModel model;
    QAbstractItemModelTester tester(&model, kFatal);
    tour(&model);
  }

  void memory_series_model_passes_the_tester() {
    MemorySeriesModel model;
    QAbstractItemModelTester tester(&model, kFatal);
    tour(&model);
    model.set_ranks({0, 3});
    tour(&model);
    model.set_ranks({});
    QCOMPARE(model.rowCount(), 0);
  }

  void memory_series_untracked_is_used_minus_tracked_minus_cached_and_ranks_add_up() {
    const JobSnapshot snapshot = snapshot_at(record_, testing::kSampleStart + 33.0);
    MemorySeriesModel one;
    one.set_ranks({0});
    one.set_snapshot(snapshot);
    QVERIFY(one.rowCount() > 100);
    const int last = one.rowCount() - 1;
    QVERIFY(std::abs(one.value(last, MemorySeriesModel::kUntracked) -
                     (one.value(last, MemorySeriesModel::kDeviceUsed) - one.value(last, MemorySeriesModel::kTracked) -
                      one.value(last, MemorySeriesModel::kCached))) < 1e-9);
    double kinds = 0;
    for (int column = MemorySeriesModel::kFirstKind; column < MemorySeriesModel::kTracked; ++column) {
      kinds += one.value(last, column);
    }
    QVERIFY(std::abs(kinds - one.value(last, MemorySeriesModel::kTracked)) < 1e-9);
    // Rank 0 at 33 s is in rollout: inference params and KV cache on the GPU.
    QVERIFY(one.value(last, MemorySeriesModel::kFirstKind + 4) > 14.0);
    QVERIFY(one.value(last, MemorySeriesModel::kFirstKind + 5) > 23.0);

    MemorySeriesModel two;
    two.set_ranks({0, 1});
    two.set_snapshot(snapshot);
    const int last_two = two.rowCount() - 1;
    const RankState* rank0 = snapshot.find_rank(0);
    const RankState* rank1 = snapshot.find_rank(1);
    const double expected = (rank0->device_used + rank1->device_used) / (1024.0 * 1024.0 * 1024.0);
    QVERIFY(std::abs(two.value(last_two, MemorySeriesModel::kDeviceUsed) - expected) < 1e-9);
  }

  void phase_interval_model_passes_the_tester() {
    PhaseIntervalModel model;
    QAbstractItemModelTester tester(&model, kFatal);
    tour(&model);
    model.set_ranks({1, 2});
    tour(&model);
    model.set_ranks({0});
    model.set_snapshot(snapshot_at(record_, testing::kSampleStart + 12.5));
    // init, train, enter, rollout (open: ends now).
    QCOMPARE(model.rowCount(), 4);
    QCOMPARE(model.interval(3).phase, QStringLiteral("rollout"));
    QCOMPARE(model.interval(3).end, 12.5);
    QVERIFY(std::abs(model.interval(1).begin - 2.0) < 0.05);
  }
};

QTEST_MAIN(TestModels)
#include "tst_models.moc"
