#include "hybridshard/service/observe/job_state.h"

#include <algorithm>
#include <array>

#include "hybridshard/core/error.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/service/observe/event_json.h"

namespace hybridshard::service {
namespace {

using nlohmann::json;

constexpr std::array kBufferKinds = {
    core::BufferKind::kParams,         core::BufferKind::kGrads,           core::BufferKind::kMasterParams,
    core::BufferKind::kOptimizerState, core::BufferKind::kInferenceParams, core::BufferKind::kKvCache,
    core::BufferKind::kStaging,
};

}  // namespace

JobState::JobState(JobStateLimits limits) : limits_(limits) {}

JobState::Rank& JobState::rank_locked(int rank) {
  auto [it, inserted] = ranks_.try_emplace(rank);
  if (inserted) it->second.rank = rank;
  return it->second;
}

JobState::Buffer& JobState::buffer_locked(Rank& rank, const std::string& name) {
  for (Buffer& buffer : rank.buffers) {
    if (buffer.name == name) return buffer;
  }
  rank.buffers.push_back(Buffer{});
  rank.buffers.back().name = name;
  return rank.buffers.back();
}

json JobState::by_kind_locked(const Rank& rank) const {
  json by_kind = json::object();
  for (core::BufferKind kind : kBufferKinds) by_kind[std::string(core::buffer_kind_name(kind))] = std::int64_t{0};
  for (const Buffer& buffer : rank.buffers) {
    if (buffer.residency == core::residency_name(core::Residency::kGpu)) {
      by_kind[buffer.kind] = by_kind.value(buffer.kind, std::int64_t{0}) + buffer.bytes;
    }
  }
  return by_kind;
}

void JobState::apply(const json& event) {
  validate_event_json(event);
  std::lock_guard<std::mutex> lock(mutex_);
  apply_locked(event);
}

void JobState::apply(const core::Event& event) { apply(event_to_json(event)); }

void JobState::apply_locked(const json& event) {
  const std::string type = event["type"].get<std::string>();
  const double time = event["time"].get<double>();
  time_ = std::max(time_, time);

  if (type == kJobEvent) {
    const int world_size = event["world_size"].get<int>();
    job_ = event;
    job_.erase("type");
    job_.erase("time");
    started_ = time;
    for (int rank = 0; rank < world_size; ++rank) rank_locked(rank);
    return;
  }
  if (type == kJobEndEvent) {
    state_ = event["ok"].get<bool>() ? "finished" : "failed";
    message_ = event["message"].get<std::string>();
    return;
  }
  if (started_ == 0) started_ = time;

  Rank& rank = rank_locked(event["rank"].get<int>());
  const int iteration = event.value("iteration", -1);
  if (iteration >= 0) rank.iteration = iteration;

  if (type == kRankUpEvent) {
    rank.up = true;
    rank.host = event["host"].get<std::string>();
    rank.pid = event["pid"].get<long>();
    rank.device = event["device"].get<std::string>();
    rank.down_reason.clear();
    return;
  }
  if (type == kRankDownEvent) {
    rank.up = false;
    rank.host = event["host"].get<std::string>();
    rank.down_reason = event["reason"].get<std::string>();
    return;
  }

  const core::Event engine = event_from_json(event);
  switch (engine.type) {
    case core::EventType::kBufferCreated: {
      Buffer& buffer = buffer_locked(rank, engine.buffer);
      buffer.kind = core::buffer_kind_name(engine.kind);
      buffer.dtype = core::dtype_name(engine.dtype);
      buffer.bytes = engine.bytes;
      buffer.residency = core::residency_name(core::Residency::kNone);
      buffer.since = time;
      buffer.shape = engine.shape;
      break;
    }
    case core::EventType::kResidency: {
      Buffer& buffer = buffer_locked(rank, engine.buffer);
      buffer.kind = core::buffer_kind_name(engine.kind);
      buffer.dtype = core::dtype_name(engine.dtype);
      buffer.bytes = engine.bytes;
      buffer.residency = core::residency_name(engine.to);
      buffer.since = time;
      break;
    }
    case core::EventType::kBufferDestroyed:
      std::erase_if(rank.buffers, [&](const Buffer& buffer) { return buffer.name == engine.buffer; });
      break;
    case core::EventType::kTransfer:
      if (rank.in_enter && engine.path == core::TransferPath::kNetwork) rank.enter_network_bytes += engine.bytes;
      break;
    case core::EventType::kPhaseBegin:
      if (state_ == "starting") state_ = "running";
      rank.phase = engine.phase;
      rank.phase_since = time;
      if (engine.phase == "enter") {
        rank.in_enter = true;
        rank.enter_network_bytes = 0;
      }
      rank.phases.push_back(Phase{engine.iteration, engine.phase, time, -1});
      break;
    case core::EventType::kPhaseEnd: {
      if (engine.phase == "enter") {
        rank.in_enter = false;
        rank.last_enter_seconds = engine.seconds;
        rank.last_enter_network_bytes = rank.enter_network_bytes;
      } else if (engine.phase == "exit") {
        rank.last_exit_seconds = engine.seconds;
      }
      auto open = std::find_if(rank.phases.rbegin(), rank.phases.rend(),
                               [&](const Phase& phase) { return phase.phase == engine.phase && phase.end < 0; });
      if (open != rank.phases.rend()) {
        open->end = time;
      } else {
        rank.phases.push_back(Phase{engine.iteration, engine.phase, time - engine.seconds, time});
      }
      if (rank.phase == engine.phase) {
        rank.phase.clear();
        rank.phase_since = time;
      }
      break;
    }
    case core::EventType::kMemorySample: {
      rank.device_used = engine.device_used;
      rank.device_total = engine.device_total;
      rank.tracked = engine.tracked;
      json sample = {{"time", time},
                     {"rank", rank.rank},
                     {"device_used", engine.device_used},
                     {"device_total", engine.device_total},
                     {"tracked", engine.tracked},
                     {"by_kind", event.contains("by_kind") ? event["by_kind"] : by_kind_locked(rank)}};
      rank.memory.push_back(std::move(sample));
      break;
    }
    case core::EventType::kCheck:
      if (!engine.ok) ++rank.check_failures;
      rank.last_check = {{"name", engine.operation}, {"ok", engine.ok}, {"detail", engine.detail}, {"time", time}};
      break;
  }
  while (rank.memory.size() > limits_.memory_samples_per_rank) rank.memory.pop_front();
  while (rank.phases.size() > limits_.phases_per_rank) rank.phases.pop_front();
}

json JobState::status_json() const {
  std::lock_guard<std::mutex> lock(mutex_);
  json ranks = json::array();
  json memory = json::array();
  json phases = json::array();
  int iteration = -1;
  for (const auto& [index, rank] : ranks_) {
    iteration = std::max(iteration, rank.iteration);
    json buffers = json::array();
    for (const Buffer& buffer : rank.buffers) {
      buffers.push_back({{"name", buffer.name},
                         {"kind", buffer.kind},
                         {"dtype", buffer.dtype},
                         {"bytes", buffer.bytes},
                         {"residency", buffer.residency},
                         {"since", buffer.since},
                         {"shape", buffer.shape}});
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
                     {"last_check", rank.last_check},
                     {"buffers", std::move(buffers)}});
    for (const json& sample : rank.memory) memory.push_back(sample);
    for (const Phase& phase : rank.phases) {
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
  return {{"job", job_.is_null() ? json::object() : job_},
          {"state", state_},
          {"message", message_},
          {"time", time_},
          {"started", started_},
          {"iteration", iteration},
          {"ranks", std::move(ranks)},
          {"memory", std::move(memory)},
          {"phases", std::move(phases)}};
}

json JobState::gpu_bytes_by_kind(int rank) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = ranks_.find(rank);
  if (it == ranks_.end()) return by_kind_locked(Rank{});
  return by_kind_locked(it->second);
}

std::string JobState::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

}  // namespace hybridshard::service
