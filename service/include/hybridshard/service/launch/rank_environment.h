// Who this process is in the job: from our own launcher, torchrun, Slurm or mpirun (their environment variables).
#pragma once

#include <optional>
#include <string>

#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service {

struct RankEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // The store is hosted elsewhere (our launcher, torchrun's agent); otherwise rank 0 hosts it.
  bool store_hosted_elsewhere = false;
  std::string store_file;      // HYBRIDSHARD_STORE_FILE: our launcher's file store (then no TCP store at all)
  std::string events_secret;   // HYBRIDSHARD_EVENTS_SECRET: the job's secret for its event stream ("" when none)
  std::string events_address;  // HYBRIDSHARD_EVENTS: our launcher's event stream ("" under external launchers)
  std::string serve_address;   // HYBRIDSHARD_SERVE: a `hybridshard serve` to report to ("" for none)
  std::string job_name;        // HYBRIDSHARD_JOB: the job's name under serve ("" : the job file's name)
  std::string job_instance;    // what all ranks of this run share: the launcher's run id (torchrun, Slurm, mpirun)
                               // or the store address
  std::string launcher;        // "hybridshard", "torchrun", "slurm", "mpirun"
  std::string host;            // this host's name
};

// Reads the environment. Returns nullopt when no launcher variables are set; an inconsistent environment (rank out
// of range, non-numeric values) throws core::ConfigError naming the variable.
std::optional<RankEnvironment> rank_environment_from_env();

std::string this_host_name();

// Where this rank meets its peers: our launcher's file store, else the TCP store at MASTER_ADDR:MASTER_PORT that rank 0
// hosts unless a launcher's agent does.
StoreAddress store_address_of(const RankEnvironment& environment);

}  // namespace hybridshard::service
