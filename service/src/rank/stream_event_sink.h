// The rank's EventSink: every engine event becomes one JSON line on the event stream to the launcher, stamped with
// the current iteration; without a launcher (torchrun, Slurm), rank 0 prints phase progress itself.
#pragma once

#include <iosfwd>
#include <memory>
#include <nlohmann/json.hpp>

#include "hybridshard/core/events.h"
#include "hybridshard/service/launch/event_stream.h"

namespace hybridshard::service {

class StreamEventSink : public core::EventSink {
 public:
  // `stream` may be null (no launcher); `progress` may be null (not rank 0 or quiet).
  StreamEventSink(int rank, std::unique_ptr<EventStreamClient> stream, std::ostream* progress);

  void on_event(const core::Event& event) override;
  void send(const nlohmann::json& event);  // launcher-level events (rank_up)
  void set_iteration(int iteration) { iteration_ = iteration; }

 private:
  int rank_;
  int iteration_ = -1;
  std::unique_ptr<EventStreamClient> stream_;
  std::ostream* progress_;
};

}  // namespace hybridshard::service
