// `hybridshard serve`: a long-running watcher that ranks of any job (torchrun, Slurm, mpirun, the Python package)
// stream their events to, serving /metrics (a `job` label on every series), /status?job=NAME, /jobs and a record
// per job. Links no torch_cuda (it serves HTTP: see docs/architecture.md). docs/serve.md.
#pragma once

#include <string>

namespace hybridshard::service {

struct ServeFlags {
  std::string listen = "127.0.0.1:9464";  // HTTP
  std::string events = "127.0.0.1:9465";  // the event stream ranks report to (HYBRIDSHARD_SERVE)
  std::string record_dir;                 // "" for no records
  double retention_seconds = 3600;        // an ended job stays visible this long
  double timeout_seconds = 120;           // a connected rank silent this long is marked down
  bool quiet = false;
};

// Serves until SIGINT or SIGTERM; returns the exit code. Throws core::Error naming what cannot be set up.
int run_serve(const ServeFlags& flags);

}  // namespace hybridshard::service
