// The events a rank's schedule emits: kPhaseBegin / kPhaseEnd around a phase, and memory samples (after phases and
// from a sampling thread).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"

namespace hybridshard::service {

// A kPhaseBegin or kPhaseEnd event of `phase` (time now; an end's seconds are the caller's to set).
core::Event phase_event(core::EventType type, int rank, int iteration, const std::string& phase);

// Emits kPhaseBegin on construction (then calls `begun`, if given) and kPhaseEnd with the phase's seconds on
// destruction.
class PhaseScope {
 public:
  PhaseScope(core::EventSink& events, int rank, int iteration, std::string phase,
             const std::function<void(int iteration, std::string_view phase)>& begun = {});
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  core::EventSink& events_;
  int rank_;
  int iteration_;
  std::string phase_;
  std::chrono::steady_clock::time_point started_;
};

// One kMemorySample: one reading of the device's memory (Device::memory(): used, total, tracked, cached).
void emit_memory_sample(core::EventSink& events, core::Device& device, int rank, int iteration);

// Samples device memory every `interval_seconds` from its own thread (the engine's byte counters are atomic) until
// destroyed, stamped with `iteration`'s current value.
class MemorySampler {
 public:
  MemorySampler(core::EventSink& events, core::Device& device, int rank, double interval_seconds,
                const std::atomic<int>& iteration);
  ~MemorySampler();
  MemorySampler(const MemorySampler&) = delete;
  MemorySampler& operator=(const MemorySampler&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace hybridshard::service
