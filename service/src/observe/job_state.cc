#include "hybridshard/service/observe/job_state.h"

#include <algorithm>
#include <charconv>
#include <random>

#include "hybridshard/core/error.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {
namespace {

using nlohmann::json;

// Phase rounds kept while waiting for the slowest rank; older ones are dropped (a rank that never ends a phase).
constexpr std::size_t kMaxOpenRounds = 64;

BufferState& buffer_named(RankState& rank, const std::string& name) {
  for (BufferState& buffer : rank.buffers) {
    if (buffer.name == name) return buffer;
  }
  rank.buffers.push_back(BufferState{});
  rank.buffers.back().name = name;
  return rank.buffers.back();
}

BytesByKind by_kind_of(const RankState& rank) {
  BytesByKind by_kind;
  for (core::BufferKind kind : core::kBufferKinds) by_kind[std::string(core::buffer_kind_name(kind))] = 0;
  for (const BufferState& buffer : rank.buffers) {
    if (buffer.residency == core::Residency::kGpu)
      by_kind[std::string(core::buffer_kind_name(buffer.kind))] += buffer.bytes;
  }
  return by_kind;
}

// Counts `name` among the rank's phases unless the rank has too many already; false when it is not counted.
bool count_phase_name(RankState& rank, const std::string& name, std::size_t limit) {
  if (std::find(rank.phase_names.begin(), rank.phase_names.end(), name) != rank.phase_names.end()) return true;
  if (rank.phase_names.size() >= limit) return false;
  rank.phase_names.push_back(name);
  return true;
}

void observe_duration(PhaseDurations& durations, double seconds) {
  const std::vector<double>& bounds = phase_duration_buckets();
  if (durations.buckets.empty()) durations.buckets.assign(bounds.size(), 0);
  const auto bucket = std::lower_bound(bounds.begin(), bounds.end(), seconds);
  if (bucket != bounds.end()) ++durations.buckets[static_cast<std::size_t>(bucket - bounds.begin())];
  ++durations.count;
  durations.sum += seconds;
}

}  // namespace

const std::vector<double>& phase_duration_buckets() {
  static const std::vector<double> buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,      2.5,   5,    10,    20,   30,  60};
  return buckets;
}

void MemoryBucket::add(const MemorySampleState& sample) {
  const auto less = [](const MemorySampleState& a, const MemorySampleState& b) {
    return a.device_used != b.device_used ? a.device_used < b.device_used : a.tracked < b.tracked;
  };
  if (low.sequence == 0 || less(sample, low)) low = sample;
  if (high.sequence == 0 || less(high, sample)) high = sample;
}

void MemoryBucket::merge(const MemoryBucket& later) {
  add(later.low);
  add(later.high);
  changed = std::max(changed, later.changed);
}

void PhaseBucket::merge(const PhaseBucket& later) {
  for (const auto& [name, spent] : later.seconds) seconds[name] += spent;
  iteration = std::max(iteration, later.iteration);
  changed = std::max(changed, later.changed);
}

namespace {

// Every bucket of a history that just widened has a new index: all count as changed.
template <typename Bucket>
void mark_all_changed(BucketedHistory<Bucket>& history, std::uint64_t sequence) {
  for (auto& [index, bucket] : history.buckets()) bucket.changed = sequence;
}

void add_to_history(BucketedHistory<MemoryBucket>& history, const MemorySampleState& sample) {
  if (history.cover(sample.time, sample.time)) mark_all_changed(history, sample.sequence);
  MemoryBucket& bucket = history.at(history.index_of(sample.time));
  bucket.add(sample);
  bucket.changed = sample.sequence;
}

// Spreads an ended interval over the buckets it overlaps, by the seconds it spent in each.
void add_to_history(BucketedHistory<PhaseBucket>& history, const PhaseInterval& interval) {
  const bool widened =
      history.spread(std::min(interval.begin, interval.end), interval.end, [&](PhaseBucket& bucket, double seconds) {
        bucket.seconds[interval.phase] += seconds;
        bucket.iteration = std::max(bucket.iteration, interval.iteration);
        bucket.changed = interval.changed;
      });
  if (widened) mark_all_changed(history, interval.changed);
}

std::uint64_t random_epoch() {
  std::random_device device;
  const std::uint64_t epoch = (static_cast<std::uint64_t>(device()) << 32) | device();
  return epoch == 0 ? 1 : epoch;
}

}  // namespace

std::int64_t untracked_bytes(std::int64_t device_used, std::int64_t tracked, std::int64_t cached) {
  return device_used - tracked - cached;
}

JobState::JobState(JobStateLimits limits) {
  fold_.limits = limits;
  fold_.epoch = random_epoch();
}

RankState& JobState::rank_locked(int index) {
  auto [it, inserted] = fold_.ranks.try_emplace(index);
  RankState& rank = it->second;
  if (inserted) {
    rank.rank = index;
    rank.changed = fold_.sequence;
    rank.memory_history = BucketedHistory<MemoryBucket>(fold_.limits.history_buckets);
    rank.phase_history = BucketedHistory<PhaseBucket>(fold_.limits.history_buckets);
    for (const char* name : kStandardPhases) count_phase_name(rank, name, fold_.limits.phase_names_per_rank);
  }
  return rank;
}

void JobState::apply(const json& event) { apply(decode_event(event)); }

void JobState::apply(const core::Event& event) { apply(engine_event(event)); }

std::optional<PhaseRound> JobState::apply(const JobEvent& event) {
  if (event.type == JobEventType::kHeartbeat) return std::nullopt;
  std::lock_guard<std::mutex> lock(mutex_);
  if (event.has_rank()) {
    const int limit = fold_.world_size > 0 ? fold_.world_size : kMaxWorldSize;
    if (event.rank() < 0 || event.rank() >= limit) {
      HS_THROW(core::Error,
               "event of rank " + std::to_string(event.rank()) + " in a job of " + std::to_string(limit) + " ranks");
    }
  }
  fold_.time = std::max(fold_.time, event.time());
  const std::uint64_t sequence = ++fold_.sequence;
  switch (event.type) {
    case JobEventType::kJob:
      fold_.job_changed = sequence;
      fold_.description = event.description;
      fold_.world_size = event.world_size;
      fold_.started = event.time();
      for (int rank = 0; rank < event.world_size; ++rank) rank_locked(rank);
      return std::nullopt;
    case JobEventType::kJobEnd:
      fold_.state = event.ok ? "finished" : "failed";
      fold_.message = event.message;
      return std::nullopt;
    default:
      break;
  }
  if (fold_.started == 0) fold_.started = event.time();
  RankState& rank = rank_locked(event.rank());
  rank.changed = sequence;
  rank.last_event_time = event.time();
  rank.iteration = std::max(rank.iteration, event.iteration());  // never back: a late sample may carry the previous one
  if (event.type == JobEventType::kRankUp) {
    rank.up = true;
    rank.down = false;
    rank.host = event.host;
    rank.pid = event.pid;
    rank.device = event.device;
    rank.down_reason.clear();
    return std::nullopt;
  }
  if (event.type == JobEventType::kRankDown) {
    rank.up = false;
    rank.down = true;
    rank.host = event.host;
    rank.down_reason = event.reason;
    return std::nullopt;
  }
  apply_rank_event(rank, event);
  if (event.engine.type == core::EventType::kPhaseEnd) return complete_round(rank, event.engine);
  return std::nullopt;
}

void JobState::apply_rank_event(RankState& rank, const JobEvent& event) {
  const core::Event& engine = event.engine;
  const double time = engine.time;
  const std::uint64_t sequence = fold_.sequence;
  switch (engine.type) {
    case core::EventType::kBufferCreated: {
      BufferState& buffer = buffer_named(rank, engine.buffer);
      buffer.kind = engine.kind;
      buffer.dtype = engine.dtype;
      buffer.bytes = engine.bytes;
      buffer.residency = core::Residency::kNone;
      buffer.since = time;
      buffer.shape = engine.shape;
      rank.buffers_changed = sequence;
      break;
    }
    case core::EventType::kResidency: {
      BufferState& buffer = buffer_named(rank, engine.buffer);
      buffer.kind = engine.kind;
      buffer.dtype = engine.dtype;
      buffer.bytes = engine.bytes;
      buffer.residency = engine.to;
      buffer.since = time;
      rank.buffers_changed = sequence;
      break;
    }
    case core::EventType::kBufferDestroyed:
      std::erase_if(rank.buffers, [&](const BufferState& buffer) { return buffer.name == engine.buffer; });
      rank.buffers_changed = sequence;
      break;
    case core::EventType::kTransfer:
      rank.moved_bytes[static_cast<std::size_t>(engine.path)] += engine.bytes;
      if (rank.in_enter && engine.path == core::TransferPath::kNetwork) rank.enter_network_bytes += engine.bytes;
      break;
    case core::EventType::kPhaseBegin:
      if (fold_.state == "starting") fold_.state = "running";
      rank.phase = engine.phase;
      rank.last_phase = engine.phase;
      rank.phase_since = time;
      count_phase_name(rank, engine.phase, fold_.limits.phase_names_per_rank);
      if (engine.phase == "enter") {
        rank.in_enter = true;
        rank.enter_network_bytes = 0;
      }
      rank.phases.push_back(PhaseInterval{engine.iteration, engine.phase, time, -1, sequence});
      break;
    case core::EventType::kPhaseEnd: {
      if (engine.phase == "enter") {
        rank.in_enter = false;
        rank.last_enter_seconds = engine.seconds;
        rank.last_enter_network_bytes = rank.enter_network_bytes;
      } else if (engine.phase == "exit") {
        rank.last_exit_seconds = engine.seconds;
      }
      const bool counted = count_phase_name(rank, engine.phase, fold_.limits.phase_names_per_rank);
      if (counted) observe_duration(rank.durations[engine.phase], engine.seconds);
      auto open = std::find_if(rank.phases.rbegin(), rank.phases.rend(), [&](const PhaseInterval& phase) {
        return phase.phase == engine.phase && phase.end < 0;
      });
      if (open != rank.phases.rend()) {
        open->end = time;
        open->changed = sequence;
      } else {
        rank.phases.push_back(PhaseInterval{engine.iteration, engine.phase, time - engine.seconds, time, sequence});
        open = rank.phases.rbegin();
      }
      // Phases beyond the counted names stay out of the history too (a misbehaving rank cannot grow it).
      if (counted) add_to_history(rank.phase_history, *open);
      if (rank.phase == engine.phase) {
        rank.phase.clear();
        rank.phase_since = time;
      }
      break;
    }
    case core::EventType::kMemorySample:
      rank.device_used = engine.device_used;
      rank.device_total = engine.device_total;
      rank.tracked = engine.tracked;
      rank.cached = engine.cached;
      rank.cached_host = engine.cached_host;
      rank.memory.push_back(MemorySampleState{time, engine.device_used, engine.device_total, engine.tracked,
                                              engine.cached, engine.cached_host,
                                              event.by_kind ? *event.by_kind : by_kind_of(rank), sequence});
      add_to_history(rank.memory_history, rank.memory.back());
      break;
    case core::EventType::kCheck:
      if (!engine.ok) ++rank.check_failures;
      rank.last_check = CheckState{engine.operation, engine.ok, engine.detail, time};
      break;
  }
  while (rank.memory.size() > fold_.limits.memory_samples_per_rank) rank.memory.pop_front();
  while (rank.phases.size() > fold_.limits.phases_per_rank) rank.phases.pop_front();
}

std::optional<PhaseRound> JobState::complete_round(const RankState& rank, const core::Event& end) {
  if (fold_.world_size <= 0) return std::nullopt;
  const auto key = std::make_pair(end.iteration, end.phase);
  RoundProgress& progress = rounds_[key];
  progress.ranks_done += 1;
  progress.max_seconds = std::max(progress.max_seconds, end.seconds);
  if (end.phase == "enter") progress.network_bytes += rank.last_enter_network_bytes;
  if (progress.ranks_done < fold_.world_size) {
    while (rounds_.size() > kMaxOpenRounds) rounds_.erase(rounds_.begin());
    return std::nullopt;
  }
  PhaseRound round{end.iteration, end.phase, progress.max_seconds, progress.network_bytes, 0, 0};
  rounds_.erase(key);
  for (const auto& [index, other] : fold_.ranks) {
    round.max_device_used = std::max(round.max_device_used, other.device_used);
    round.max_device_total = std::max(round.max_device_total, other.device_total);
  }
  return round;
}

void JobState::read(const std::function<void(const JobFold&)>& reader) const {
  std::lock_guard<std::mutex> lock(mutex_);
  reader(fold_);
}

json JobState::status_json() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return service::status_json(fold_);
}

BytesByKind JobState::gpu_bytes_by_kind(int rank) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = fold_.ranks.find(rank);
  return by_kind_of(it == fold_.ranks.end() ? RankState{} : it->second);
}

std::string JobState::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fold_.state;
}

namespace {

json sample_fields(const MemorySampleState& sample) {
  return {{"time", sample.time},       {"device_used", sample.device_used}, {"device_total", sample.device_total},
          {"tracked", sample.tracked}, {"cached", sample.cached},           {"cached_host", sample.cached_host},
          {"by_kind", sample.by_kind}};
}

json rank_json(const RankState& rank, bool with_buffers) {
  json last_check = nullptr;
  if (rank.last_check) {
    last_check = {{"name", rank.last_check->name},
                  {"ok", rank.last_check->ok},
                  {"detail", rank.last_check->detail},
                  {"time", rank.last_check->time}};
  }
  json entry = {{"rank", rank.rank},
                {"host", rank.host},
                {"pid", rank.pid},
                {"up", rank.up},
                {"device", rank.device},
                {"down_reason", rank.down_reason},
                {"phase", rank.phase},
                {"phase_since", rank.phase_since},
                {"iteration", rank.iteration},
                {"device_used", rank.device_used},
                {"device_total", rank.device_total},
                {"tracked", rank.tracked},
                {"cached", rank.cached},
                {"cached_host", rank.cached_host},
                {"untracked", untracked_bytes(rank.device_used, rank.tracked, rank.cached)},
                {"last_enter_seconds", rank.last_enter_seconds},
                {"last_exit_seconds", rank.last_exit_seconds},
                {"last_enter_network_bytes", rank.last_enter_network_bytes},
                {"check_failures", rank.check_failures},
                {"last_check", std::move(last_check)}};
  if (!with_buffers) return entry;
  json buffers = json::array();
  for (const BufferState& buffer : rank.buffers) {
    buffers.push_back({{"name", buffer.name},
                       {"kind", std::string(core::buffer_kind_name(buffer.kind))},
                       {"dtype", std::string(core::dtype_name(buffer.dtype))},
                       {"bytes", buffer.bytes},
                       {"residency", std::string(core::residency_name(buffer.residency))},
                       {"since", buffer.since},
                       {"shape", buffer.shape}});
  }
  entry["buffers"] = std::move(buffers);
  return entry;
}

// The rank's history buckets changed after `since`; null when none did.
json history_json(const RankState& rank, std::uint64_t since) {
  json memory = json::array();
  for (const auto& [index, bucket] : rank.memory_history.buckets()) {
    if (bucket.changed <= since) continue;
    json entry = {{"bucket", index}, {"high", sample_fields(bucket.high)}};
    if (bucket.low.sequence != bucket.high.sequence) entry["low"] = sample_fields(bucket.low);
    memory.push_back(std::move(entry));
  }
  json phases = json::array();
  for (const auto& [index, bucket] : rank.phase_history.buckets()) {
    if (bucket.changed <= since) continue;
    phases.push_back({{"bucket", index}, {"iteration", bucket.iteration}, {"seconds", bucket.seconds}});
  }
  if (memory.empty() && phases.empty()) return nullptr;
  // Both histories of a rank widen together in practice, but each has its own width.
  return {{"rank", rank.rank},
          {"memory_bucket_seconds", rank.memory_history.width()},
          {"phase_bucket_seconds", rank.phase_history.width()},
          {"memory", std::move(memory)},
          {"phases", std::move(phases)}};
}

}  // namespace

std::string status_cursor(const JobFold& fold) {
  return std::to_string(fold.epoch) + "-" + std::to_string(fold.sequence);
}

bool parse_status_cursor(const std::string& cursor, std::uint64_t* epoch, std::uint64_t* sequence) {
  const std::size_t dash = cursor.find('-');
  if (dash == std::string::npos) return false;
  const char* begin = cursor.data();
  const char* end = cursor.data() + cursor.size();
  const auto [epoch_end, epoch_error] = std::from_chars(begin, begin + dash, *epoch);
  if (epoch_error != std::errc() || epoch_end != begin + dash || dash == 0) return false;
  const auto [sequence_end, sequence_error] = std::from_chars(begin + dash + 1, end, *sequence);
  return sequence_error == std::errc() && sequence_end == end && dash + 1 < cursor.size();
}

json JobState::status_json_since(const std::string& cursor) const {
  std::uint64_t epoch = 0;
  std::uint64_t sequence = 0;
  if (!parse_status_cursor(cursor, &epoch, &sequence)) {
    HS_THROW(core::Error, "status: since=" + cursor +
                              ": not a cursor (expected <epoch>-<sequence>, the \"cursor\" of a status document)");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (epoch != fold_.epoch || sequence > fold_.sequence) return service::status_json(fold_);
  return service::status_json(fold_, sequence);
}

json status_json(const JobFold& fold, std::uint64_t since) {
  json ranks = json::array();
  json memory = json::array();
  json phases = json::array();
  json history = json::array();
  int iteration = -1;
  for (const auto& [index, rank] : fold.ranks) {
    iteration = std::max(iteration, rank.iteration);
    if (rank.changed > since) ranks.push_back(rank_json(rank, rank.buffers_changed > since || since == 0));
    for (const MemorySampleState& sample : rank.memory) {
      if (sample.sequence <= since) continue;
      json entry = sample_fields(sample);
      entry["rank"] = rank.rank;
      memory.push_back(std::move(entry));
    }
    for (const PhaseInterval& phase : rank.phases) {
      if (phase.changed <= since) continue;
      phases.push_back({{"rank", rank.rank},
                        {"iteration", phase.iteration},
                        {"phase", phase.phase},
                        {"begin", phase.begin},
                        {"end", phase.end < 0 ? json(nullptr) : json(phase.end)}});
    }
    json rank_history = history_json(rank, since);
    if (!rank_history.is_null()) history.push_back(std::move(rank_history));
  }
  // The whole document lists samples and intervals by time; changes come per rank in the order the fold took them
  // (a reader that appends them and keeps the newest per rank holds what the fold holds).
  if (since == 0) {
    std::stable_sort(memory.begin(), memory.end(),
                     [](const json& a, const json& b) { return a["time"].get<double>() < b["time"].get<double>(); });
    std::stable_sort(phases.begin(), phases.end(),
                     [](const json& a, const json& b) { return a["begin"].get<double>() < b["begin"].get<double>(); });
  }
  json document = {{"cursor", status_cursor(fold)},
                   {"state", fold.state},
                   {"message", fold.message},
                   {"time", fold.time},
                   {"started", fold.started},
                   {"iteration", iteration},
                   {"kept",
                    {{"memory_per_rank", fold.limits.memory_samples_per_rank},
                     {"phases_per_rank", fold.limits.phases_per_rank},
                     {"history_buckets", fold.limits.history_buckets}}},
                   {"ranks", std::move(ranks)},
                   {"memory", std::move(memory)},
                   {"phases", std::move(phases)},
                   {"history", std::move(history)}};
  if (since == 0 || fold.job_changed > since) {
    document["job"] = fold.description.is_null() ? json::object() : fold.description;
  }
  if (since != 0) document["since"] = std::to_string(fold.epoch) + "-" + std::to_string(since);
  return document;
}

}  // namespace hybridshard::service
