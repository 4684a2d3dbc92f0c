// What the dashboard knows about a job at one moment: the vocabulary of docs/record-format.md as plain values.
// Both data sources produce it (the live source from GET /status, the replay source from the run record); the
// models only read it.
#pragma once

#include <QHash>
#include <QString>
#include <QStringList>
#include <QVector>
#include <cstdint>

namespace hybridshard::gui {

enum class Residency : std::uint8_t { kGpu, kCpu, kNone };
QString residency_name(Residency residency);  // "gpu", "cpu", "none"
bool parse_residency(const QString& name, Residency* out);

// The buffer kinds of the record format, in the order the grid and the stacked chart show them.
const QStringList& buffer_kinds();  // params, grads, master_params, optimizer, inference_params, kv_cache, staging
QString buffer_kind_label(const QString& kind);  // "params" -> "Params", "kv_cache" -> "KV cache", ...

struct BufferState {
  QString name;  // unique per rank: "train.params.pp0.vpp0", "rollout.kv_cache", ...
  QString kind;
  QString dtype;
  std::int64_t bytes = 0;
  Residency residency = Residency::kNone;
  double since = 0;  // epoch seconds of the last residency change (or creation)
  QString shape;
};

struct RankState {
  int rank = 0;
  QString host;
  qint64 pid = 0;
  bool up = false;
  QString device;
  QString phase;  // init, train, enter, rollout, exit, shutdown; empty before the first phase
  double phase_since = 0;
  int iteration = -1;
  std::int64_t device_used = 0;
  std::int64_t device_total = 0;
  std::int64_t tracked = 0;
  std::int64_t cached = 0;  // device memory in hybridshard's cache (records before it: 0)
  std::int64_t untracked() const { return device_used - tracked - cached; }
  double last_enter_seconds = -1;  // -1: no enter yet
  double last_exit_seconds = -1;
  std::int64_t last_enter_network_bytes = 0;
  int check_failures = 0;
  QString down_reason;  // from rank_down, when known
  QVector<BufferState> buffers;

  const BufferState* find_buffer(const QString& name) const;
};

struct MemorySample {
  double time = 0;
  int rank = 0;
  std::int64_t device_used = 0;
  std::int64_t device_total = 0;
  std::int64_t tracked = 0;
  std::int64_t cached = 0;               // device memory in hybridshard's cache (records before it: 0)
  QHash<QString, std::int64_t> by_kind;  // bytes on gpu per buffer kind
  bool coarse = false;  // the lowest or highest sample of a history bucket (older than the full-rate samples)
};

struct PhaseInterval {
  int rank = 0;
  int iteration = -1;
  QString phase;
  double begin = 0;
  double end = -1;      // -1: still running
  bool coarse = false;  // a phase's share of a history bucket, laid out from the bucket's start (not one interval)
};

struct JobInfo {
  bool known = false;  // false until the job event / the status "job" object was seen
  int world_size = 0;
  QString architecture;
  int num_hidden_layers = 0;
  int hidden_size = 0;
  QString model_dtype;
  int train_tp = 1, train_pp = 1, train_vpp = 1, train_dp = 1;
  int rollout_tp = 1, rollout_dp = 1;
  QString backend;
  QString strategy;
  int iterations = 0;
  QString job_file;

  // Pipeline stage of a rank under Megatron-Core's order (tp fastest, then dp, then pp); 0 when unknown.
  int pipeline_stage(int rank) const;
  QString layout_text() const;  // "train tp2 pp2 dp1 -> rollout tp1 dp4"
};

struct JobSnapshot {
  JobInfo job;
  QString state;  // starting, running, finished, failed
  QString message;
  double time = 0;     // epoch seconds this snapshot describes
  double started = 0;  // epoch seconds the job started (0 when unknown)
  int iteration = -1;
  QVector<RankState> ranks;  // sorted by rank
  // The whole job's series, every rank, sorted by time (memory by `time`, phases by `begin`; at equal times by rank),
  // from both sources alike (JobHistory::compose): per rank, the newest samples and intervals at full rate (the last
  // 600 samples and 200 intervals by default) and, before them, the downsampled history of the job since its start
  // (`coarse`: a bucket's lowest and highest sample; a bucket's phase shares). Bounded per rank whatever the job's
  // length (docs/record-format.md, "Status").
  QVector<MemorySample> memory;
  QVector<PhaseInterval> phases;

  const RankState* find_rank(int rank) const;
  // Seconds since the job started (or since the first thing seen, when the start is unknown).
  double origin() const;
};

// Buffer name as a short column title: "train.params.pp1.vpp0" -> "params pp1", "rollout.kv_cache" -> "kv cache".
QString short_buffer_name(const QString& name, bool with_chunk);
// Order of buffer columns: train buffers by kind then stage/chunk, then rollout, enter staging, seed copies.
bool buffer_name_less(const QString& a, const QString& b);

}  // namespace hybridshard::gui
