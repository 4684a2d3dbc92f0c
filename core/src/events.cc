#include "hybridshard/core/events.h"

#include <chrono>

namespace hybridshard::core {

std::string_view transfer_path_name(TransferPath path) {
  switch (path) {
    case TransferPath::kNetwork:
      return "network";
    case TransferPath::kHostToDevice:
      return "host_to_device";
    case TransferPath::kDeviceToHost:
      return "device_to_host";
    case TransferPath::kDeviceToDevice:
      return "device_to_device";
  }
  return "unknown";
}

std::string_view event_type_name(EventType type) {
  // The names are the run record's "type" values (docs/record-format.md).
  switch (type) {
    case EventType::kBufferCreated:
      return "buffer_created";
    case EventType::kResidency:
      return "residency";
    case EventType::kBufferDestroyed:
      return "buffer_destroyed";
    case EventType::kTransfer:
      return "transfer";
    case EventType::kPhaseBegin:
      return "phase_begin";
    case EventType::kPhaseEnd:
      return "phase_end";
    case EventType::kMemorySample:
      return "memory";
    case EventType::kCheck:
      return "check";
  }
  return "unknown";
}

double wall_time_now() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration<double>(since_epoch).count();
}

void RecordingEventSink::on_event(const Event& event) {
  std::lock_guard<std::mutex> lock(mutex_);
  events_.push_back(event);
}

std::vector<Event> RecordingEventSink::events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_;
}

void RecordingEventSink::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  events_.clear();
}

}  // namespace hybridshard::core
