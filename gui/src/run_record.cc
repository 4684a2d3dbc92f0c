#include "run_record.h"

#include <QFile>
#include <QJsonDocument>
#include <QJsonParseError>
#include <algorithm>
#include <cmath>
#include <limits>

#include "hybridshard/service/events/limits.h"
#include "status_json.h"

namespace hybridshard::gui {

bool RunRecord::load(const QString& path, QString* error) {
  QFile file(path);
  if (!file.open(QIODevice::ReadOnly)) {
    *error = QStringLiteral("%1: cannot open: %2").arg(path, file.errorString());
    return false;
  }
  return load_from_data(file.readAll(), path, error);
}

bool RunRecord::load_from_data(const QByteArray& data, const QString& name, QString* error) {
  QVector<RecordEvent> events;
  const QList<QByteArray> lines = data.split('\n');
  const bool ends_with_newline = data.endsWith('\n');
  for (int index = 0; index < lines.size(); ++index) {
    const QByteArray line = lines[index].trimmed();
    if (line.isEmpty()) continue;
    const bool last_line = index == lines.size() - 1;
    const int line_number = index + 1;
    QJsonParseError json_error;
    const QJsonDocument document = QJsonDocument::fromJson(line, &json_error);
    if (json_error.error != QJsonParseError::NoError || !document.isObject()) {
      if (last_line && !ends_with_newline) break;  // still being written
      *error = QStringLiteral("%1:%2: not a JSON object: %3")
                   .arg(name)
                   .arg(line_number)
                   .arg(json_error.error != QJsonParseError::NoError ? json_error.errorString()
                                                                     : QStringLiteral("another JSON value"));
      return false;
    }
    const QJsonObject object = document.object();
    RecordEvent event;
    event.type = object.value(QLatin1String("type")).toString();
    const QJsonValue time = object.value(QLatin1String("time"));
    if (event.type.isEmpty()) {
      *error = QStringLiteral("%1:%2: type: missing or not a string").arg(name).arg(line_number);
      return false;
    }
    if (!time.isDouble() || !std::isfinite(time.toDouble())) {
      *error = QStringLiteral("%1:%2: time: missing or not a number").arg(name).arg(line_number);
      return false;
    }
    event.time = time.toDouble();
    event.rank = object.value(QLatin1String("rank")).toInt(-1);
    event.iteration = object.value(QLatin1String("iteration")).toInt(-1);
    event.fields = object;
    events.push_back(std::move(event));
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const RecordEvent& a, const RecordEvent& b) { return a.time < b.time; });
  events_ = std::move(events);
  return true;
}

void RecordPlayer::reset() {
  snapshot_ = JobSnapshot();
  snapshot_.state = QStringLiteral("starting");
  history_ = JobHistory(limits_);
  series_changed_ = false;
  next_event_ = 0;
  enter_network_bytes_.clear();
  in_enter_.clear();
  positioned_ = false;
}

const JobSnapshot& RecordPlayer::seek(double time) {
  if (!positioned_ || time < position_) reset();
  const QVector<RecordEvent>& events = record_->events();
  while (next_event_ < events.size() && events[next_event_].time <= time) {
    apply(events[next_event_]);
    ++next_event_;
  }
  if (series_changed_) history_.compose(&snapshot_.memory, &snapshot_.phases);
  series_changed_ = false;
  position_ = time;
  positioned_ = true;
  snapshot_.time = time;
  return snapshot_;
}

RankState& RecordPlayer::rank_state(int rank) {
  auto it = std::lower_bound(snapshot_.ranks.begin(), snapshot_.ranks.end(), rank,
                             [](const RankState& state, int value) { return state.rank < value; });
  if (it == snapshot_.ranks.end() || it->rank != rank) {
    RankState state;
    state.rank = rank;
    state.up = false;  // up from its rank_up to its rank_down (the fold's rule)
    it = snapshot_.ranks.insert(it, state);
  }
  return *it;
}

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

std::int64_t bytes_field(const QJsonObject& fields, const char* key) {
  return saturate<std::int64_t>(fields.value(QLatin1String(key)).toDouble());
}

QString text_field(const QJsonObject& fields, const char* key) { return fields.value(QLatin1String(key)).toString(); }

}  // namespace

// The rules of the service's fold (service/src/observe/job_state.cc), event by event; tests/gui/tst_foldcontract.cpp
// replays one record through both and compares. The one difference on purpose: last_enter_seconds and
// last_exit_seconds stay -1 here until the first enter or exit ends (the status document says 0).
void RecordPlayer::apply(const RecordEvent& event) {
  const QJsonObject& fields = event.fields;
  const QString& type = event.type;
  if (type == QLatin1String("job")) {
    QString ignored;
    parse_job_info(fields, &snapshot_.job, &ignored);
    snapshot_.started = event.time;
    for (int rank = 0; rank < snapshot_.job.world_size; ++rank) rank_state(rank);
    return;
  }
  if (type == QLatin1String("job_end")) {
    const bool ok = fields.value(QLatin1String("ok")).toBool(true);
    snapshot_.state = ok ? QStringLiteral("finished") : QStringLiteral("failed");
    snapshot_.message = text_field(fields, "message");
    return;
  }
  // A rank event without a rank, or with one no job can have: nothing to attach it to.
  if (event.rank < 0 || event.rank >= service::kMaxWorldSize) return;
  if (snapshot_.started == 0) snapshot_.started = event.time;
  RankState& rank = rank_state(event.rank);
  rank.iteration = std::max(rank.iteration, event.iteration);
  snapshot_.iteration = std::max(snapshot_.iteration, event.iteration);

  if (type == QLatin1String("rank_up")) {
    rank.up = true;
    rank.host = text_field(fields, "host");
    rank.pid = saturate<qint64>(fields.value(QLatin1String("pid")).toDouble());
    rank.device = text_field(fields, "device");
    rank.down_reason.clear();
  } else if (type == QLatin1String("rank_down")) {
    rank.up = false;
    rank.host = text_field(fields, "host");
    rank.down_reason = text_field(fields, "reason");
  } else if (type == QLatin1String("buffer_created") || type == QLatin1String("residency")) {
    const QString name = text_field(fields, "buffer");
    BufferState* buffer = nullptr;
    for (BufferState& candidate : rank.buffers) {
      if (candidate.name == name) buffer = &candidate;
    }
    if (buffer == nullptr) {
      rank.buffers.push_back(BufferState{});
      buffer = &rank.buffers.back();
      buffer->name = name;
    }
    buffer->kind = text_field(fields, "kind");
    buffer->dtype = text_field(fields, "dtype");
    buffer->bytes = bytes_field(fields, "bytes");
    if (type == QLatin1String("buffer_created")) buffer->shape = text_field(fields, "shape");
    Residency to = Residency::kNone;
    if (type == QLatin1String("residency")) parse_residency(text_field(fields, "to"), &to);
    buffer->residency = to;
    buffer->since = event.time;
  } else if (type == QLatin1String("buffer_destroyed")) {
    const QString name = text_field(fields, "buffer");
    rank.buffers.erase(std::remove_if(rank.buffers.begin(), rank.buffers.end(),
                                      [&](const BufferState& buffer) { return buffer.name == name; }),
                       rank.buffers.end());
  } else if (type == QLatin1String("transfer")) {
    if (text_field(fields, "path") == QLatin1String("network") && in_enter_.value(event.rank)) {
      enter_network_bytes_[event.rank] += bytes_field(fields, "bytes");
    }
  } else if (type == QLatin1String("phase_begin")) {
    if (snapshot_.state == QLatin1String("starting")) snapshot_.state = QStringLiteral("running");
    rank.phase = text_field(fields, "phase");
    rank.phase_since = event.time;
    if (rank.phase == QLatin1String("enter")) {
      in_enter_[event.rank] = true;
      enter_network_bytes_[event.rank] = 0;
    }
    history_.begin_phase(event.rank, event.iteration, rank.phase, event.time);
    series_changed_ = true;
  } else if (type == QLatin1String("phase_end")) {
    const QString phase = text_field(fields, "phase");
    const double seconds = fields.value(QLatin1String("seconds")).toDouble(0);
    if (phase == QLatin1String("enter")) {
      in_enter_[event.rank] = false;
      rank.last_enter_seconds = seconds;
      rank.last_enter_network_bytes = enter_network_bytes_.value(event.rank);
    } else if (phase == QLatin1String("exit")) {
      rank.last_exit_seconds = seconds;
    }
    history_.end_phase(event.rank, event.iteration, phase, event.time, seconds);
    series_changed_ = true;
    if (rank.phase == phase) {
      rank.phase.clear();
      rank.phase_since = event.time;
    }
  } else if (type == QLatin1String("memory")) {
    MemorySample sample;
    sample.time = event.time;
    sample.rank = event.rank;
    sample.device_used = bytes_field(fields, "device_used");
    sample.device_total = bytes_field(fields, "device_total");
    sample.tracked = bytes_field(fields, "tracked");
    sample.cached = bytes_field(fields, "cached");
    const QJsonObject by_kind = fields.value(QLatin1String("by_kind")).toObject();
    for (auto it = by_kind.begin(); it != by_kind.end(); ++it) {
      sample.by_kind.insert(it.key(), saturate<std::int64_t>(it.value().toDouble()));
    }
    rank.device_used = sample.device_used;
    rank.device_total = sample.device_total;
    rank.tracked = sample.tracked;
    rank.cached = sample.cached;
    history_.add_sample(sample);
    series_changed_ = true;
  } else if (type == QLatin1String("check")) {
    if (!fields.value(QLatin1String("ok")).toBool(true)) ++rank.check_failures;
  }
}

JobSnapshot snapshot_at(const RunRecord& record, double time) {
  RecordPlayer player(&record);
  return player.seek(time);
}

}  // namespace hybridshard::gui
