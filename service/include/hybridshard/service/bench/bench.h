// `hybridshard bench`: nccl-tests-style benchmarks of the weight transition (enter, exit) and the batch
// re-distribution, for the hybridshard and seed strategies side by side, with the hardware bounds measured in the
// same run (a raw collective moving the same bytes, device-to-device, host-to-device and device-to-host copies) and
// the ratios the performance targets are stated in (docs/performance.md).
//
// Three ways to run:
//  - loopback: this process plays rank `rank` of the whole layout alone on one device (the GPU, or the host when
//    there is none); the network is replaced by device copies of the same sizes.
//  - gloo: every rank of the layout on a CPU device, Gloo over 127.0.0.1.
//  - nccl: every rank on its own GPU (world size = number of GPUs used).
// gloo and nccl ranks run as threads of this process or as processes (RankMode): one process per rank is how jobs
// run (`hybridshard run`); threads of one process share one CUDA driver context per device, whose allocations and
// frees the driver serializes across the ranks.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/enter_work.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/core/transition.h"

namespace hybridshard::service::bench {

// What the user asked for, as flags give it (strings and numbers; 0 or "" means "not given": a job file or the
// defaults fill it). resolve_bench_options() turns it into a BenchConfig or reports every problem.
struct BenchOptions {
  // Model: a preset, a job file, and/or explicit shape flags (which override the preset or the job's model).
  std::string model;         // preset (core::model_preset_names()); default "tiny"
  std::string job_file;      // a job YAML (hybridshard::config): model, layouts, bucket, exit policy, timeout
  std::string architecture;  // "llama" | "qwen2"
  std::int64_t num_hidden_layers = 0;
  std::int64_t hidden_size = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t vocab_size = 0;
  std::string dtype;                // "bf16" | "fp16" | "fp32"
  std::string tie_word_embeddings;  // "true" | "false"

  // Layouts. Train: tp, pp, vpp, dp (dp = world / (tp * pp) when only the world is given). Rollout: tp'.
  int world = 0;
  int tp = 0;
  int pp = 0;
  int vpp = 0;
  int dp = 0;
  int rollout_tp = 0;
  int ep = 0;                            // train expert_model_parallel_size (models with experts)
  int etp = 0;                           // train expert_tensor_parallel_size; default tp
  bool rollout_expert_parallel = false;  // vLLM's enable_expert_parallel

  std::string strategy = "both";  // hybridshard | seed | both
  std::string comm = "loopback";  // loopback | gloo | nccl
  std::string device = "auto";    // loopback only: auto | cpu | cuda
  std::string ranks;              // gloo, nccl: thread | process; default process for nccl, thread for gloo
  int rank = 0;                   // loopback only: the rank this process plays

  // nccl-tests flags.
  int iterations = 20;  // -n
  int warmup = 5;       // -w (loopback always warms up at least once: the first run records what peers send)
  int check = 1;        // -c
  std::string json_file;

  std::string exit_policy;        // free | offload | both; default both (or the job's policy)
  std::string release_on_exit;    // driver | cache | both; default both (or the job's memory.release_on_exit)
  std::int64_t bucket_bytes = 0;  // staging bucket; default 256 MiB (or the job's memory.bucket_bytes)
  std::string transport;          // auto | peer | sendrecv; default auto
  // Measuring knobs of the send/recv and peer paths (-1: the default).
  std::int64_t direct_min_bytes = -1;   // core::PlanOptions::direct_min_bytes
  std::int64_t peer_copy_min_row = -1;  // HYBRIDSHARD_PEER_COPY_MIN_ROW of the CUDA devices
  int coalesce_rows = 1;                // core::PlanOptions::coalesce_rows: 0 | 1
  bool work_only = false;               // print the work per enter of the plan and stop: no device, nothing timed

  // Batch re-distribution: rows per train replica (default: 4 per inference data-parallel group) and tokens per row.
  std::int64_t batch_rows = 0;
  std::int64_t batch_cols = 1024;

  std::int64_t cpu_device_memory = 0;  // what a CPU rank reports as device memory; default 64 GiB
  int timeout_ms = 0;                  // every communicator wait; default 120000 (or the job's runtime.timeout)
  std::uint32_t version = 1;           // weight_value version of the train weights

  // Hidden (set by the bench for the processes it starts in RankMode::kProcess): run only rank `run_rank` and write
  // its result into `rank_dir`, the parent's private directory (which holds the store the ranks meet in).
  int run_rank = -1;
  std::string rank_dir;
};

// How the ranks of a gloo or nccl bench run: threads of this process, or one process per rank (this program started
// again with hidden flags; how `hybridshard run` starts a job's ranks).
enum class RankMode { kThread, kProcess };
std::string_view rank_mode_name(RankMode mode);

struct BenchConfig {
  std::string model_name;  // preset or job file or "custom"
  core::ModelSpec spec;
  core::TrainLayout train;
  core::InferenceLayout inference;
  std::vector<core::Strategy> strategies;       // hybridshard first
  std::vector<core::ExitPolicy> exit_policies;  // free first
  std::vector<core::ReleaseOnExit> releases;    // after each exit; driver first
  core::Backend backend = core::Backend::kLoopback;
  RankMode rank_mode = RankMode::kThread;  // gloo, nccl
  bool use_cuda = false;                   // loopback: on the GPU; nccl: always; gloo: never
  int rank = 0;
  int iterations = 20;
  int warmup = 5;
  bool check = true;
  std::string json_file;
  std::int64_t bucket_bytes = std::int64_t{256} << 20;
  core::Transport transport = core::Transport::kAuto;
  std::int64_t direct_min_bytes = core::PlanOptions{}.direct_min_bytes;
  std::int64_t peer_copy_min_row = -1;  // >= 0: set as HYBRIDSHARD_PEER_COPY_MIN_ROW before the devices are made
  bool coalesce_rows = core::PlanOptions{}.coalesce_rows;
  bool work_only = false;
  std::int64_t batch_rows = 0;  // per train replica
  std::int64_t batch_cols = 1024;
  std::int64_t cpu_device_memory = std::int64_t{64} << 30;
  int timeout_ms = 120000;
  std::uint32_t version = 1;
};

// Fills the defaults, reads the job file, checks everything; throws core::ConfigError naming every problem at once.
BenchConfig resolve_bench_options(const BenchOptions& options);

// One row of a phase table (nccl-tests style). Times are the mean over the timed iterations of the slowest rank's
// time; bytes are this rank's (loopback) or the largest of any rank.
struct PhaseRow {
  std::string phase;       // "enter", "exit", "batch.pre", "batch.post"
  std::string strategy;    // "hybridshard", "seed"; "-" for the batch phases
  std::string policy;      // exit policy ("free", "offload"); "-" elsewhere
  std::string release;     // what followed each exit ("driver", "cache"); enter: the release before it; "-" elsewhere
  std::int64_t bytes = 0;  // received over the network per rank (batch phases: the batch bytes the rank ends with)
  double time_us = 0;
  double algbw_gbps = 0;              // bytes / time, GB/s = 1e9 bytes/s
  double busbw_gbps = 0;              // algbw * (n - 1) / n
  std::int64_t peak_extra_bytes = 0;  // enter: device bytes above the start; exit: device bytes still held after
  // exit: device memory the driver (cudaMemGetInfo) counts as used after the exit and its release, above what it
  // counted between phases before any of them (after one enter, exit and release to the driver: loopback's peer
  // data and the device's scratch areas made); beside peak_extra_bytes (tracked), the difference is the cache
  std::int64_t driver_bytes = 0;
  std::int64_t host_bytes = 0;  // host<->device bytes moved
  std::int64_t wrong = 0;       // mismatching elements, summed over ranks and checked iterations
  bool checked = false;         // false: "#wrong" is n/a (check off, or loopback batch data)
};

// A bound measured in the same run.
struct BoundRow {
  std::string name;  // "collective", "d2d.received", "d2d.shard", "h2d.pinned", "d2h.pinned"
  std::string what;  // free text: "all_gather on gloo, bytes of hybridshard enter"
  std::int64_t bytes = 0;
  double time_us = 0;
  double algbw_gbps = 0;
  double busbw_gbps = 0;
};

// A ratio that a target is stated in.
struct RatioRow {
  std::string name;  // "seed/hybridshard enter+exit(free)", ...
  double value = 0;
  std::string op;  // ">=" or "<="
  double target = 0;
  bool met = false;
};

// One kind of engine step inside a phase, from the transition's transfer events (rank 0, or the loopback rank):
// mean time and bytes per timed iteration. The per-step profile behind a phase's time.
struct StepRow {
  std::string strategy;
  std::string phase;      // "enter.free/driver", "exit.free/driver", "exit.offload/cache", ...
  std::string operation;  // the engine's operation name, numbers replaced by '*' ("enter.round*.recv")
  std::string path;       // "network", "host_to_device", "device_to_host", "device_to_device"
  std::int64_t bytes = 0;
  double time_us = 0;
};

// What one enter issues for hybridshard's plan of the measured rank (loopback: --rank; else rank 0) on one data path,
// with or without coalesced pieces, counted from the plan (core::enter_work): nccl-tests-style figures beside the
// times, so that a GPU run shows them next to what they cost.
struct WorkRow {
  core::EnterWork work;
  bool coalesced = true;
  bool measured = false;  // the path and setting this run's enter takes
};

struct BenchReport {
  std::vector<std::string> header;  // "# ..." lines: model, layouts, comm, device, flags
  int world_size = 1;
  std::string ranks_as;  // how the ranks ran: "thread", "process", or "loopback" (one rank in this process)
  std::vector<PhaseRow> rows;
  std::vector<BoundRow> bounds;
  std::vector<RatioRow> ratios;
  std::vector<StepRow> steps;
  std::vector<WorkRow> work;
  std::vector<std::string> notes;  // strategies skipped and why, and other remarks
  std::int64_t total_wrong() const;
};

// Runs the benchmark as configured. Throws core::Error on failures (a rank failing, a timeout).
BenchReport run_bench_report(const BenchConfig& config);

// The nccl-tests-style tables, and the JSON document of the same report.
void print_bench_report(const BenchReport& report, std::ostream& out);
std::string bench_report_json(const BenchReport& report);

// The CLI's entry point: resolves the options, runs, prints the tables to `out`, writes --json. Returns 0 when all
// checks passed, 1 when any #wrong > 0, 2 for bad options (every problem printed to `out`), 3 when the run failed.
int run_bench(const BenchOptions& options, std::ostream& out);

}  // namespace hybridshard::service::bench
