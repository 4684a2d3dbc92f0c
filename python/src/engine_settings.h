// From what Python passes (a job file or job text, and keyword overrides) to an engine's settings: the job loaded
// and validated by the service's own loader (every problem at once, with file, line and key), and the rank, world
// and store address from the keywords, else the launcher's environment (torchrun, Slurm, mpirun, ours), else the job;
// where events go (`hybridshard serve`, under a job name) likewise.
#pragma once

#include <optional>
#include <string>

#include "engine.h"

namespace hybridshard::python {

struct EngineRequest {
  std::string job_file;  // read when set
  std::string job_text;  // else this YAML (or JSON) text, named `job_source` in messages
  std::string job_source = "<keyword arguments>";
  std::optional<std::string> device;  // "cpu" (Gloo), "cuda" or "cuda:N" (NCCL): overrides runtime.backend/devices
  std::optional<int> rank;
  std::optional<int> world_size;
  std::optional<int> local_rank;
  std::optional<std::string> master_addr;
  std::optional<int> master_port;
  std::optional<std::string> serve;     // "host:port" of `hybridshard serve`; "" for none; unset: HYBRIDSHARD_SERVE
  std::optional<std::string> job_name;  // the job's name under serve; unset: HYBRIDSHARD_JOB, else the job file's name
  double serve_timeout_seconds = 3;
};

// Throws core::ConfigError listing every problem (the job's diagnostics, a rank or port that is missing or out of
// range, a device that is not cpu/cuda[:N]).
EngineSettings resolve_settings(const EngineRequest& request);

}  // namespace hybridshard::python
