#include "engine_settings.h"

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdlib>

#include "hybridshard/core/error.h"

namespace hybridshard::python {
namespace {

service::JobConfig load_job(const EngineRequest& request) {
  service::LoadResult loaded = request.job_file.empty()
                                   ? service::load_job_config_from_string(request.job_text, request.job_source)
                                   : service::load_job_config(request.job_file);
  if (!loaded.job) {
    std::string message = "the job has " + std::to_string(loaded.diagnostics.size()) + " problem(s):";
    for (const service::Diagnostic& diagnostic : loaded.diagnostics) message += "\n  " + diagnostic.format();
    HS_THROW(core::ConfigError, message);
  }
  return std::move(*loaded.job);
}

void apply_device(const std::string& device, service::JobConfig& job) {
  if (device == "cpu") {
    job.runtime.backend = service::BackendChoice::kGloo;
    return;
  }
  if (device == "cuda") {
    job.runtime.backend = service::BackendChoice::kNccl;
    return;
  }
  if (device.rfind("cuda:", 0) == 0) {
    int index = -1;
    const char* begin = device.data() + 5;
    const char* end = device.data() + device.size();
    const auto [ptr, ec] = std::from_chars(begin, end, index);
    if (ec == std::errc() && ptr == end && begin != end && index >= 0) {
      job.runtime.backend = service::BackendChoice::kNccl;
      job.runtime.devices = {index};
      return;
    }
  }
  HS_THROW(core::ConfigError, "device '" + device + "' is not cpu, cuda or cuda:N");
}

}  // namespace

EngineSettings resolve_settings(const EngineRequest& request) {
  EngineSettings settings;
  settings.job = load_job(request);
  service::JobConfig& job = settings.job;
  if (request.device) apply_device(*request.device, job);

  const std::optional<service::RankEnvironment> launched = service::rank_environment_from_env();
  service::RankEnvironment& environment = settings.environment;
  if (launched) environment = *launched;
  environment.host = service::this_host_name();

  environment.world_size = request.world_size ? *request.world_size
                           : launched         ? launched->world_size
                                              : job.runtime.world_size;
  if (request.rank) {
    environment.rank = *request.rank;
  } else if (!launched) {
    if (environment.world_size != 1) {
      HS_THROW(core::ConfigError,
               "no rank given: pass rank= (and world_size=), or start the process with a launcher's environment "
               "(RANK and WORLD_SIZE as torchrun sets them, SLURM_PROCID and SLURM_NTASKS, or OMPI_COMM_WORLD_RANK "
               "and OMPI_COMM_WORLD_SIZE)");
    }
    environment.rank = 0;
  }
  if (environment.world_size < 1 || environment.rank < 0 || environment.rank >= environment.world_size) {
    HS_THROW(core::ConfigError, "rank " + std::to_string(environment.rank) + " is outside world_size " +
                                    std::to_string(environment.world_size));
  }
  environment.local_rank = request.local_rank ? *request.local_rank
                           : launched         ? launched->local_rank
                                              : environment.rank;

  // The store: given, else the launcher's, else the job's.
  const bool address_given = request.master_addr.has_value() || request.master_port.has_value();
  environment.master_addr = request.master_addr ? *request.master_addr
                            : launched          ? launched->master_addr
                                                : job.runtime.master_addr;
  environment.master_port = request.master_port ? *request.master_port
                            : launched          ? launched->master_port
                                                : job.runtime.master_port;
  environment.store_hosted_elsewhere = launched && !address_given && launched->store_hosted_elsewhere;
  if (address_given) environment.store_file.clear();  // an address given here means the TCP store there
  if (environment.master_port < 0 || environment.master_port > 65535) {
    HS_THROW(core::ConfigError, "master_port " + std::to_string(environment.master_port) + " is not a port");
  }
  if (environment.master_port == 0 && environment.world_size > 1 && environment.store_file.empty()) {
    HS_THROW(core::ConfigError, "master_port is 0 in a world of " + std::to_string(environment.world_size) +
                                    " ranks: every rank must know where rank 0's store listens (pass master_port=, "
                                    "set MASTER_PORT, or runtime.master_port in the job)");
  }

  // Where events go: a `hybridshard serve`, under the job's name and the run all its ranks share (docs/serve.md).
  // Never our launcher's stream: `hybridshard run` starts hybridshard-rank, not Python.
  environment.events_address.clear();
  const char* serve = std::getenv("HYBRIDSHARD_SERVE");
  environment.serve_address = request.serve ? *request.serve : serve != nullptr ? serve : "";
  const char* name = std::getenv("HYBRIDSHARD_JOB");
  if (request.job_name) {
    environment.job_name = *request.job_name;
  } else if (name != nullptr) {
    environment.job_name = name;
  }
  if (environment.job_instance.empty() || address_given) {
    environment.job_instance = "store:" + environment.master_addr + ":" + std::to_string(environment.master_port);
    if (environment.master_port == 0) {
      // A world of one on a store port picked when it opens: this engine alone is the run.
      static std::atomic<int> engines{0};
      environment.job_instance += ":pid" + std::to_string(::getpid()) + "." + std::to_string(engines++);
    }
  }
  if (request.serve_timeout_seconds < 0) HS_THROW(core::ConfigError, "serve_timeout must not be negative");
  settings.serve_timeout = std::chrono::milliseconds(static_cast<long>(request.serve_timeout_seconds * 1000));
  return settings;
}

}  // namespace hybridshard::python
