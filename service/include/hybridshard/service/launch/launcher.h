// `hybridshard run` without an external launcher: hosts the rendezvous store and the event stream, starts one
// `hybridshard-rank` process per rank on this host, watches them, prints progress, and ends the job cleanly:
//  - a rank that exits non-zero or dies of a signal, or whose heartbeats stop for runtime.timeout, ends the job:
//    the message names the rank, its host and the phase it was in, every other rank is killed, the exit is 1;
//  - the first Ctrl-C (or SIGTERM, SIGHUP) asks every rank to stop at the next phase boundary (store key "stop"),
//    exit 128 + the signal (130 for Ctrl-C); a second one kills;
//  - a run record that could not be written completely ends the job with exit 1.
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/events/job_event.h"
#include "hybridshard/service/observe/observed_job.h"

namespace hybridshard::service {

struct LaunchOptions {
  JobConfig job;
  std::string job_file;     // what the ranks read; "": the embedded default job (the ranks have it too)
  std::string rank_binary;  // hybridshard-rank
  // The job's fold and record: every event of the ranks (each line decoded once), and the launcher's own (rank_down,
  // job_end), in arrival order. The progress lines and the failure messages read its state. Required.
  ObservedJob* watched = nullptr;
  std::ostream* progress = nullptr;  // progress lines (iteration, phase, time, bytes, memory); nullptr for none
};

struct LaunchResult {
  int exit_code = 0;    // 0 ok, 1 a rank failed (or the record), 128 + signal when stopped by one (130: Ctrl-C)
  std::string message;  // why it ended
  double seconds = 0;
};

LaunchResult run_launcher(const LaunchOptions& options);

// The description a job event carries (model, train and rollout layouts, backend, strategy, iterations, job file).
nlohmann::json job_description(const JobConfig& job);
// The job event of `job` (world_size and its description).
JobEvent job_event(const JobConfig& job, double time);

// Installs the SIGINT/SIGTERM/SIGHUP handlers run_launcher reacts to (call once, before run_launcher); ignores
// SIGXFSZ (a write past a file size limit then fails with EFBIG instead of killing the process).
void install_launcher_signal_handlers();
// How many SIGINT/SIGTERM/SIGHUP the handlers have seen so far, and the last of them (0: none).
int launcher_interrupt_count();
int launcher_last_signal();

}  // namespace hybridshard::service
