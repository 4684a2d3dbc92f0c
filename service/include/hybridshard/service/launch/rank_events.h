// Where a rank's events go: our launcher's event stream (HYBRIDSHARD_EVENTS: required), a `hybridshard serve`
// (HYBRIDSHARD_SERVE with HYBRIDSHARD_JOB: by choice, so an unreachable or refusing serve is said once and the job
// goes on), or nowhere. Without our launcher, rank 0 prints phase progress itself.
#pragma once

#include <iosfwd>
#include <memory>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/events/stream_event_sink.h"
#include "hybridshard/service/launch/rank_environment.h"

namespace hybridshard::service {

// The name a job reports under to `serve`: HYBRIDSHARD_JOB, else the job file's name without directory and extension.
std::string reported_job_name(const RankEnvironment& environment, const JobConfig& job);

// Connects the rank's event stream (see above) and returns its sink. Under `serve`, rank 0 sends the job event first.
// Throws what EventStreamClient throws only for our launcher's stream.
std::unique_ptr<StreamEventSink> open_rank_events(const RankEnvironment& environment, const JobConfig& job,
                                                  std::ostream& log);

}  // namespace hybridshard::service
