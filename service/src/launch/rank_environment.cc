#include "hybridshard/service/launch/rank_environment.h"

#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/host_port.h"

namespace hybridshard::service {
namespace {

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* value = env(name);
  if (value == nullptr) return fallback;
  int parsed = 0;
  const char* end = value + std::char_traits<char>::length(value);
  const auto [ptr, ec] = std::from_chars(value, end, parsed);
  if (ec != std::errc() || ptr != end) {
    HS_THROW(core::ConfigError, std::string("environment variable ") + name + "='" + value + "' is not an integer");
  }
  return parsed;
}

}  // namespace

std::string this_host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

std::optional<RankEnvironment> rank_environment_from_env() {
  RankEnvironment result;
  if (env("RANK") != nullptr && env("WORLD_SIZE") != nullptr) {
    result.rank = env_int("RANK", 0);
    result.world_size = env_int("WORLD_SIZE", 1);
    result.local_rank = env_int("LOCAL_RANK", 0);
    result.launcher = env("HYBRIDSHARD_LAUNCHER") != nullptr ? "hybridshard" : "torchrun";
  } else if (env("SLURM_PROCID") != nullptr && env("SLURM_NTASKS") != nullptr) {
    result.rank = env_int("SLURM_PROCID", 0);
    result.world_size = env_int("SLURM_NTASKS", 1);
    result.local_rank = env_int("SLURM_LOCALID", 0);
    result.launcher = "slurm";
  } else if (env("OMPI_COMM_WORLD_RANK") != nullptr && env("OMPI_COMM_WORLD_SIZE") != nullptr) {
    result.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    result.world_size = env_int("OMPI_COMM_WORLD_SIZE", 1);
    result.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    result.launcher = "mpirun";
  } else {
    return std::nullopt;
  }
  if (result.world_size < 1 || result.rank < 0 || result.rank >= result.world_size) {
    HS_THROW(core::ConfigError, "rank " + std::to_string(result.rank) + " is outside world size " +
                                    std::to_string(result.world_size) + " (launcher: " + result.launcher + ")");
  }
  if (result.local_rank < 0) {
    HS_THROW(core::ConfigError,
             "local rank " + std::to_string(result.local_rank) + " is negative (launcher: " + result.launcher + ")");
  }
  if (const char* addr = env("MASTER_ADDR")) result.master_addr = addr;
  result.master_port = env_int("MASTER_PORT", 29500);
  if (result.master_port < 0 || result.master_port > 65535) {
    HS_THROW(core::ConfigError,
             "environment variable MASTER_PORT=" + std::to_string(result.master_port) + " is not a port (0..65535)");
  }
  // torchrun's agent hosts its own TCPStore at MASTER_PORT; our launcher hosts one too.
  const char* agent_store = env("TORCHELASTIC_USE_AGENT_STORE");
  result.store_hosted_elsewhere =
      result.launcher == "hybridshard" || (agent_store != nullptr && std::string(agent_store) == "True");
  if (const char* events = env("HYBRIDSHARD_EVENTS")) {
    result.events_address = parse_host_port(events, "HYBRIDSHARD_EVENTS").text();
  }
  if (const char* secret = env("HYBRIDSHARD_EVENTS_SECRET")) result.events_secret = secret;
  if (const char* store_file = env("HYBRIDSHARD_STORE_FILE")) {
    if (result.launcher != "hybridshard") {
      HS_THROW(core::ConfigError, std::string("HYBRIDSHARD_STORE_FILE is set but this rank was started by ") +
                                      result.launcher +
                                      ": only `hybridshard run` hands ranks a file store (unset the variable)");
    }
    result.store_file = store_file;
  }
  if (const char* serve = env("HYBRIDSHARD_SERVE"))
    result.serve_address = parse_host_port(serve, "HYBRIDSHARD_SERVE").text();
  if (const char* job = env("HYBRIDSHARD_JOB")) result.job_name = job;
  if (const char* run = env("TORCHELASTIC_RUN_ID")) {
    result.job_instance = std::string("torchrun:") + run;
  } else if (const char* slurm = env("SLURM_JOB_ID")) {
    const char* step = env("SLURM_STEP_ID");
    result.job_instance = std::string("slurm:") + slurm + (step != nullptr ? std::string(".") + step : "");
  } else if (const char* mpi = env("OMPI_MCA_orte_ess_jobid")) {
    result.job_instance = std::string("mpirun:") + mpi;
  } else if (!result.store_file.empty()) {
    result.job_instance = "store:" + result.store_file;
  } else {
    result.job_instance = "store:" + result.master_addr + ":" + std::to_string(result.master_port);
  }
  result.host = this_host_name();
  return result;
}

StoreAddress store_address_of(const RankEnvironment& environment) {
  StoreAddress address;
  address.host = environment.master_addr;
  address.port = environment.master_port;
  address.host_it = environment.store_file.empty() && !environment.store_hosted_elsewhere && environment.rank == 0;
  address.file = environment.store_file;
  return address;
}

}  // namespace hybridshard::service
