#include "status_json.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonParseError>
#include <QJsonValue>
#include <algorithm>
#include <cmath>
#include <limits>

#include "hybridshard/service/events/limits.h"

namespace hybridshard::gui {
namespace {

// double -> integer without undefined behaviour: NaN gives 0, values beyond the type's range saturate (a record or
// status document may hold any JSON number).
template <typename Int>
Int saturate(double value) {
  if (std::isnan(value)) return 0;
  if (value <= static_cast<double>(std::numeric_limits<Int>::min())) return std::numeric_limits<Int>::min();
  if (value >= static_cast<double>(std::numeric_limits<Int>::max())) return std::numeric_limits<Int>::max();
  return static_cast<Int>(value);
}

// Reads typed fields of one JSON object; the first problem is kept with its key path.
class FieldReader {
 public:
  FieldReader(const QJsonObject& object, QString path, QString* error)
      : object_(object), path_(std::move(path)), error_(error) {}

  double number(const char* key, bool required, double fallback = 0) {
    const QJsonValue value = object_.value(QLatin1String(key));
    if (value.isUndefined() || value.isNull()) {
      if (required) fail(key, QStringLiteral("missing"));
      return fallback;
    }
    if (!value.isDouble() || !std::isfinite(value.toDouble())) {
      fail(key, QStringLiteral("expected a number"));
      return fallback;
    }
    return value.toDouble();
  }
  std::int64_t bytes(const char* key, bool required) {
    const double value = number(key, required);
    if (value < 0) fail(key, QStringLiteral("expected a size >= 0, got %1").arg(value));
    return saturate<std::int64_t>(value);
  }
  int integer(const char* key, bool required, int fallback = 0) {
    return saturate<int>(number(key, required, fallback));
  }
  QString text(const char* key, bool required) {
    const QJsonValue value = object_.value(QLatin1String(key));
    if (value.isUndefined() || value.isNull()) {
      if (required) fail(key, QStringLiteral("missing"));
      return {};
    }
    if (!value.isString()) {
      fail(key, QStringLiteral("expected a string"));
      return {};
    }
    return value.toString();
  }
  bool boolean(const char* key, bool required, bool fallback) {
    const QJsonValue value = object_.value(QLatin1String(key));
    if (value.isUndefined() || value.isNull()) {
      if (required) fail(key, QStringLiteral("missing"));
      return fallback;
    }
    if (!value.isBool()) {
      fail(key, QStringLiteral("expected true or false"));
      return fallback;
    }
    return value.toBool();
  }
  QJsonObject object(const char* key, bool required) {
    const QJsonValue value = object_.value(QLatin1String(key));
    if (value.isUndefined() || value.isNull()) {
      if (required) fail(key, QStringLiteral("missing"));
      return {};
    }
    if (!value.isObject()) fail(key, QStringLiteral("expected an object"));
    return value.toObject();
  }
  QJsonArray array(const char* key, bool required) {
    const QJsonValue value = object_.value(QLatin1String(key));
    if (value.isUndefined() || value.isNull()) {
      if (required) fail(key, QStringLiteral("missing"));
      return {};
    }
    if (!value.isArray()) fail(key, QStringLiteral("expected an array"));
    return value.toArray();
  }
  // An object of numbers ({name: number}) under `key`, each converted by `convert` into `out`; an entry that is not a
  // finite number is an error naming it ("path.key.name: expected a number").
  template <typename Map, typename Convert>
  void number_map(const char* key, bool required, Map* out, Convert convert) {
    const QJsonObject numbers = object(key, required);
    for (auto it = numbers.begin(); it != numbers.end(); ++it) {
      const double value = it.value().toDouble();
      if ((!it.value().isDouble() || !std::isfinite(value)) && error_->isEmpty()) {
        *error_ = QStringLiteral("%1.%2: expected a number").arg(path(key), it.key());
      }
      out->insert(it.key(), convert(value));
    }
  }
  Residency residency(const char* key) {
    const QString name = text(key, true);
    Residency residency = Residency::kNone;
    if (!name.isNull() && !parse_residency(name, &residency)) {
      fail(key, QStringLiteral("expected gpu, cpu or none, got \"%1\"").arg(name));
    }
    return residency;
  }
  QString path(const char* key) const {
    return path_.isEmpty() ? QLatin1String(key) : path_ + '.' + QLatin1String(key);
  }
  bool failed() const { return !error_->isEmpty(); }

 private:
  void fail(const char* key, const QString& what) {
    if (error_->isEmpty()) *error_ = QStringLiteral("%1: %2").arg(path(key), what);
  }

  QJsonObject object_;
  QString path_;
  QString* error_;
};

QJsonObject element_object(const QJsonArray& array, int index, const QString& path, QString* error) {
  const QJsonValue value = array.at(index);
  if (!value.isObject() && error->isEmpty()) {
    *error = QStringLiteral("%1[%2]: expected an object").arg(path).arg(index);
  }
  return value.toObject();
}

void parse_buffer(const QJsonObject& object, const QString& path, QString* error, BufferState* buffer) {
  FieldReader reader(object, path, error);
  buffer->name = reader.text("name", true);
  buffer->kind = reader.text("kind", true);
  buffer->dtype = reader.text("dtype", false);
  buffer->bytes = reader.bytes("bytes", true);
  buffer->residency = reader.residency("residency");
  buffer->since = reader.number("since", false);
  buffer->shape = reader.text("shape", false);
}

MemorySample parse_sample(const QJsonObject& object, const QString& path, QString* error) {
  FieldReader reader(object, path, error);
  MemorySample sample;
  sample.time = reader.number("time", true);
  sample.device_used = reader.bytes("device_used", false);
  sample.device_total = reader.bytes("device_total", false);
  sample.tracked = reader.bytes("tracked", false);
  sample.cached = reader.bytes("cached", false);
  reader.number_map("by_kind", false, &sample.by_kind, [](double value) { return saturate<std::int64_t>(value); });
  return sample;
}

// One rank's history buckets: {"rank", "memory_bucket_seconds", "phase_bucket_seconds", "memory": [{"bucket",
// "high", "low"?}], "phases": [{"bucket", "iteration", "seconds": {phase: s}}]}.
RankHistoryChanges parse_rank_history(const QJsonObject& object, const QString& path, QString* error) {
  FieldReader reader(object, path, error);
  RankHistoryChanges history;
  history.rank = reader.integer("rank", true);
  history.memory_bucket_seconds = reader.number("memory_bucket_seconds", true);
  history.phase_bucket_seconds = reader.number("phase_bucket_seconds", true);
  if (error->isEmpty() && (history.memory_bucket_seconds <= 0 || history.phase_bucket_seconds <= 0)) {
    *error = QStringLiteral("%1: bucket seconds must be > 0").arg(path);
  }
  const QJsonArray memory = reader.array("memory", false);
  const QString memory_path = reader.path("memory");
  for (int index = 0; index < memory.size() && error->isEmpty(); ++index) {
    const QString element = QStringLiteral("%1[%2]").arg(memory_path).arg(index);
    const QJsonObject bucket_object = element_object(memory, index, memory_path, error);
    FieldReader bucket_reader(bucket_object, element, error);
    const auto bucket_index = saturate<std::int64_t>(bucket_reader.number("bucket", true));
    MemoryBucket bucket;
    bucket.high = parse_sample(bucket_reader.object("high", true), bucket_reader.path("high"), error);
    bucket.low = bucket_object.contains(QLatin1String("low"))
                     ? parse_sample(bucket_reader.object("low", true), bucket_reader.path("low"), error)
                     : bucket.high;
    bucket.low.rank = bucket.high.rank = history.rank;
    bucket.empty = false;
    history.memory[bucket_index] = std::move(bucket);
  }
  const QJsonArray phases = reader.array("phases", false);
  const QString phases_path = reader.path("phases");
  for (int index = 0; index < phases.size() && error->isEmpty(); ++index) {
    const QString element = QStringLiteral("%1[%2]").arg(phases_path).arg(index);
    FieldReader bucket_reader(element_object(phases, index, phases_path, error), element, error);
    const auto bucket_index = saturate<std::int64_t>(bucket_reader.number("bucket", true));
    PhaseBucket bucket;
    bucket.iteration = bucket_reader.integer("iteration", false, -1);
    bucket_reader.number_map("seconds", true, &bucket.seconds, [](double value) { return value; });
    history.phases[bucket_index] = std::move(bucket);
  }
  return history;
}

void parse_rank(const QJsonObject& object, const QString& path, QString* error, RankState* rank) {
  FieldReader reader(object, path, error);
  rank->rank = reader.integer("rank", true);
  rank->host = reader.text("host", false);
  rank->pid = saturate<qint64>(reader.number("pid", false));
  rank->up = reader.boolean("up", false, true);
  rank->device = reader.text("device", false);
  rank->phase = reader.text("phase", false);
  rank->phase_since = reader.number("phase_since", false);
  rank->iteration = reader.integer("iteration", false, -1);
  rank->device_used = reader.bytes("device_used", false);
  rank->device_total = reader.bytes("device_total", false);
  rank->tracked = reader.bytes("tracked", false);
  rank->cached = reader.bytes("cached", false);
  rank->last_enter_seconds = reader.number("last_enter_seconds", false, -1);
  rank->last_exit_seconds = reader.number("last_exit_seconds", false, -1);
  rank->last_enter_network_bytes = reader.bytes("last_enter_network_bytes", false);
  rank->check_failures = reader.integer("check_failures", false);
  rank->down_reason = reader.text("down_reason", false);
  const QJsonArray buffers = reader.array("buffers", false);
  const QString buffers_path = reader.path("buffers");
  rank->buffers.reserve(buffers.size());
  for (int index = 0; index < buffers.size() && error->isEmpty(); ++index) {
    BufferState buffer;
    const QString element_path = QStringLiteral("%1[%2]").arg(buffers_path).arg(index);
    parse_buffer(element_object(buffers, index, buffers_path, error), element_path, error, &buffer);
    rank->buffers.push_back(std::move(buffer));
  }
}

}  // namespace

bool parse_job_info(const QJsonObject& object, JobInfo* info, QString* error) {
  QString problem;
  FieldReader reader(object, QStringLiteral("job"), &problem);
  JobInfo parsed;
  parsed.known = true;
  parsed.world_size = reader.integer("world_size", true);
  if (problem.isEmpty() && (parsed.world_size < 1 || parsed.world_size > service::kMaxWorldSize)) {
    problem = QStringLiteral("job.world_size: %1 is out of range (1 to %2)")
                  .arg(parsed.world_size)
                  .arg(service::kMaxWorldSize);
  }
  const QJsonObject model = reader.object("model", false);
  FieldReader model_reader(model, QStringLiteral("job.model"), &problem);
  parsed.architecture = model_reader.text("architecture", false);
  parsed.num_hidden_layers = model_reader.integer("num_hidden_layers", false);
  parsed.hidden_size = model_reader.integer("hidden_size", false);
  parsed.model_dtype = model_reader.text("dtype", false);
  const QJsonObject train = reader.object("train", false);
  FieldReader train_reader(train, QStringLiteral("job.train"), &problem);
  parsed.train_tp = std::max(1, train_reader.integer("tp", false, 1));
  parsed.train_pp = std::max(1, train_reader.integer("pp", false, 1));
  parsed.train_vpp = std::max(1, train_reader.integer("vpp", false, 1));
  parsed.train_dp = std::max(1, train_reader.integer("dp", false, 1));
  const QJsonObject rollout = reader.object("rollout", false);
  FieldReader rollout_reader(rollout, QStringLiteral("job.rollout"), &problem);
  parsed.rollout_tp = std::max(1, rollout_reader.integer("tp", false, 1));
  parsed.rollout_dp = std::max(1, rollout_reader.integer("dp", false, 1));
  parsed.backend = reader.text("backend", false);
  parsed.strategy = reader.text("strategy", false);
  parsed.iterations = reader.integer("iterations", false);
  parsed.job_file = reader.text("job_file", false);
  if (!problem.isEmpty()) {
    *error = problem;
    return false;
  }
  *info = parsed;
  return true;
}

StatusParseResult parse_status(const QByteArray& body) {
  StatusParseResult result;
  QJsonParseError json_error;
  const QJsonDocument document = QJsonDocument::fromJson(body, &json_error);
  if (json_error.error != QJsonParseError::NoError) {
    result.error =
        QStringLiteral("status: not JSON at byte %1: %2").arg(json_error.offset).arg(json_error.errorString());
    return result;
  }
  if (!document.isObject()) {
    result.error = QStringLiteral("status: expected a JSON object at the top level");
    return result;
  }
  const QJsonObject root = document.object();
  QString error;
  FieldReader reader(root, QString(), &error);
  JobSnapshot& snapshot = result.snapshot;
  const QJsonObject job = reader.object("job", false);
  if (!job.isEmpty() && error.isEmpty()) parse_job_info(job, &snapshot.job, &error);
  result.has_job = root.contains(QLatin1String("job"));
  result.cursor = reader.text("cursor", false);
  result.incremental = root.contains(QLatin1String("since"));
  const QJsonObject kept = reader.object("kept", false);
  FieldReader kept_reader(kept, QStringLiteral("kept"), &error);
  result.limits.memory_per_rank = kept_reader.integer("memory_per_rank", false, result.limits.memory_per_rank);
  result.limits.phases_per_rank = kept_reader.integer("phases_per_rank", false, result.limits.phases_per_rank);
  result.limits.history_buckets = kept_reader.integer("history_buckets", false, result.limits.history_buckets);
  snapshot.state = reader.text("state", true);
  snapshot.message = reader.text("message", false);
  snapshot.time = reader.number("time", true);
  snapshot.started = reader.number("started", false);
  snapshot.iteration = reader.integer("iteration", false, -1);

  const QJsonArray ranks = reader.array("ranks", true);
  for (int index = 0; index < ranks.size() && error.isEmpty(); ++index) {
    RankState rank;
    const QJsonObject rank_object = element_object(ranks, index, QStringLiteral("ranks"), &error);
    parse_rank(rank_object, QStringLiteral("ranks[%1]").arg(index), &error, &rank);
    if (!rank_object.contains(QLatin1String("buffers"))) result.ranks_without_buffers.insert(rank.rank);
    snapshot.ranks.push_back(std::move(rank));
  }
  std::sort(snapshot.ranks.begin(), snapshot.ranks.end(),
            [](const RankState& a, const RankState& b) { return a.rank < b.rank; });

  const QJsonArray memory = reader.array("memory", false);
  for (int index = 0; index < memory.size() && error.isEmpty(); ++index) {
    const QString path = QStringLiteral("memory[%1]").arg(index);
    const QJsonObject object = element_object(memory, index, QStringLiteral("memory"), &error);
    MemorySample sample = parse_sample(object, path, &error);
    sample.rank = FieldReader(object, path, &error).integer("rank", true);
    result.series.memory.push_back(std::move(sample));
  }

  const QJsonArray phases = reader.array("phases", false);
  for (int index = 0; index < phases.size() && error.isEmpty(); ++index) {
    const QString path = QStringLiteral("phases[%1]").arg(index);
    FieldReader phase_reader(element_object(phases, index, QStringLiteral("phases"), &error), path, &error);
    PhaseInterval phase;
    phase.rank = phase_reader.integer("rank", true);
    phase.iteration = phase_reader.integer("iteration", false, -1);
    phase.phase = phase_reader.text("phase", true);
    phase.begin = phase_reader.number("begin", true);
    phase.end = phase_reader.number("end", false, -1);
    result.series.phases.push_back(std::move(phase));
  }

  const QJsonArray history = reader.array("history", false);
  for (int index = 0; index < history.size() && error.isEmpty(); ++index) {
    result.series.history.push_back(
        parse_rank_history(element_object(history, index, QStringLiteral("history"), &error),
                           QStringLiteral("history[%1]").arg(index), &error));
  }

  if (!error.isEmpty()) {
    result.error = QStringLiteral("status: ") + error;
    result.snapshot = JobSnapshot();
    return result;
  }
  JobHistory series(result.limits);
  series.apply(result.series);
  series.compose(&snapshot.memory, &snapshot.phases);
  result.ok = true;
  return result;
}

}  // namespace hybridshard::gui
