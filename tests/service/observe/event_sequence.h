// A synthetic but realistic event sequence of a small job (the quickstart's shape): ranks come up, create their
// buffers, and go through train -> enter -> rollout -> exit with the memory policy's residency changes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hybridshard/core/events.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::testing {

struct SyntheticJob {
  int world_size = 2;
  double start = 1764078990.0;
  std::int64_t params_bytes = 1000;     // per rank, train layout
  std::int64_t inference_bytes = 1500;  // per rank, inference shard
  std::int64_t network_bytes = 700;     // received per rank per enter
  std::int64_t device_total = 1 << 20;
};

inline nlohmann::json engine(const core::Event& event) { return service::event_to_json(event); }

inline core::Event base_event(core::EventType type, double time, int rank, int iteration) {
  core::Event event;
  event.type = type;
  event.time = time;
  event.rank = rank;
  event.iteration = iteration;
  return event;
}

inline nlohmann::json buffer_event(core::EventType type, double time, int rank, int iteration, const std::string& name,
                                   core::BufferKind kind, std::int64_t bytes, core::Residency from,
                                   core::Residency to) {
  core::Event event = base_event(type, time, rank, iteration);
  event.buffer = name;
  event.kind = kind;
  event.dtype = kind == core::BufferKind::kParams || kind == core::BufferKind::kInferenceParams ||
                        kind == core::BufferKind::kKvCache
                    ? core::DType::kBFloat16
                    : core::DType::kFloat32;
  event.bytes = bytes;
  event.from = from;
  event.to = to;
  event.shape = std::to_string(bytes / 2) + " elems";
  return engine(event);
}

inline nlohmann::json phase_event(bool begin, double time, int rank, int iteration, const std::string& phase,
                                  double seconds = 0) {
  core::Event event =
      base_event(begin ? core::EventType::kPhaseBegin : core::EventType::kPhaseEnd, time, rank, iteration);
  event.phase = phase;
  event.seconds = seconds;
  return engine(event);
}

inline nlohmann::json transfer_event(double time, int rank, int iteration, core::TransferPath path, std::int64_t bytes,
                                     int peer, const std::string& operation) {
  core::Event event = base_event(core::EventType::kTransfer, time, rank, iteration);
  event.path = path;
  event.bytes = bytes;
  event.peer = peer;
  event.seconds = 0.001;
  event.operation = operation;
  return engine(event);
}

inline nlohmann::json memory_event(double time, int rank, int iteration, std::int64_t used, std::int64_t total,
                                   std::int64_t tracked, std::int64_t cached = 0, std::int64_t cached_host = 0) {
  core::Event event = base_event(core::EventType::kMemorySample, time, rank, iteration);
  event.device_used = used;
  event.device_total = total;
  event.tracked = tracked;
  event.cached = cached;
  event.cached_host = cached_host;
  return engine(event);
}

inline nlohmann::json check_event(double time, int rank, int iteration, bool ok, const std::string& detail) {
  core::Event event = base_event(core::EventType::kCheck, time, rank, iteration);
  event.operation = "rollout_reference";
  event.ok = ok;
  event.detail = detail;
  return engine(event);
}

// The job's opening: the job event, every rank up with its train buffers on the device.
inline std::vector<nlohmann::json> job_opening(const SyntheticJob& job) {
  using core::BufferKind;
  using core::EventType;
  using core::Residency;
  std::vector<nlohmann::json> events;
  double t = job.start;
  events.push_back({{"type", "job"},
                    {"time", t},
                    {"world_size", job.world_size},
                    {"train", {{"tp", job.world_size}, {"pp", 1}, {"vpp", 1}, {"dp", 1}}},
                    {"rollout", {{"tp", 1}, {"dp", job.world_size}}},
                    {"backend", "gloo"},
                    {"strategy", "hybridshard"},
                    {"iterations", 2},
                    {"job_file", "synthetic.yaml"}});
  for (int rank = 0; rank < job.world_size; ++rank) {
    events.push_back(service::event_to_json(service::rank_up_event(rank, "127.0.0.1", 1000 + rank, "cpu", t += 0.01)));
    events.push_back(phase_event(true, t += 0.01, rank, -1, "init"));
    for (auto [name, kind, bytes] :
         {std::tuple{"train.params.pp0.vpp0", BufferKind::kParams, job.params_bytes},
          std::tuple{"train.grads.pp0.vpp0", BufferKind::kGrads, 2 * job.params_bytes},
          std::tuple{"train.master.pp0.vpp0", BufferKind::kMasterParams, 2 * job.params_bytes},
          std::tuple{"train.exp_avg.pp0.vpp0", BufferKind::kOptimizerState, 2 * job.params_bytes},
          std::tuple{"rollout.params", BufferKind::kInferenceParams, job.inference_bytes},
          std::tuple{"rollout.kv_cache", BufferKind::kKvCache, job.params_bytes / 2}}) {
      events.push_back(buffer_event(EventType::kBufferCreated, t += 0.001, rank, -1, name, kind, bytes,
                                    Residency::kNone, Residency::kNone));
      if (kind != BufferKind::kInferenceParams && kind != BufferKind::kKvCache) {
        events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, -1, name, kind, bytes, Residency::kNone,
                                      Residency::kGpu));
      }
    }
    events.push_back(phase_event(false, t += 0.01, rank, -1, "init", 0.05));
  }
  return events;
}

// One iteration on every rank: train, enter (network receive, inference shard to gpu, optimizer offloaded), rollout
// (KV cache, reference check), exit (inference shard freed, optimizer back).
inline std::vector<nlohmann::json> job_iteration(const SyntheticJob& job, int iteration, bool check_ok = true) {
  using core::BufferKind;
  using core::EventType;
  using core::Residency;
  std::vector<nlohmann::json> events;
  double t = job.start + 10.0 * (iteration + 1);
  for (int rank = 0; rank < job.world_size; ++rank) {
    const std::int64_t base_used = 7 * job.params_bytes;
    events.push_back(phase_event(true, t += 0.01, rank, iteration, "train"));
    events.push_back(memory_event(t += 0.1, rank, iteration, base_used + 100, job.device_total, base_used));
    events.push_back(phase_event(false, t += 0.2, rank, iteration, "train", 0.3));
    events.push_back(phase_event(true, t += 0.001, rank, iteration, "enter"));
    events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, iteration, "train.exp_avg.pp0.vpp0",
                                  BufferKind::kOptimizerState, 2 * job.params_bytes, Residency::kGpu, Residency::kCpu));
    events.push_back(transfer_event(t += 0.001, rank, iteration, core::TransferPath::kDeviceToHost,
                                    2 * job.params_bytes, -1, "enter.offload"));
    events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, iteration, "rollout.params",
                                  BufferKind::kInferenceParams, job.inference_bytes, Residency::kNone,
                                  Residency::kGpu));
    events.push_back(transfer_event(t += 0.002, rank, iteration, core::TransferPath::kNetwork, job.network_bytes,
                                    (rank + 1) % job.world_size, "enter.round0.recv"));
    events.push_back(transfer_event(t += 0.001, rank, iteration, core::TransferPath::kDeviceToDevice,
                                    job.inference_bytes, -1, "enter.reorder"));
    events.push_back(phase_event(false, t += 0.005, rank, iteration, "enter", 0.012));
    events.push_back(phase_event(true, t += 0.001, rank, iteration, "rollout"));
    events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, iteration, "rollout.kv_cache",
                                  BufferKind::kKvCache, job.params_bytes / 2, Residency::kNone, Residency::kGpu));
    events.push_back(memory_event(t += 0.1, rank, iteration, base_used + job.inference_bytes + 200, job.device_total,
                                  base_used + job.inference_bytes));
    events.push_back(check_event(t += 0.1, rank, iteration, check_ok, check_ok ? "8 tokens match" : "token 3 differs"));
    events.push_back(phase_event(false, t += 0.01, rank, iteration, "rollout", 0.25));
    events.push_back(phase_event(true, t += 0.001, rank, iteration, "exit"));
    events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, iteration, "rollout.params",
                                  BufferKind::kInferenceParams, job.inference_bytes, Residency::kGpu,
                                  Residency::kNone));
    events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, iteration, "rollout.kv_cache",
                                  BufferKind::kKvCache, job.params_bytes / 2, Residency::kGpu, Residency::kNone));
    events.push_back(buffer_event(EventType::kResidency, t += 0.001, rank, iteration, "train.exp_avg.pp0.vpp0",
                                  BufferKind::kOptimizerState, 2 * job.params_bytes, Residency::kCpu, Residency::kGpu));
    events.push_back(transfer_event(t += 0.001, rank, iteration, core::TransferPath::kHostToDevice,
                                    2 * job.params_bytes, -1, "exit.reload"));
    events.push_back(phase_event(false, t += 0.002, rank, iteration, "exit", 0.004));
  }
  return events;
}

}  // namespace hybridshard::testing
