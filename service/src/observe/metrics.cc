#include "hybridshard/service/observe/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include "hybridshard/core/error.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/service/observe/event_json.h"

#ifndef HYBRIDSHARD_VERSION
#define HYBRIDSHARD_VERSION "unknown"
#endif

namespace hybridshard::service {
namespace {

using nlohmann::json;

constexpr std::array kBufferKinds = {
    core::BufferKind::kParams,         core::BufferKind::kGrads,           core::BufferKind::kMasterParams,
    core::BufferKind::kOptimizerState, core::BufferKind::kInferenceParams, core::BufferKind::kKvCache,
    core::BufferKind::kStaging,
};
constexpr std::array kResidencies = {core::Residency::kGpu, core::Residency::kCpu, core::Residency::kNone};
constexpr std::array kPaths = {core::TransferPath::kNetwork, core::TransferPath::kHostToDevice,
                               core::TransferPath::kDeviceToHost, core::TransferPath::kDeviceToDevice};
constexpr std::array<std::string_view, 6> kPhases = {"init", "train", "enter", "rollout", "exit", "shutdown"};
constexpr std::array<std::string_view, 4> kJobStates = {"starting", "running", "finished", "failed"};

// Phase names become label values: bound how many distinct ones a misbehaving rank can create.
constexpr std::size_t kMaxPhaseNamesPerRank = 32;

}  // namespace

std::string hybridshard_version() { return HYBRIDSHARD_VERSION; }

const std::vector<double>& phase_duration_buckets() {
  static const std::vector<double> buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,      2.5,   5,    10,    20,   30,  60};
  return buckets;
}

struct Metrics::Impl {
  struct Buffer {
    std::string kind;
    std::string residency;
    std::int64_t bytes = 0;
  };
  struct Rank {
    std::map<std::string, Buffer> buffers;
    std::map<std::pair<std::string, std::string>, prometheus::Gauge*> buffer_bytes;  // (kind, residency)
    prometheus::Gauge* device_used = nullptr;
    prometheus::Gauge* device_total = nullptr;
    prometheus::Gauge* device_tracked = nullptr;
    std::map<std::string, prometheus::Counter*> moved;  // by path
    std::map<std::string, prometheus::Gauge*> phase;    // by phase
    std::map<std::string, prometheus::Histogram*> phase_duration;
    prometheus::Gauge* iteration = nullptr;
    prometheus::Gauge* up = nullptr;
    prometheus::Counter* check_failures = nullptr;
    prometheus::Gauge* last_enter = nullptr;
    prometheus::Gauge* last_exit = nullptr;
    prometheus::Gauge* last_enter_network = nullptr;
    prometheus::Gauge* last_event = nullptr;
    bool in_enter = false;
    std::int64_t enter_network_bytes = 0;
  };

  explicit Impl(const std::string& version)
      : registry(std::make_shared<prometheus::Registry>()),
        buffer_bytes(prometheus::BuildGauge()
                         .Name("hybridshard_buffer_bytes")
                         .Help("Bytes of the rank's flat buffers by kind and residency (none: not allocated)")
                         .Register(*registry)),
        device_used(prometheus::BuildGauge()
                        .Name("hybridshard_device_memory_used_bytes")
                        .Help("Device memory in use on the rank's device, as the device reports it")
                        .Register(*registry)),
        device_total(prometheus::BuildGauge()
                         .Name("hybridshard_device_memory_total_bytes")
                         .Help("Device memory capacity of the rank's device")
                         .Register(*registry)),
        device_tracked(prometheus::BuildGauge()
                           .Name("hybridshard_device_memory_tracked_bytes")
                           .Help("Device memory held by buffers the engine tracks")
                           .Register(*registry)),
        moved(prometheus::BuildCounter()
                  .Name("hybridshard_moved_bytes_total")
                  .Help("Bytes moved by the rank, by path (network, host_to_device, device_to_host, device_to_device)")
                  .Register(*registry)),
        phase_duration(prometheus::BuildHistogram()
                           .Name("hybridshard_phase_duration_seconds")
                           .Help("Duration of each phase (train, enter, rollout, exit, ...) on each rank")
                           .Register(*registry)),
        phase(prometheus::BuildGauge()
                  .Name("hybridshard_phase")
                  .Help("1 for the phase the rank is in, 0 for the others")
                  .Register(*registry)),
        iteration(prometheus::BuildGauge()
                      .Name("hybridshard_iteration")
                      .Help("Iteration the rank is in (0-based; -1 before the first)")
                      .Register(*registry)),
        rank_up(prometheus::BuildGauge()
                    .Name("hybridshard_rank_up")
                    .Help("1 while the rank process is up and answering, 0 once it exited or stopped answering")
                    .Register(*registry)),
        check_failures(prometheus::BuildCounter()
                           .Name("hybridshard_rollout_check_failures_total")
                           .Help("Correctness checks (rollout against its reference, shard checks) that failed")
                           .Register(*registry)),
        last_enter(prometheus::BuildGauge()
                       .Name("hybridshard_last_enter_seconds")
                       .Help("Duration of the rank's last completed enter transition")
                       .Register(*registry)),
        last_exit(prometheus::BuildGauge()
                      .Name("hybridshard_last_exit_seconds")
                      .Help("Duration of the rank's last completed exit transition")
                      .Register(*registry)),
        last_enter_network(prometheus::BuildGauge()
                               .Name("hybridshard_last_enter_network_bytes")
                               .Help("Network bytes (sent and received) of the rank's last completed enter")
                               .Register(*registry)),
        last_event(prometheus::BuildGauge()
                       .Name("hybridshard_last_event_timestamp_seconds")
                       .Help("Unix time of the newest event from the rank")
                       .Register(*registry)),
        job_state(prometheus::BuildGauge()
                      .Name("hybridshard_job_state")
                      .Help("1 for the job's state (starting, running, finished, failed), 0 for the others")
                      .Register(*registry)),
        world_size(prometheus::BuildGauge()
                       .Name("hybridshard_world_size")
                       .Help("Number of ranks of the job")
                       .Register(*registry)
                       .Add({})) {
    prometheus::BuildGauge()
        .Name("hybridshard_build_info")
        .Help("Always 1; the label says which hybridshard serves the metrics")
        .Register(*registry)
        .Add({{"version", version}})
        .Set(1);
    for (std::string_view state : kJobStates) {
      job_states[std::string(state)] = &job_state.Add({{"state", std::string(state)}});
    }
    set_job_state("starting");
  }

  void set_job_state(const std::string& state) {
    for (auto& [name, gauge] : job_states) gauge->Set(name == state ? 1 : 0);
  }

  Rank& rank_of(int index) {
    auto [it, inserted] = ranks.try_emplace(index);
    Rank& rank = it->second;
    if (!inserted) return rank;
    const std::string label = std::to_string(index);
    for (core::BufferKind kind : kBufferKinds) {
      for (core::Residency residency : kResidencies) {
        std::string kind_name(core::buffer_kind_name(kind));
        std::string residency_name(core::residency_name(residency));
        rank.buffer_bytes[{kind_name, residency_name}] =
            &buffer_bytes.Add({{"rank", label}, {"kind", kind_name}, {"residency", residency_name}});
      }
    }
    rank.device_used = &device_used.Add({{"rank", label}});
    rank.device_total = &device_total.Add({{"rank", label}});
    rank.device_tracked = &device_tracked.Add({{"rank", label}});
    for (core::TransferPath path : kPaths) {
      std::string path_name(core::transfer_path_name(path));
      rank.moved[path_name] = &moved.Add({{"rank", label}, {"path", path_name}});
    }
    for (std::string_view name : kPhases) phase_gauge(rank, index, std::string(name));
    rank.iteration = &iteration.Add({{"rank", label}});
    rank.iteration->Set(-1);
    rank.up = &rank_up.Add({{"rank", label}});
    rank.check_failures = &check_failures.Add({{"rank", label}});
    rank.last_enter = &last_enter.Add({{"rank", label}});
    rank.last_exit = &last_exit.Add({{"rank", label}});
    rank.last_enter_network = &last_enter_network.Add({{"rank", label}});
    rank.last_event = &last_event.Add({{"rank", label}});
    return rank;
  }

  prometheus::Gauge* phase_gauge(Rank& rank, int index, const std::string& name) {
    auto it = rank.phase.find(name);
    if (it != rank.phase.end()) return it->second;
    if (rank.phase.size() >= kMaxPhaseNamesPerRank) return nullptr;
    prometheus::Gauge* gauge = &phase.Add({{"rank", std::to_string(index)}, {"phase", name}});
    rank.phase[name] = gauge;
    return gauge;
  }

  prometheus::Histogram* duration_histogram(Rank& rank, int index, const std::string& name) {
    auto it = rank.phase_duration.find(name);
    if (it != rank.phase_duration.end()) return it->second;
    if (rank.phase_duration.size() >= kMaxPhaseNamesPerRank) return nullptr;
    prometheus::Histogram* histogram =
        &phase_duration.Add({{"rank", std::to_string(index)}, {"phase", name}}, phase_duration_buckets());
    rank.phase_duration[name] = histogram;
    return histogram;
  }

  void update_buffer_gauges(Rank& rank) {
    std::map<std::pair<std::string, std::string>, std::int64_t> sums;
    for (const auto& [name, buffer] : rank.buffers) sums[{buffer.kind, buffer.residency}] += buffer.bytes;
    for (auto& [key, gauge] : rank.buffer_bytes) {
      auto it = sums.find(key);
      gauge->Set(it == sums.end() ? 0.0 : static_cast<double>(it->second));
    }
  }

  void apply(const json& event) {
    const std::string type = event["type"].get<std::string>();
    if (type == kJobEvent) {
      const int size = event["world_size"].get<int>();
      world_size.Set(size);
      for (int index = 0; index < size; ++index) rank_of(index);
      return;
    }
    if (type == kJobEndEvent) {
      set_job_state(event["ok"].get<bool>() ? "finished" : "failed");
      return;
    }
    const int index = event["rank"].get<int>();
    Rank& rank = rank_of(index);
    rank.last_event->Set(event["time"].get<double>());
    const int iteration_value = event.value("iteration", -1);
    if (iteration_value >= 0) rank.iteration->Set(iteration_value);
    if (type == kRankUpEvent) {
      rank.up->Set(1);
      return;
    }
    if (type == kRankDownEvent) {
      rank.up->Set(0);
      for (auto& [name, gauge] : rank.phase) gauge->Set(0);
      return;
    }
    const core::Event engine = event_from_json(event);
    switch (engine.type) {
      case core::EventType::kBufferCreated:
      case core::EventType::kResidency: {
        Buffer& buffer = rank.buffers[engine.buffer];
        buffer.kind = core::buffer_kind_name(engine.kind);
        buffer.residency =
            core::residency_name(engine.type == core::EventType::kResidency ? engine.to : core::Residency::kNone);
        buffer.bytes = engine.bytes;
        update_buffer_gauges(rank);
        break;
      }
      case core::EventType::kBufferDestroyed:
        rank.buffers.erase(engine.buffer);
        update_buffer_gauges(rank);
        break;
      case core::EventType::kTransfer:
        rank.moved[std::string(core::transfer_path_name(engine.path))]->Increment(static_cast<double>(engine.bytes));
        if (rank.in_enter && engine.path == core::TransferPath::kNetwork) rank.enter_network_bytes += engine.bytes;
        break;
      case core::EventType::kPhaseBegin: {
        if (job_states["starting"]->Value() == 1) set_job_state("running");
        prometheus::Gauge* current = phase_gauge(rank, index, engine.phase);
        for (auto& [name, gauge] : rank.phase) gauge->Set(gauge == current ? 1 : 0);
        if (engine.phase == "enter") {
          rank.in_enter = true;
          rank.enter_network_bytes = 0;
        }
        break;
      }
      case core::EventType::kPhaseEnd: {
        if (prometheus::Gauge* gauge = phase_gauge(rank, index, engine.phase)) gauge->Set(0);
        if (prometheus::Histogram* histogram = duration_histogram(rank, index, engine.phase)) {
          histogram->Observe(engine.seconds);
        }
        if (engine.phase == "enter") {
          rank.in_enter = false;
          rank.last_enter->Set(engine.seconds);
          rank.last_enter_network->Set(static_cast<double>(rank.enter_network_bytes));
        } else if (engine.phase == "exit") {
          rank.last_exit->Set(engine.seconds);
        }
        break;
      }
      case core::EventType::kMemorySample:
        rank.device_used->Set(static_cast<double>(engine.device_used));
        rank.device_total->Set(static_cast<double>(engine.device_total));
        rank.device_tracked->Set(static_cast<double>(engine.tracked));
        break;
      case core::EventType::kCheck:
        if (!engine.ok) rank.check_failures->Increment();
        break;
    }
  }

  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Family<prometheus::Gauge>& buffer_bytes;
  prometheus::Family<prometheus::Gauge>& device_used;
  prometheus::Family<prometheus::Gauge>& device_total;
  prometheus::Family<prometheus::Gauge>& device_tracked;
  prometheus::Family<prometheus::Counter>& moved;
  prometheus::Family<prometheus::Histogram>& phase_duration;
  prometheus::Family<prometheus::Gauge>& phase;
  prometheus::Family<prometheus::Gauge>& iteration;
  prometheus::Family<prometheus::Gauge>& rank_up;
  prometheus::Family<prometheus::Counter>& check_failures;
  prometheus::Family<prometheus::Gauge>& last_enter;
  prometheus::Family<prometheus::Gauge>& last_exit;
  prometheus::Family<prometheus::Gauge>& last_enter_network;
  prometheus::Family<prometheus::Gauge>& last_event;
  prometheus::Family<prometheus::Gauge>& job_state;
  prometheus::Gauge& world_size;
  std::map<std::string, prometheus::Gauge*> job_states;
  std::map<int, Rank> ranks;
  mutable std::mutex mutex;
};

Metrics::Metrics(const std::string& version) : impl_(std::make_unique<Impl>(version)) {}

Metrics::~Metrics() = default;

void Metrics::apply(const json& event) {
  validate_event_json(event);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->apply(event);
}

void Metrics::apply(const core::Event& event) { apply(event_to_json(event)); }

std::string Metrics::text() const {
  std::vector<prometheus::MetricFamily> families = impl_->registry->Collect();
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

std::shared_ptr<prometheus::Registry> Metrics::registry() const { return impl_->registry; }

}  // namespace hybridshard::service
