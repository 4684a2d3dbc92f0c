// An EventSink that streams every engine event of one rank as a JSON line to the event stream (the launcher of
// `hybridshard run`, or `hybridshard serve`), stamped with the rank and the current iteration. Usable from any process
// that runs ranks of a job (hybridshard-rank, the Python package): give it an address, a hello and a timeout. Rank 0
// of a job without a launcher may also print phase progress itself.
#pragma once

#include <chrono>
#include <iosfwd>
#include <memory>
#include <string>

#include "hybridshard/core/events.h"
#include "hybridshard/service/events/event_stream.h"
#include "hybridshard/service/events/job_event.h"

namespace hybridshard::service {

// Connects to the event stream at `address`. When `required` (our launcher's stream), failing to connect or being
// refused throws. Otherwise (a `serve` the job reports to by choice) it says so once on `warnings` and returns null:
// the job goes on unreported.
std::unique_ptr<EventStreamClient> connect_event_stream(const std::string& address, const StreamHello& hello,
                                                        std::chrono::milliseconds timeout, bool required,
                                                        std::ostream& warnings);

class StreamEventSink : public core::EventSink {
 public:
  // `stream` may be null (nobody watches); `progress` may be null (not rank 0, or quiet).
  StreamEventSink(int rank, std::unique_ptr<EventStreamClient> stream, std::ostream* progress);

  void on_event(const core::Event& event) override;
  void send(const JobEvent& event);  // rank_up, and the job event from rank 0 under `serve`
  void set_iteration(int iteration) { iteration_ = iteration; }
  bool streaming() const { return stream_ != nullptr; }

 private:
  int rank_;
  int iteration_ = -1;
  std::unique_ptr<EventStreamClient> stream_;
  std::ostream* progress_;
};

}  // namespace hybridshard::service
