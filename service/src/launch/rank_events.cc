#include "hybridshard/service/launch/rank_events.h"

#include <unistd.h>

#include <filesystem>

#include "hybridshard/service/launch/launcher.h"

namespace hybridshard::service {

std::string reported_job_name(const RankEnvironment& environment, const JobConfig& job) {
  if (!environment.job_name.empty()) return environment.job_name;
  const std::string stem = std::filesystem::path(job.file).stem().string();
  return stem.empty() || stem.front() == '<' ? "hybridshard" : stem;
}

std::unique_ptr<StreamEventSink> open_rank_events(const RankEnvironment& environment, const JobConfig& job,
                                                  std::ostream& log) {
  const int rank = environment.rank;
  StreamHello hello;
  hello.rank = rank;
  hello.pid = static_cast<long>(::getpid());
  hello.world_size = environment.world_size;
  hello.secret = environment.events_secret;
  std::unique_ptr<EventStreamClient> stream;
  bool to_serve = false;
  if (!environment.events_address.empty()) {
    stream = connect_event_stream(environment.events_address, hello, job.runtime.timeout, /*required=*/true, log);
  } else if (!environment.serve_address.empty()) {
    hello.job = reported_job_name(environment, job);
    hello.instance = environment.job_instance;
    stream = connect_event_stream(environment.serve_address, hello, job.runtime.timeout, /*required=*/false, log);
    to_serve = stream != nullptr;
  }
  const bool print_progress = environment.events_address.empty() && rank == 0;
  auto sink = std::make_unique<StreamEventSink>(rank, std::move(stream), print_progress ? &log : nullptr);
  if (to_serve && rank == 0) sink->send(job_event(job, core::wall_time_now()));
  return sink;
}

}  // namespace hybridshard::service
