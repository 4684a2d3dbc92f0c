#include "hybridshard/service/events/stream_event_sink.h"

#include <iomanip>
#include <ostream>

#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {

std::unique_ptr<EventStreamClient> connect_event_stream(const std::string& address, const StreamHello& hello,
                                                        std::chrono::milliseconds timeout, bool required,
                                                        std::ostream& warnings) {
  if (required) {
    return std::make_unique<EventStreamClient>(address, hello, timeout, std::chrono::milliseconds(500));
  }
  try {
    return std::make_unique<EventStreamClient>(address, hello, timeout, std::chrono::milliseconds(500));
  } catch (const core::Error& error) {
    warnings << "[rank " << hello.rank << "] warning: " << error_message(error)
             << "; the job goes on without reporting its events" << std::endl;
    return nullptr;
  }
}

StreamEventSink::StreamEventSink(int rank, std::unique_ptr<EventStreamClient> stream, std::ostream* progress)
    : rank_(rank), stream_(std::move(stream)), progress_(progress) {}

void StreamEventSink::on_event(const core::Event& event) {
  core::Event stamped = event;
  stamped.rank = rank_;
  if (stamped.iteration < 0) stamped.iteration = iteration_;
  if (stream_) stream_->send_line(event_line(event_to_json(stamped)));
  if (progress_ != nullptr && stamped.type == core::EventType::kPhaseEnd) {
    *progress_ << "[rank " << rank_ << "] iter " << (stamped.iteration + 1) << "  " << std::left << std::setw(8)
               << stamped.phase << std::right << std::fixed << std::setprecision(2) << std::setw(10)
               << stamped.seconds * 1e3 << " ms" << std::endl;
  }
}

void StreamEventSink::send(const JobEvent& event) {
  if (stream_) stream_->send_line(event_line(event));
}

}  // namespace hybridshard::service
