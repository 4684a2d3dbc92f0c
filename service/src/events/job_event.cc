#include "hybridshard/service/events/job_event.h"

namespace hybridshard::service {
namespace {

JobEvent of_type(JobEventType type, int rank, double time, int iteration = -1) {
  JobEvent event;
  event.type = type;
  event.engine.time = time;
  event.engine.rank = rank;
  event.engine.iteration = iteration;
  return event;
}

}  // namespace

JobEvent engine_event(const core::Event& engine) {
  JobEvent event;
  event.engine = engine;
  return event;
}

JobEvent job_event(int world_size, nlohmann::json description, double time) {
  JobEvent event = of_type(JobEventType::kJob, -1, time);
  event.world_size = world_size;
  event.description = std::move(description);
  return event;
}

JobEvent rank_up_event(int rank, const std::string& host, long pid, const std::string& device, double time) {
  JobEvent event = of_type(JobEventType::kRankUp, rank, time);
  event.host = host;
  event.pid = pid;
  event.device = device;
  return event;
}

JobEvent rank_down_event(int rank, const std::string& host, const std::string& reason, const std::string& phase,
                         double time, int iteration) {
  JobEvent event = of_type(JobEventType::kRankDown, rank, time, iteration);
  event.host = host;
  event.reason = reason;
  event.phase = phase;
  return event;
}

JobEvent job_end_event(bool ok, const std::string& message, double seconds, double time) {
  JobEvent event = of_type(JobEventType::kJobEnd, -1, time);
  event.ok = ok;
  event.message = message;
  event.seconds = seconds;
  return event;
}

JobEvent heartbeat_event(int rank, double time) { return of_type(JobEventType::kHeartbeat, rank, time); }

}  // namespace hybridshard::service
