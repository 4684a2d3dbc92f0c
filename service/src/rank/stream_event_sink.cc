#include "stream_event_sink.h"

#include <iomanip>
#include <ostream>

#include "hybridshard/service/observe/event_json.h"

namespace hybridshard::service {

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

void StreamEventSink::send(const nlohmann::json& event) {
  if (stream_) stream_->send_line(event_line(event));
}

}  // namespace hybridshard::service
