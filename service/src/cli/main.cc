// hybridshard: validate, plan, run, export and bench jobs that move LLM weights between the training layout and
// the inference layout.
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "export_command.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/service/bench/bench.h"
#include "hybridshard/service/bench/bench_cli.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/config/memory_plan.h"
#include "hybridshard/service/launch/launcher.h"
#include "hybridshard/service/serve/observer.h"
#include "serve_command.h"

namespace {

using namespace hybridshard;
using namespace hybridshard::service;

constexpr int kExitInvalid = 2;

// Loads the job (or the embedded default when `path` is empty) for `scope`; prints every problem (and warning) and
// returns nullopt when there was a problem.
std::optional<JobConfig> load_or_report(const std::string& path, ValidationScope scope = ValidationScope::kRun) {
  LoadResult loaded = path.empty() ? load_job_config_from_string(default_job_yaml(), "<embedded default job>", scope)
                                   : load_job_config(path, scope);
  for (const Diagnostic& diagnostic : loaded.diagnostics) std::cerr << diagnostic.format() << "\n";
  return loaded.job;
}

std::filesystem::path sibling_binary(const std::string& name) {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::filesystem::path(name) : self.parent_path() / name;
}

int command_validate(const std::string& path) {
  std::optional<JobConfig> job = load_or_report(path);
  if (!job) return kExitInvalid;
  // What only reading every weight tells: NaN or Inf in the checkpoint (the job would train and serve garbage).
  if (!job->model.checkpoint.empty()) {
    const std::vector<std::string> non_finite = HfCheckpoint::open(job->model.checkpoint).non_finite_weights();
    for (const std::string& problem : non_finite) std::cerr << path << ": error: model.checkpoint: " << problem << "\n";
    if (!non_finite.empty()) return kExitInvalid;
  }
  std::cout << path << ": ok (" << job->runtime.world_size << " ranks, train tp " << job->train.tp << " pp "
            << job->train.pp << " vpp " << job->train.vpp << " dp " << job->train.dp << " -> rollout tp "
            << job->rollout.tp << ")\n";
  return 0;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// `plan --timing`: what planning costs on this machine, the whole job's plan and one rank's own (from scratch, as a
// rank computes it at start-up), and the peak resident memory of this process.
void print_plan_timing(const JobConfig& job, double whole_seconds, std::ostream& out) {
  const int rank = job.runtime.world_size - 1;
  const auto start = std::chrono::steady_clock::now();
  const core::RankPlan own =
      core::make_rank_plan(job.model.spec, job.train, job.rollout, rank, core::PlanOptions{job.memory.bucket_bytes});
  const double reshard_seconds = seconds_since(start);
  const auto memory_start = std::chrono::steady_clock::now();
  make_rank_memory_plan(job, rank);
  const double memory_seconds = seconds_since(memory_start);
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  char line[256];
  std::snprintf(line, sizeof line,
                "timing: whole plan %.3f s; rank %d's own reshard plan %.1f ms (%zu peers read), its memory plan %.1f "
                "ms; peak resident %.0f MB\n",
                whole_seconds, rank, 1e3 * reshard_seconds, own.peer_reads.size(), 1e3 * memory_seconds,
                static_cast<double>(usage.ru_maxrss) / 1024.0);
  out << line;
}

int command_plan(const std::string& path, bool timing) {
  std::optional<JobConfig> job = load_or_report(path);
  if (!job) return kExitInvalid;
  const auto start = std::chrono::steady_clock::now();
  const MemoryPlan plan = make_memory_plan(*job);
  const double whole_seconds = seconds_since(start);
  print_memory_plan(plan, std::cout);
  if (timing) print_plan_timing(*job, whole_seconds, std::cout);
  return plan.fits ? 0 : 1;
}

struct RunFlags {
  std::string job_file;  // "" (not given): the embedded default job
  std::string metrics_listen;
  bool metrics_listen_given = false;
  std::string record;
  bool force = false;  // replace an existing record
  double linger_seconds = 0;
  bool quiet = false;
};

int command_run(const RunFlags& flags) {
  std::optional<JobConfig> job = load_or_report(flags.job_file);
  if (!job) return kExitInvalid;
  if (flags.metrics_listen_given) job->metrics.listen = flags.metrics_listen;
  if (!flags.record.empty()) job->metrics.record = flags.record;

  // Refuse a job whose plan does not fit the device memory, when that memory is known here (CPU ranks, or
  // runtime.device_memory given): better than ranks failing one allocation at a time.
  // The plan (one per class of ranks) also gives the predicted enter the metrics show beside the measured one.
  const MemoryPlan plan = make_memory_plan(*job);
  if (job->runtime.backend == BackendChoice::kGloo || job->runtime.device_memory > 0) {
    if (!plan.fits) {
      print_memory_plan(plan, std::cerr);
      std::cerr << "hybridshard: error: " << job->file << ": the job does not fit the device memory ("
                << (plan.device_is_cpu ? "runtime.cpu_device_memory" : "runtime.device_memory")
                << "); see the plan above\n";
      return 1;
    }
  }

  // Refused here, before any rank starts: a record path that is a directory, device, FIFO or an earlier record.
  ObserverOptions observer_setup = observer_options(job->metrics);
  observer_setup.record_options.replace = flags.force;
  Observer observer(observer_setup);
  if (const std::string moved = observer.job().stale_record_moved_to(); !moved.empty()) {
    std::cerr << "hybridshard: " << observer.record_path()
              << ".partial was left by a run that did not finish; moved to " << moved << "\n";
  }
  JobEvent opened = job_event(*job, core::wall_time_now());
  if (plan.predicted_enter_seconds > 0) opened.description["predicted_enter_seconds"] = plan.predicted_enter_seconds;
  observer.on_event(opened);
  if (!flags.quiet) {
    if (!observer.url().empty()) {
      std::cout << "hybridshard: metrics " << observer.url() << "/metrics, status " << observer.url() << "/status\n";
    }
    if (!observer.record_path().empty()) std::cout << "hybridshard: recording to " << observer.record_path() << "\n";
  }

  LaunchOptions options;
  options.job = *job;
  options.job_file = flags.job_file;
  options.rank_binary = sibling_binary("hybridshard-rank").string();
  options.progress = flags.quiet ? nullptr : &std::cout;
  options.watched = &observer.job();
  install_launcher_signal_handlers();
  const LaunchResult result = run_launcher(options);
  std::cout << "hybridshard: " << (result.exit_code == 0 ? "done" : "failed") << ": " << result.message << " ("
            << result.seconds << " s)" << std::endl;
  if (flags.linger_seconds > 0 && !observer.url().empty()) {
    std::cout << "hybridshard: serving " << observer.url() << " for " << flags.linger_seconds
              << " s more (Ctrl-C ends it)" << std::endl;
    const int interrupts = launcher_interrupt_count();
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(flags.linger_seconds);
    while (std::chrono::steady_clock::now() < until && launcher_interrupt_count() == interrupts) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  observer.close();
  return result.exit_code;
}

int command_export(const std::string& path, const std::string& out_dir) {
  std::optional<JobConfig> job = load_or_report(path, ValidationScope::kExport);
  if (!job) return kExitInvalid;
  const int written = export_inference_shards(*job, out_dir, std::cout);
  std::cout << "hybridshard: exported " << written << " inference shards to " << out_dir << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes its socket first (a failed rank, a scraper, a watcher) must surface as an error on the write,
  // never as a death by SIGPIPE: that rank would then be named as the cause. Inherited by the ranks we start.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{
      "hybridshard: moves LLM weights between the training layout (Megatron-Core) and the inference "
      "layout (vLLM) on the same GPUs, and shows where every byte is"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("hybridshard ") + HYBRIDSHARD_VERSION);

  std::string job_file;
  CLI::App* validate = app.add_subcommand("validate", "Check a job file; every problem as FILE:LINE:COL: error: key");
  validate->add_option("job", job_file, "Job file (YAML)")->required();

  CLI::App* plan = app.add_subcommand("plan",
                                      "Per rank and phase: bytes of each buffer kind on GPU and host, the "
                                      "peak, the network bytes of enter; whether it fits");
  plan->add_option("job", job_file, "Job file (YAML)")->required();
  bool plan_timing = false;
  plan->add_flag("--timing", plan_timing, "Also print what planning cost: the whole plan, one rank's own, peak memory");

  RunFlags run_flags;
  CLI::App* run = app.add_subcommand("run",
                                     "Run a job: one process per rank on this host (or join as one rank "
                                     "under torchrun / Slurm / mpirun: use hybridshard-rank)");
  run->add_option("job", run_flags.job_file, "Job file (YAML); none: the embedded default (4 CPU ranks, tiny model)");
  run->add_option("--metrics-listen", run_flags.metrics_listen, "HOST:PORT for /metrics and /status ('' disables)");
  run->add_option("--record", run_flags.record,
                  "Write every event to this run record (JSON lines); a regular file that does not exist yet");
  run->add_flag("--force", run_flags.force, "Replace an existing record at --record (never a directory or device)");
  run->add_option("--linger", run_flags.linger_seconds, "Keep serving metrics this many seconds after the job ends")
      ->check(CLI::Validator(
          [](std::string& text) {
            double seconds = 0;
            try {
              seconds = std::stod(text);
            } catch (const std::exception&) {
              return std::string("'" + text + "' is not a number of seconds");
            }
            return std::isfinite(seconds) && seconds >= 0 && seconds <= 1e9
                       ? std::string()
                       : "'" + text + "' is not a number of seconds from 0 to 1e9";
          },
          "SECONDS"));
  run->add_flag("--quiet", run_flags.quiet, "No progress lines");

  std::string out_dir;
  CLI::App* export_command = app.add_subcommand("export",
                                                "Run enter and write the first inference tp group's "
                                                "shards as DIR/rank-<r>.safetensors (vLLM names)");
  export_command->add_option("job", job_file, "Job file (YAML)")->required();
  export_command->add_option("--out", out_dir, "Output directory")->required();

  ServeFlags serve_flags;
  CLI::App* serve = app.add_subcommand("serve",
                                       "Watch jobs started by any launcher (torchrun, Slurm, mpirun, Python): their "
                                       "ranks report here (HYBRIDSHARD_SERVE, HYBRIDSHARD_JOB); /metrics, /status, "
                                       "/jobs and a record per job");
  serve->add_option("--listen", serve_flags.listen, "HOST:PORT for /metrics, /status and /jobs")->capture_default_str();
  serve->add_option("--events", serve_flags.events, "HOST:PORT the ranks stream their events to")
      ->capture_default_str();
  serve->add_option("--record", serve_flags.record_dir, "Write each job's record to DIR/<job>-<UTC start>.jsonl");
  serve->add_option("--retention", serve_flags.retention_seconds, "Seconds an ended job stays visible")
      ->capture_default_str();
  serve->add_option("--timeout", serve_flags.timeout_seconds, "Seconds of silence before a rank is marked down")
      ->capture_default_str();
  serve->add_flag("--quiet", serve_flags.quiet, "No banner");

  bench::BenchOptions bench_options;
  CLI::App* bench_command = app.add_subcommand("bench",
                                               "Benchmark enter, exit and batch re-distribution against the "
                                               "seed and the hardware bounds (nccl-tests style)");
  bench::add_bench_flags(*bench_command, bench_options);

  CLI11_PARSE(app, argc, argv);
  // A file name given as "" is a mistake (an unset shell variable), never "use the default".
  for (const auto& [command, option] :
       {std::pair{validate, "job"}, std::pair{plan, "job"}, std::pair{run, "job"}, std::pair{export_command, "job"},
        std::pair{export_command, "--out"}, std::pair{run, "--record"}}) {
    const CLI::Option* given = command->get_option(option);
    if (command->parsed() && given->count() > 0 && given->as<std::string>().empty()) {
      std::cerr << "hybridshard " << command->get_name() << ": error: " << option
                << " is an empty file name; name a file\n";
      return kExitInvalid;
    }
  }
  try {
    if (validate->parsed()) return command_validate(job_file);
    if (plan->parsed()) return command_plan(job_file, plan_timing);
    if (run->parsed()) {
      run_flags.metrics_listen_given = run->count("--metrics-listen") > 0;
      return command_run(run_flags);
    }
    if (export_command->parsed()) return command_export(job_file, out_dir);
    if (serve->parsed()) return run_serve(serve_flags);
    if (bench_command->parsed()) return bench::run_bench(bench_options, std::cout);
  } catch (const std::exception& error) {
    std::cerr << "hybridshard: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
