#include "hybridshard/service/observe/job_state.h"

#include <algorithm>

#include "hybridshard/core/error.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {
namespace {

using nlohmann::json;

constexpr std::array kBufferKinds = {
    core::BufferKind::kParams,         core::BufferKind::kGrads,           core::BufferKind::kMasterParams,
    core::BufferKind::kOptimizerState, core::BufferKind::kInferenceParams, core::BufferKind::kKvCache,
    core::BufferKind::kStaging,
};

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
  for (core::BufferKind kind : kBufferKinds) by_kind[std::string(core::buffer_kind_name(kind))] = 0;
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

JobState::JobState(JobStateLimits limits) : limits_(limits) {}

RankState& JobState::rank_locked(int index) {
  auto [it, inserted] = fold_.ranks.try_emplace(index);
  RankState& rank = it->second;
  if (inserted) {
    rank.rank = index;
    for (const char* name : kStandardPhases) count_phase_name(rank, name, limits_.phase_names_per_rank);
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
  switch (event.type) {
    case JobEventType::kJob:
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
  switch (engine.type) {
    case core::EventType::kBufferCreated: {
      BufferState& buffer = buffer_named(rank, engine.buffer);
      buffer.kind = engine.kind;
      buffer.dtype = engine.dtype;
      buffer.bytes = engine.bytes;
      buffer.residency = core::Residency::kNone;
      buffer.since = time;
      buffer.shape = engine.shape;
      break;
    }
    case core::EventType::kResidency: {
      BufferState& buffer = buffer_named(rank, engine.buffer);
      buffer.kind = engine.kind;
      buffer.dtype = engine.dtype;
      buffer.bytes = engine.bytes;
      buffer.residency = engine.to;
      buffer.since = time;
      break;
    }
    case core::EventType::kBufferDestroyed:
      std::erase_if(rank.buffers, [&](const BufferState& buffer) { return buffer.name == engine.buffer; });
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
      count_phase_name(rank, engine.phase, limits_.phase_names_per_rank);
      if (engine.phase == "enter") {
        rank.in_enter = true;
        rank.enter_network_bytes = 0;
      }
      rank.phases.push_back(PhaseInterval{engine.iteration, engine.phase, time, -1});
      break;
    case core::EventType::kPhaseEnd: {
      if (engine.phase == "enter") {
        rank.in_enter = false;
        rank.last_enter_seconds = engine.seconds;
        rank.last_enter_network_bytes = rank.enter_network_bytes;
      } else if (engine.phase == "exit") {
        rank.last_exit_seconds = engine.seconds;
      }
      if (count_phase_name(rank, engine.phase, limits_.phase_names_per_rank)) {
        observe_duration(rank.durations[engine.phase], engine.seconds);
      }
      auto open = std::find_if(rank.phases.rbegin(), rank.phases.rend(), [&](const PhaseInterval& phase) {
        return phase.phase == engine.phase && phase.end < 0;
      });
      if (open != rank.phases.rend()) {
        open->end = time;
      } else {
        rank.phases.push_back(PhaseInterval{engine.iteration, engine.phase, time - engine.seconds, time});
      }
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
      rank.memory.push_back(MemorySampleState{time, engine.device_used, engine.device_total, engine.tracked,
                                              event.by_kind ? *event.by_kind : by_kind_of(rank)});
      break;
    case core::EventType::kCheck:
      if (!engine.ok) ++rank.check_failures;
      rank.last_check = CheckState{engine.operation, engine.ok, engine.detail, time};
      break;
  }
  while (rank.memory.size() > limits_.memory_samples_per_rank) rank.memory.pop_front();
  while (rank.phases.size() > limits_.phases_per_rank) rank.phases.pop_front();
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

json status_json(const JobFold& fold) {
  json ranks = json::array();
  json memory = json::array();
  json phases = json::array();
  int iteration = -1;
  for (const auto& [index, rank] : fold.ranks) {
    iteration = std::max(iteration, rank.iteration);
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
    json last_check = nullptr;
    if (rank.last_check) {
      last_check = {{"name", rank.last_check->name},
                    {"ok", rank.last_check->ok},
                    {"detail", rank.last_check->detail},
                    {"time", rank.last_check->time}};
    }
    ranks.push_back({{"rank", rank.rank},
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
                     {"last_enter_seconds", rank.last_enter_seconds},
                     {"last_exit_seconds", rank.last_exit_seconds},
                     {"last_enter_network_bytes", rank.last_enter_network_bytes},
                     {"check_failures", rank.check_failures},
                     {"last_check", std::move(last_check)},
                     {"buffers", std::move(buffers)}});
    for (const MemorySampleState& sample : rank.memory) {
      memory.push_back({{"time", sample.time},
                        {"rank", rank.rank},
                        {"device_used", sample.device_used},
                        {"device_total", sample.device_total},
                        {"tracked", sample.tracked},
                        {"by_kind", sample.by_kind}});
    }
    for (const PhaseInterval& phase : rank.phases) {
      phases.push_back({{"rank", rank.rank},
                        {"iteration", phase.iteration},
                        {"phase", phase.phase},
                        {"begin", phase.begin},
                        {"end", phase.end < 0 ? json(nullptr) : json(phase.end)}});
    }
  }
  std::stable_sort(memory.begin(), memory.end(),
                   [](const json& a, const json& b) { return a["time"].get<double>() < b["time"].get<double>(); });
  std::stable_sort(phases.begin(), phases.end(),
                   [](const json& a, const json& b) { return a["begin"].get<double>() < b["begin"].get<double>(); });
  return {{"job", fold.description.is_null() ? json::object() : fold.description},
          {"state", fold.state},
          {"message", fold.message},
          {"time", fold.time},
          {"started", fold.started},
          {"iteration", iteration},
          {"ranks", std::move(ranks)},
          {"memory", std::move(memory)},
          {"phases", std::move(phases)}};
}

}  // namespace hybridshard::service
