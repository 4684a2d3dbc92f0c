#include "hybridshard/service/rank/phase_events.h"

#include <utility>

namespace hybridshard::service {

core::Event phase_event(core::EventType type, int rank, int iteration, const std::string& phase) {
  core::Event event;
  event.type = type;
  event.time = core::wall_time_now();
  event.rank = rank;
  event.iteration = iteration;
  event.phase = phase;
  return event;
}

PhaseScope::PhaseScope(core::EventSink& events, int rank, int iteration, std::string phase,
                       const std::function<void(int iteration, std::string_view phase)>& begun)
    : events_(events),
      rank_(rank),
      iteration_(iteration),
      phase_(std::move(phase)),
      started_(std::chrono::steady_clock::now()) {
  events_.on_event(phase_event(core::EventType::kPhaseBegin, rank_, iteration_, phase_));
  if (begun) begun(iteration_, phase_);
}

PhaseScope::~PhaseScope() {
  core::Event event = phase_event(core::EventType::kPhaseEnd, rank_, iteration_, phase_);
  event.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  events_.on_event(event);
}

void emit_memory_sample(core::EventSink& events, core::Device& device, int rank, int iteration) {
  core::Event event;
  event.type = core::EventType::kMemorySample;
  event.time = core::wall_time_now();
  event.rank = rank;
  event.iteration = iteration;
  const core::DeviceMemory memory = device.memory();
  event.device_used = memory.used;
  event.device_total = memory.total;
  event.tracked = memory.tracked;
  event.cached = memory.cached;
  event.cached_host = memory.cached_host;
  events.on_event(event);
}

MemorySampler::MemorySampler(core::EventSink& events, core::Device& device, int rank, double interval_seconds,
                             const std::atomic<int>& iteration)
    : thread_([this, &events, &device, &iteration, rank, interval_seconds] {
        std::unique_lock lock(mutex_);
        while (!stop_) {
          cv_.wait_for(lock, std::chrono::duration<double>(interval_seconds));
          if (!stop_) emit_memory_sample(events, device, rank, iteration.load());
        }
      }) {}

MemorySampler::~MemorySampler() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

}  // namespace hybridshard::service
