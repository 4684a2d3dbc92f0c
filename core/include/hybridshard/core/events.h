// Events: every residency change, every byte moved, every phase timed. The engine emits them to an EventSink; the
// service turns them into metrics, the status endpoint and the run record.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "hybridshard/core/dtype.h"
#include "hybridshard/core/residency.h"

namespace hybridshard::core {

// How bytes travelled.
enum class TransferPath : std::uint8_t {
  kNetwork,  // sent to / received from another rank (NCCL, Gloo; loopback's stand-in copies)
  kHostToDevice,
  kDeviceToHost,
  kDeviceToDevice,  // local reorders and copies
};
std::string_view transfer_path_name(TransferPath path);  // "network", "host_to_device", "device_to_host",
                                                         // "device_to_device"

enum class EventType : std::uint8_t {
  kBufferCreated,  // a buffer now exists (residency kNone, bytes known); carries the description fields
  kResidency,      // a buffer changed residency (from -> to)
  kBufferDestroyed,
  kTransfer,  // bytes moved along a path
  kPhaseBegin,
  kPhaseEnd,      // carries seconds
  kMemorySample,  // device used / total, tracked and cached bytes
  kCheck,         // a correctness check (rollout reference, shard check): ok or failed, with detail
};
std::string_view event_type_name(EventType type);

struct Event {
  EventType type = EventType::kTransfer;
  double time = 0;  // seconds since the Unix epoch (wall clock), so ranks on different hosts line up
  int rank = 0;
  int iteration = -1;

  // Buffer events.
  std::string buffer;  // unique per rank, e.g. "train.params.pp0.vpp1", "rollout.params", "rollout.kv_cache"
  BufferKind kind = BufferKind::kParams;
  DType dtype = DType::kBFloat16;
  std::int64_t bytes = 0;
  Residency from = Residency::kNone;
  Residency to = Residency::kNone;
  std::string shape;  // e.g. "[32 tensors] 1234567 elems", free text for tooltips

  // Transfer events.
  TransferPath path = TransferPath::kNetwork;
  int peer = -1;
  double seconds = 0;
  std::string operation;  // "enter.round0.recv", "exit.offload", ...

  // Phase events: "train", "enter", "rollout", "exit" (and "init", "shutdown").
  std::string phase;

  // Memory samples: a DeviceMemory reading (device.h). used = tracked + cached + untracked, untracked derived.
  std::int64_t device_used = 0;
  std::int64_t device_total = 0;
  std::int64_t tracked = 0;
  std::int64_t cached = 0;       // device memory in the device's cache
  std::int64_t cached_host = 0;  // pinned host memory in the device's cache

  // Checks.
  bool ok = true;
  std::string detail;
};

double wall_time_now();

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void on_event(const Event& event) = 0;
};

// Keeps every event; for tests and the bench.
class RecordingEventSink : public EventSink {
 public:
  void on_event(const Event& event) override;
  std::vector<Event> events() const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::vector<Event> events_;
};

// Sends each event to several sinks.
class FanOutEventSink : public EventSink {
 public:
  void add(EventSink* sink) { sinks_.push_back(sink); }
  void on_event(const Event& event) override {
    for (EventSink* sink : sinks_) sink->on_event(event);
  }

 private:
  std::vector<EventSink*> sinks_;
};

}  // namespace hybridshard::core
