// The job in a few lines: layout, world size, iteration, phases, the last transition's time and bandwidth.
#pragma once

#include <QString>

#include "job_snapshot.h"

namespace hybridshard::gui {

struct JobSummary {
  QString model;       // "llama · 32 layers · bf16"
  QString layout;      // "train tp2 pp2 dp1 -> rollout tp1 dp4"
  QString world;       // "4 ranks (4 up)"
  QString iteration;   // "2 / 3"
  QString state;       // "running", "finished", ...
  QString phases;      // "4 rollout" or "2 train, 2 enter"
  QString last_enter;  // "412 ms" (slowest rank)
  QString last_exit;
  QString bandwidth;          // "11.9 GiB at 29.1 GB/s" (mean per rank)
  double enter_seconds = -1;  // slowest rank's last enter; -1 when none yet
  double exit_seconds = -1;
  double bandwidth_gbps = -1;  // mean over ranks of (network bytes of the last enter / its seconds), GB/s = 1e9 B/s
};

JobSummary summarize(const JobSnapshot& snapshot);

}  // namespace hybridshard::gui
