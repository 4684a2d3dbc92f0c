// One contiguous allocation holding many parameters as aligned views, with a residency that is always known and an
// event for every change and every byte moved.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/residency.h"

namespace hybridshard::core {

struct FlatBufferInfo {
  std::string name;  // unique per rank
  BufferKind kind = BufferKind::kParams;
  DType dtype = DType::kBFloat16;
  std::int64_t bytes = 0;
  std::string shape;  // free text for tooltips, e.g. "32 tensors, 8.03e9 elems"
};

class FlatBuffer {
 public:
  // Starts with residency kNone (nothing allocated) and emits kBufferCreated.
  FlatBuffer(FlatBufferInfo info, Device& device, EventSink* events, int rank);
  // Convenience: info from a layout (name, dtype, bytes, tensor count).
  FlatBuffer(const BufferLayout& layout, BufferKind kind, Device& device, EventSink* events, int rank);
  ~FlatBuffer();  // releases memory, emits kBufferDestroyed
  FlatBuffer(const FlatBuffer&) = delete;
  FlatBuffer& operator=(const FlatBuffer&) = delete;

  const FlatBufferInfo& info() const { return info_; }
  const std::string& name() const { return info_.name; }
  std::int64_t bytes() const { return info_.bytes; }
  Residency residency() const { return residency_; }
  void* data() { return data_; }  // nullptr when kNone
  const void* data() const { return data_; }

  // Moves to `target`. With keep_contents, bytes are copied across (gpu<->cpu, emitting a kTransfer event); without,
  // the new place is allocated uninitialised (the caller overwrites it) and the old one is freed. To kNone frees.
  void move_to(Residency target, bool keep_contents = true);
  void release() { move_to(Residency::kNone, false); }

  void set_iteration(int iteration) { iteration_ = iteration; }

 private:
  void emit_residency(Residency from, Residency to);

  FlatBufferInfo info_;
  Device& device_;
  EventSink* events_;
  int rank_;
  int iteration_ = -1;
  Residency residency_ = Residency::kNone;
  void* data_ = nullptr;
};

}  // namespace hybridshard::core
