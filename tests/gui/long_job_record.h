// A synthetic run record of a long job (docs/record-format.md): `ranks` ranks, a memory sample per rank every
// `sample_seconds`, a train / enter / rollout / exit cycle every 10 s, for `hours`. Memory moves with the phases
// (params stay, the KV cache comes in rollout), and rank 0 has one spike an hour in.
#pragma once

#include <QByteArray>
#include <QJsonDocument>
#include <QJsonObject>

namespace hybridshard::gui::testing {

constexpr double kLongJobStart = 1764000000.0;

inline QByteArray long_job_record(int ranks, double hours, double sample_seconds = 1.0) {
  QByteArray record;
  const auto line = [&](const QJsonObject& event) {
    record += QJsonDocument(event).toJson(QJsonDocument::Compact);
    record += '\n';
  };
  line(QJsonObject{{"type", "job"},
                   {"time", kLongJobStart},
                   {"world_size", ranks},
                   {"train", QJsonObject{{"tp", ranks}, {"pp", 1}, {"vpp", 1}, {"dp", 1}}},
                   {"rollout", QJsonObject{{"tp", 1}, {"dp", ranks}}},
                   {"backend", "gloo"},
                   {"strategy", "hybridshard"},
                   {"iterations", static_cast<int>(hours * 360)},
                   {"job_file", "long.yaml"}});
  for (int rank = 0; rank < ranks; ++rank) {
    line(QJsonObject{{"type", "rank_up"},
                     {"time", kLongJobStart + 0.1},
                     {"rank", rank},
                     {"iteration", -1},
                     {"host", "node-a"},
                     {"pid", 100 + rank},
                     {"device", "cpu"}});
  }
  constexpr qint64 kParams = 1 << 30;
  constexpr qint64 kKvCache = 1 << 29;
  const int steps = static_cast<int>(hours * 3600 / sample_seconds);
  struct Phase {
    const char* name;
    double begin;
    double end;
  };
  static constexpr Phase kCycle[] = {
      {"train", 0.5, 6.0}, {"enter", 6.0, 6.5}, {"rollout", 6.5, 9.5}, {"exit", 9.5, 9.9}};
  for (int step = 0; step < steps; ++step) {
    // This step's slot of job time: [offset - sample_seconds, offset); the sample comes at its end.
    const double offset = 1.0 + step * sample_seconds;
    const int iteration = static_cast<int>(offset / 10);
    const double in_cycle = offset - iteration * 10.0;
    for (int rank = 0; rank < ranks; ++rank) {
      for (int cycle = static_cast<int>((offset - sample_seconds) / 10); cycle <= iteration; ++cycle) {
        for (const Phase& phase : kCycle) {
          for (const bool begin : {true, false}) {
            const double at = cycle * 10.0 + (begin ? phase.begin : phase.end);
            if (at < offset - sample_seconds || at >= offset) continue;
            QJsonObject event{{"type", begin ? "phase_begin" : "phase_end"},
                              {"time", kLongJobStart + at},
                              {"rank", rank},
                              {"iteration", cycle},
                              {"phase", phase.name}};
            if (!begin) event["seconds"] = phase.end - phase.begin;
            line(event);
          }
        }
      }
      const bool rollout = in_cycle >= 6.5 && in_cycle < 9.5;
      qint64 used = kParams + (rollout ? kKvCache : 0) + 1000 * rank;
      if (rank == 0 && step == static_cast<int>(3600 / sample_seconds)) used = 8 * kParams;
      const qint64 tracked = kParams + (rollout ? kKvCache : 0);
      line(QJsonObject{{"type", "memory"},
                       {"time", kLongJobStart + offset},
                       {"rank", rank},
                       {"iteration", iteration},
                       {"device_used", used},
                       {"device_total", 16 * kParams},
                       {"tracked", tracked},
                       {"by_kind", QJsonObject{{"params", kParams}, {"kv_cache", rollout ? kKvCache : 0}}}});
    }
  }
  line(QJsonObject{{"type", "job_end"},
                   {"time", kLongJobStart + 2.0 + steps * sample_seconds},
                   {"ok", true},
                   {"message", "done"},
                   {"seconds", 1.0 + steps * sample_seconds}});
  return record;
}

}  // namespace hybridshard::gui::testing
