// Shared by the dashboard tests: the sample record and a data source the test drives by hand.
#pragma once

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QString>

#include "data_source.h"

namespace hybridshard::gui::testing {

inline QString sample_record_path() { return QStringLiteral(HYBRIDSHARD_GUI_TEST_DATA "/quickstart_tp2pp2_tp1.jsonl"); }

// Epoch seconds of the sample record's job event (see data/make_sample_record.py).
constexpr double kSampleStart = 1764079200.0;

class FakeSource : public DataSource {
 public:
  using DataSource::DataSource;
  QString description() const override { return QStringLiteral("fake"); }
  void start() override {}
  using DataSource::publish;
  using DataSource::set_connection_state;
};

// A status document (docs/record-format.md) with `ranks` ranks on `hosts` hosts, each with two buffers.
inline QByteArray status_document(int ranks, int hosts = 2, const QString& residency = QStringLiteral("gpu")) {
  QJsonArray rank_array;
  for (int rank = 0; rank < ranks; ++rank) {
    QJsonArray buffers;
    buffers.append(QJsonObject{{"name", "train.params.pp0.vpp0"},
                               {"kind", "params"},
                               {"dtype", "bf16"},
                               {"bytes", 1000 + rank},
                               {"residency", residency},
                               {"since", 100.0},
                               {"shape", "[12 tensors] 500 elems"}});
    buffers.append(QJsonObject{{"name", "rollout.kv_cache"},
                               {"kind", "kv_cache"},
                               {"dtype", "bf16"},
                               {"bytes", 4000},
                               {"residency", "none"},
                               {"since", 100.5},
                               {"shape", ""}});
    rank_array.append(QJsonObject{{"rank", rank},
                                  {"host", QStringLiteral("host-%1").arg(rank % hosts)},
                                  {"pid", 1000 + rank},
                                  {"up", true},
                                  {"device", "cpu"},
                                  {"phase", "rollout"},
                                  {"phase_since", 100.0},
                                  {"iteration", 1},
                                  {"device_used", 600},
                                  {"device_total", 1000},
                                  {"tracked", 500},
                                  {"last_enter_seconds", 0.5},
                                  {"last_exit_seconds", 0.1},
                                  {"last_enter_network_bytes", 1000000000},
                                  {"check_failures", 0},
                                  {"buffers", buffers}});
  }
  QJsonObject job{{"world_size", ranks},
                  {"model", QJsonObject{{"architecture", "qwen2"}, {"num_hidden_layers", 2}, {"dtype", "bf16"}}},
                  {"train", QJsonObject{{"tp", 1}, {"pp", 1}, {"vpp", 1}, {"dp", ranks}}},
                  {"rollout", QJsonObject{{"tp", 1}, {"dp", ranks}}},
                  {"backend", "gloo"},
                  {"strategy", "hybridshard"},
                  {"iterations", 3},
                  {"job_file", "job.yaml"}};
  QJsonArray memory;
  memory.append(QJsonObject{{"time", 99.0},
                            {"rank", 0},
                            {"device_used", 550},
                            {"device_total", 1000},
                            {"tracked", 500},
                            {"by_kind", QJsonObject{{"params", 500}}}});
  QJsonArray phases;
  phases.append(QJsonObject{{"rank", 0}, {"iteration", 1}, {"phase", "rollout"}, {"begin", 100.0}, {"end", -1}});
  QJsonObject root{{"job", job},     {"state", "running"},  {"message", ""},    {"time", 101.0},   {"started", 90.0},
                   {"iteration", 1}, {"ranks", rank_array}, {"memory", memory}, {"phases", phases}};
  return QJsonDocument(root).toJson(QJsonDocument::Compact);
}

}  // namespace hybridshard::gui::testing
