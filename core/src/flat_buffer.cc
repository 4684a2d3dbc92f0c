#include "hybridshard/core/flat_buffer.h"

#include <chrono>
#include <string>

#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

std::string describe(const BufferLayout& layout) {
  std::int64_t elements = 0;
  for (const LocalTensor& tensor : layout.tensors) elements += tensor.numel();
  return std::to_string(layout.tensors.size()) + " tensors, " + std::to_string(elements) + " elems";
}

FlatBufferInfo info_from(const BufferLayout& layout, BufferKind kind) {
  FlatBufferInfo info;
  info.name = layout.name;
  info.kind = kind;
  info.dtype = layout.dtype;
  info.bytes = layout.bytes;
  info.shape = describe(layout);
  return info;
}

TransferPath path_between(Residency from, Residency to) {
  if (from == Residency::kCpu && to == Residency::kGpu) return TransferPath::kHostToDevice;
  if (from == Residency::kGpu && to == Residency::kCpu) return TransferPath::kDeviceToHost;
  return TransferPath::kDeviceToDevice;
}

}  // namespace

FlatBuffer::FlatBuffer(FlatBufferInfo info, Device& device, EventSink* events, int rank)
    : info_(std::move(info)), device_(device), events_(events), rank_(rank) {
  if (info_.bytes < 0)
    HS_THROW(Error, "flat buffer '" + info_.name + "': negative size " + std::to_string(info_.bytes));
  if (events_ != nullptr) {
    Event event;
    event.type = EventType::kBufferCreated;
    event.time = wall_time_now();
    event.rank = rank_;
    event.iteration = iteration_;
    event.buffer = info_.name;
    event.kind = info_.kind;
    event.dtype = info_.dtype;
    event.bytes = info_.bytes;
    event.from = Residency::kNone;
    event.to = Residency::kNone;
    event.shape = info_.shape;
    events_->on_event(event);
  }
}

FlatBuffer::FlatBuffer(const BufferLayout& layout, BufferKind kind, Device& device, EventSink* events, int rank)
    : FlatBuffer(info_from(layout, kind), device, events, rank) {}

FlatBuffer::~FlatBuffer() {
  // A destructor must not throw: a failing free is reported by the device's own accounting, not here.
  try {
    if (residency_ != Residency::kNone) move_to(Residency::kNone, false);
  } catch (...) {
  }
  if (events_ != nullptr) {
    try {
      Event event;
      event.type = EventType::kBufferDestroyed;
      event.time = wall_time_now();
      event.rank = rank_;
      event.iteration = iteration_;
      event.buffer = info_.name;
      event.kind = info_.kind;
      event.dtype = info_.dtype;
      event.bytes = info_.bytes;
      events_->on_event(event);
    } catch (...) {
    }
  }
}

void FlatBuffer::move_to(Residency target, bool keep_contents) {
  const Residency from = residency_;
  if (target == from) return;

  if (target == Residency::kNone) {
    device_.deallocate(from, data_, info_.bytes);
    data_ = nullptr;
    residency_ = Residency::kNone;
    emit_residency(from, target);
    return;
  }

  // Allocate the new place first: if that fails, the buffer stays where it was.
  void* moved = device_.allocate(target, info_.bytes);
  if (keep_contents && from != Residency::kNone && info_.bytes > 0) {
    try {
      const auto start = std::chrono::steady_clock::now();
      device_.copy(moved, target, data_, from, info_.bytes);
      device_.synchronize();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (events_ != nullptr) {
        Event event;
        event.type = EventType::kTransfer;
        event.time = wall_time_now();
        event.rank = rank_;
        event.iteration = iteration_;
        event.buffer = info_.name;
        event.kind = info_.kind;
        event.dtype = info_.dtype;
        event.bytes = info_.bytes;
        event.path = path_between(from, target);
        event.peer = -1;
        event.seconds = seconds;
        event.operation = "move." + info_.name + "." + std::string(residency_name(from)) + "_to_" +
                          std::string(residency_name(target));
        events_->on_event(event);
      }
    } catch (...) {
      device_.deallocate(target, moved, info_.bytes);
      throw;
    }
  }
  if (from != Residency::kNone) device_.deallocate(from, data_, info_.bytes);
  data_ = moved;
  residency_ = target;
  emit_residency(from, target);
}

void FlatBuffer::emit_residency(Residency from, Residency to) {
  if (events_ == nullptr) return;
  Event event;
  event.type = EventType::kResidency;
  event.time = wall_time_now();
  event.rank = rank_;
  event.iteration = iteration_;
  event.buffer = info_.name;
  event.kind = info_.kind;
  event.dtype = info_.dtype;
  event.bytes = info_.bytes;
  event.from = from;
  event.to = to;
  event.shape = info_.shape;
  events_->on_event(event);
}

}  // namespace hybridshard::core
