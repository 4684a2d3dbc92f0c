// One rank of a job: rendezvous, buffers, workloads, and the phase program train -> enter -> rollout -> exit for
// every iteration, with the memory policy deciding what moves where. Runs inside `hybridshard-rank` (under our
// launcher, torchrun, Slurm or mpirun).
#pragma once

#include <iosfwd>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/launch/rank_environment.h"

namespace hybridshard::service {

// Returns the process exit code: 0 done, 1 failed (the error is printed on stderr with the rank), 130 stopped at a
// phase boundary because the launcher asked.
int run_rank(const JobConfig& job, const RankEnvironment& environment, std::ostream& log);

}  // namespace hybridshard::service
