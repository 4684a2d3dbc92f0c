#include "job_snapshot.h"

#include <QRegularExpression>
#include <algorithm>
#include <cmath>
#include <limits>

namespace hybridshard::gui {

QString residency_name(Residency residency) {
  switch (residency) {
    case Residency::kGpu:
      return QStringLiteral("gpu");
    case Residency::kCpu:
      return QStringLiteral("cpu");
    case Residency::kNone:
      break;
  }
  return QStringLiteral("none");
}

bool parse_residency(const QString& name, Residency* out) {
  if (name == QLatin1String("gpu")) {
    *out = Residency::kGpu;
  } else if (name == QLatin1String("cpu")) {
    *out = Residency::kCpu;
  } else if (name == QLatin1String("none")) {
    *out = Residency::kNone;
  } else {
    return false;
  }
  return true;
}

const QStringList& buffer_kinds() {
  static const QStringList kinds = {QStringLiteral("params"),           QStringLiteral("grads"),
                                    QStringLiteral("master_params"),    QStringLiteral("optimizer"),
                                    QStringLiteral("inference_params"), QStringLiteral("kv_cache"),
                                    QStringLiteral("staging")};
  return kinds;
}

QString buffer_kind_label(const QString& kind) {
  if (kind == QLatin1String("params")) return QStringLiteral("Train params");
  if (kind == QLatin1String("grads")) return QStringLiteral("Grads");
  if (kind == QLatin1String("master_params")) return QStringLiteral("Master params");
  if (kind == QLatin1String("optimizer")) return QStringLiteral("Optimizer");
  if (kind == QLatin1String("inference_params")) return QStringLiteral("Inference params");
  if (kind == QLatin1String("kv_cache")) return QStringLiteral("KV cache");
  if (kind == QLatin1String("staging")) return QStringLiteral("Staging");
  return kind;
}

const BufferState* RankState::find_buffer(const QString& name) const {
  for (const BufferState& buffer : buffers) {
    if (buffer.name == name) return &buffer;
  }
  return nullptr;
}

int JobInfo::pipeline_stage(int rank) const {
  const int per_stage = train_tp * train_dp;
  if (!known || per_stage <= 0 || rank < 0) return 0;
  return std::min(rank / per_stage, std::max(train_pp - 1, 0));
}

QString JobInfo::layout_text() const {
  if (!known) return QStringLiteral("layout unknown");
  QString train = QStringLiteral("train tp%1 pp%2").arg(train_tp).arg(train_pp);
  if (train_vpp > 1) train += QStringLiteral(" vpp%1").arg(train_vpp);
  train += QStringLiteral(" dp%1").arg(train_dp);
  return QStringLiteral("%1 \u2192 rollout tp%2 dp%3").arg(train).arg(rollout_tp).arg(rollout_dp);
}

const RankState* JobSnapshot::find_rank(int rank) const {
  auto it = std::lower_bound(ranks.begin(), ranks.end(), rank,
                             [](const RankState& candidate, int value) { return candidate.rank < value; });
  if (it != ranks.end() && it->rank == rank) return &*it;
  return nullptr;
}

double JobSnapshot::origin() const {
  if (started > 0) return started;
  double first = std::numeric_limits<double>::infinity();
  for (const MemorySample& sample : memory) first = std::min(first, sample.time);
  for (const PhaseInterval& phase : phases) first = std::min(first, phase.begin);
  if (std::isfinite(first)) return first;
  return time;
}

namespace {

// Sorting key of a buffer name: (family, stage, chunk, name).
struct NameKey {
  int family = 100;
  int stage = 0;
  int chunk = 0;
};

NameKey name_key(const QString& name) {
  static const QRegularExpression kTrain(
      QStringLiteral(R"(^(train|seed)\.([a-z_]+)(?:\.pp(\d+|\*))?(?:\.vpp(\d+))?$)"));
  NameKey key;
  const QRegularExpressionMatch match = kTrain.match(name);
  if (match.hasMatch()) {
    static const QStringList kTrainFamilies = {QStringLiteral("params"), QStringLiteral("grads"),
                                               QStringLiteral("master"), QStringLiteral("exp_avg"),
                                               QStringLiteral("exp_avg_sq")};
    const bool seed = match.captured(1) == QLatin1String("seed");
    const int index = kTrainFamilies.indexOf(match.captured(2));
    key.family = seed ? 40 : (index >= 0 ? index : 9);
    key.stage = match.captured(3).toInt();
    key.chunk = match.captured(4).toInt();
    return key;
  }
  if (name == QLatin1String("rollout.params")) key.family = 20;
  if (name == QLatin1String("rollout.kv_cache")) key.family = 21;
  if (name == QLatin1String("enter.staging.send")) key.family = 30;
  if (name == QLatin1String("enter.staging.recv")) key.family = 31;
  return key;
}

}  // namespace

bool buffer_name_less(const QString& a, const QString& b) {
  const NameKey ka = name_key(a);
  const NameKey kb = name_key(b);
  if (ka.family != kb.family) return ka.family < kb.family;
  if (ka.stage != kb.stage) return ka.stage < kb.stage;
  if (ka.chunk != kb.chunk) return ka.chunk < kb.chunk;
  return a < b;
}

QString short_buffer_name(const QString& name, bool with_chunk) {
  static const QRegularExpression kStaged(
      QStringLiteral(R"(^(train|seed)\.([a-z_]+)(?:\.pp(\d+|\*))?(?:\.vpp(\d+))?$)"));
  const QRegularExpressionMatch match = kStaged.match(name);
  if (match.hasMatch()) {
    QString text =
        match.captured(1) == QLatin1String("seed") ? QStringLiteral("seed ") + match.captured(2) : match.captured(2);
    if (!match.captured(3).isEmpty() && match.captured(3) != QLatin1String("*")) {
      text += QStringLiteral(" pp") + match.captured(3);
    }
    if (with_chunk && !match.captured(4).isEmpty()) text += QStringLiteral(" c") + match.captured(4);
    return text;
  }
  if (name == QLatin1String("rollout.params")) return QStringLiteral("inference");
  if (name == QLatin1String("rollout.kv_cache")) return QStringLiteral("KV cache");
  if (name == QLatin1String("enter.staging.send")) return QStringLiteral("staging tx");
  if (name == QLatin1String("enter.staging.recv")) return QStringLiteral("staging rx");
  return name;
}

}  // namespace hybridshard::gui
