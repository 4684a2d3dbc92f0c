// The `hybridshard-rank` program: one rank of a job under our launcher, torchrun, Slurm or mpirun. Its event stream,
// then the rank library: setup (rank_setup.h), the workloads (rank_workloads.h) and the phase schedule
// (phase_schedule.h).
#pragma once

#include <iosfwd>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/launch/rank_environment.h"

namespace hybridshard::service {

// Returns the process exit code: 0 done, 1 failed (the error is printed on stderr with the rank), 130 stopped at a
// phase boundary because the launcher asked.
int run_rank(const JobConfig& job, const RankEnvironment& environment, std::ostream& log);

}  // namespace hybridshard::service
