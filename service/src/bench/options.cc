// BenchOptions -> BenchConfig: defaults, the job file, shape overrides, every problem reported at once.
#include <algorithm>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/bench/bench.h"

#if defined(HYBRIDSHARD_BENCH_WITH_JOB_CONFIG)
#include "hybridshard/service/config/job_config.h"
#endif

namespace hybridshard::service::bench {
namespace {

std::string join_names(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& name : names) {
    if (!joined.empty()) joined += ", ";
    joined += name;
  }
  return joined;
}

void apply_shape_overrides(const BenchOptions& o, core::ModelSpec& spec, bool& custom,
                           std::vector<std::string>& problems) {
  if (!o.architecture.empty()) {
    if (auto architecture = core::parse_architecture(o.architecture)) {
      spec.architecture = *architecture;
    } else {
      problems.push_back("--architecture: '" + o.architecture +
                         "' is not llama, qwen2, qwen3, qwen2_moe, qwen3_moe or mixtral");
    }
    custom = true;
  }
  const auto override_int = [&](std::int64_t value, std::int64_t& field, const char* flag) {
    if (value < 0) problems.push_back(std::string(flag) + ": must be positive, got " + std::to_string(value));
    if (value > 0) {
      field = value;
      custom = true;
    }
  };
  override_int(o.num_hidden_layers, spec.num_hidden_layers, "--layers");
  override_int(o.hidden_size, spec.hidden_size, "--hidden-size");
  override_int(o.num_attention_heads, spec.num_attention_heads, "--heads");
  override_int(o.num_key_value_heads, spec.num_key_value_heads, "--kv-heads");
  override_int(o.intermediate_size, spec.intermediate_size, "--intermediate-size");
  override_int(o.vocab_size, spec.vocab_size, "--vocab-size");
  if (!o.dtype.empty()) {
    if (auto dtype = core::parse_dtype(o.dtype)) {
      spec.dtype = *dtype;
    } else {
      problems.push_back("--dtype: '" + o.dtype + "' is not bf16, fp16 or fp32");
    }
  }
  if (!o.tie_word_embeddings.empty()) {
    if (o.tie_word_embeddings == "true" || o.tie_word_embeddings == "1") {
      spec.tie_word_embeddings = true;
    } else if (o.tie_word_embeddings == "false" || o.tie_word_embeddings == "0") {
      spec.tie_word_embeddings = false;
    } else {
      problems.push_back("--tie-word-embeddings: '" + o.tie_word_embeddings + "' is not true or false");
    }
    custom = true;
  }
}

// The model: from --job (which also brings layouts and memory settings) or a preset, then shape overrides. Returns
// whether the layouts came from the job.
bool resolve_model(const BenchOptions& o, BenchConfig& config, std::vector<std::string>& problems) {
  bool have_model = false;
  bool have_layout_from_job = false;
  if (!o.job_file.empty()) {
#if defined(HYBRIDSHARD_BENCH_WITH_JOB_CONFIG)
    const LoadResult loaded = load_job_config(o.job_file);
    if (!loaded.job) {
      for (const Diagnostic& diagnostic : loaded.diagnostics) problems.push_back(diagnostic.format());
      if (loaded.diagnostics.empty()) problems.push_back("--job " + o.job_file + ": could not be read");
    } else {
      const JobConfig& job = *loaded.job;
      config.model_name = o.job_file;
      config.spec = job.model.spec;
      config.train = job.train;
      config.inference = job.rollout;
      config.bucket_bytes = job.memory.bucket_bytes;
      config.transport = job.runtime.transport;
      config.exit_policies = {job.memory.exit_policy};
      config.releases = {job.memory.release_on_exit};
      config.cpu_device_memory = job.runtime.cpu_device_memory;
      config.timeout_ms = static_cast<int>(job.runtime.timeout.count());
      config.version = job.model.seed;
      have_model = true;
      have_layout_from_job = true;
    }
#else
    problems.push_back("--job " + o.job_file + ": this build has no job-file support (hybridshard::config)");
#endif
  }
  if (!o.model.empty()) {
    if (have_model) {
      problems.push_back("--model " + o.model + " and --job " + o.job_file + ": give one of them");
    } else if (auto preset = core::model_preset(o.model)) {
      config.spec = *preset;
      config.model_name = o.model;
      have_model = true;
    } else {
      problems.push_back("--model: unknown preset '" + o.model + "'; known: " + join_names(core::model_preset_names()));
    }
  }
  if (!have_model && o.job_file.empty() && o.model.empty()) {
    if (auto preset = core::model_preset("tiny")) {
      config.spec = *preset;
    }
    config.model_name = "tiny";
  }
  bool custom = false;
  apply_shape_overrides(o, config.spec, custom, problems);
  if (custom) config.model_name += " (shape overridden)";
  for (const auto& problem : config.spec.validate()) problems.push_back("model: " + problem.message);

  return have_layout_from_job;
}

// Layouts: flags override the job; dp follows from the world when not given.
void resolve_layouts(const BenchOptions& o, bool have_layout_from_job, BenchConfig& config,
                     std::vector<std::string>& problems) {
  for (const auto& [value, flag] :
       {std::pair{o.world, "--world"}, std::pair{o.tp, "--tp"}, std::pair{o.pp, "--pp"}, std::pair{o.vpp, "--vpp"},
        std::pair{o.dp, "--dp"}, std::pair{o.rollout_tp, "--rollout-tp"}, std::pair{o.ep, "--ep"},
        std::pair{o.etp, "--etp"}}) {
    if (value < 0) problems.push_back(std::string(flag) + ": must be positive, got " + std::to_string(value));
  }
  if (o.tp > 0) config.train.tp = o.tp;
  if (o.pp > 0) config.train.pp = o.pp;
  if (o.vpp > 0) config.train.vpp = o.vpp;
  if (o.ep > 0) config.train.ep = o.ep;
  if (o.etp > 0) config.train.etp = o.etp;
  if (o.dp > 0) {
    config.train.dp = o.dp;
  } else if (o.world > 0) {
    const int tp_pp = config.train.tp * config.train.pp;
    if (o.world % tp_pp != 0) {
      problems.push_back("--world " + std::to_string(o.world) +
                         " is not a multiple of tp * pp = " + std::to_string(tp_pp));
    } else {
      config.train.dp = o.world / tp_pp;
    }
  } else if (!have_layout_from_job) {
    config.train.dp = 1;
  }
  if (o.world > 0 && config.train.world_size() != o.world) {
    problems.push_back("--world " + std::to_string(o.world) +
                       " differs from tp * pp * dp = " + std::to_string(config.train.world_size()));
  }
  if (o.rollout_tp > 0) config.inference.tp = o.rollout_tp;
  if (o.rollout_expert_parallel) config.inference.expert_parallel = true;
  config.inference.world_size = config.train.world_size();
  if (config.inference.tp > 0 && config.inference.world_size % config.inference.tp != 0) {
    problems.push_back("--rollout-tp " + std::to_string(config.inference.tp) + " does not divide the world size " +
                       std::to_string(config.inference.world_size));
  }
  if (problems.empty()) {
    for (const auto& problem : config.train.validate(config.spec)) problems.push_back("train: " + problem.message);
    for (const auto& problem : config.inference.validate(config.spec)) {
      problems.push_back("rollout: " + problem.message);
    }
  }
}

// How the ranks run (gloo, nccl): threads or processes; and the hidden flags of a rank process.
void resolve_rank_mode(const BenchOptions& o, BenchConfig& config, std::vector<std::string>& problems) {
  const bool loopback = config.backend == core::Backend::kLoopback;
  if (o.ranks.empty()) {
    // NCCL: as jobs run (one process per rank). Gloo: threads, which start in milliseconds (CI runs Gloo benches).
    config.rank_mode = config.backend == core::Backend::kNccl ? RankMode::kProcess : RankMode::kThread;
  } else if (o.ranks == "thread") {
    config.rank_mode = RankMode::kThread;
  } else if (o.ranks == "process") {
    config.rank_mode = RankMode::kProcess;
  } else {
    problems.push_back("--ranks: '" + o.ranks + "' is not thread or process");
  }
  if (!o.ranks.empty() && loopback) {
    problems.push_back("--ranks " + o.ranks +
                       ": loopback runs its one rank in this process (--ranks is for gloo and "
                       "nccl)");
  }
  if (o.run_rank >= 0 || !o.rank_dir.empty()) {
    if (loopback) problems.push_back("--run-rank: a rank process of a gloo or nccl bench, not of loopback");
    if (o.run_rank < 0 || o.run_rank >= config.train.world_size()) {
      problems.push_back("--run-rank " + std::to_string(o.run_rank) + " is outside the world of " +
                         std::to_string(config.train.world_size()) + " ranks");
    }
    if (o.rank_dir.empty()) problems.push_back("--run-rank: --rank-dir is missing");
  }
}

// Strategies, exit policies, communicator, device and the loopback rank.
void resolve_run(const BenchOptions& o, BenchConfig& config, std::vector<std::string>& problems) {
  if (o.strategy == "both" || o.strategy.empty()) {
    config.strategies = {core::Strategy::kHybridshard, core::Strategy::kSeed};
  } else if (o.strategy == "hybridshard") {
    config.strategies = {core::Strategy::kHybridshard};
  } else if (o.strategy == "seed") {
    config.strategies = {core::Strategy::kSeed};
  } else {
    problems.push_back("--strategy: '" + o.strategy + "' is not hybridshard, seed or both");
  }
  if (o.exit_policy == "both" || (o.exit_policy.empty() && config.exit_policies.empty())) {
    config.exit_policies = {core::ExitPolicy::kFree, core::ExitPolicy::kOffload};
  } else if (o.exit_policy == "free") {
    config.exit_policies = {core::ExitPolicy::kFree};
  } else if (o.exit_policy == "offload") {
    config.exit_policies = {core::ExitPolicy::kOffload};
  } else if (!o.exit_policy.empty()) {
    problems.push_back("--exit-policy: '" + o.exit_policy + "' is not free, offload or both");
  }
  if (o.release_on_exit == "both" || (o.release_on_exit.empty() && config.releases.empty())) {
    config.releases = {core::ReleaseOnExit::kDriver, core::ReleaseOnExit::kCache};
  } else if (const auto release = core::parse_release_on_exit(o.release_on_exit)) {
    config.releases = {*release};
  } else if (!o.release_on_exit.empty()) {
    problems.push_back("--release-on-exit: '" + o.release_on_exit + "' is not driver, cache or both");
  }
  if (o.comm == "loopback" || o.comm.empty()) {
    config.backend = core::Backend::kLoopback;
  } else if (o.comm == "gloo") {
    config.backend = core::Backend::kGloo;
    if (!core::gloo_available()) problems.push_back("--comm gloo: this build has no Gloo (c10d ProcessGroupGloo)");
  } else if (o.comm == "nccl") {
    config.backend = core::Backend::kNccl;
    // --work-only counts from the plan alone: the GPUs need not be here.
    if (!o.work_only && core::cuda_device_count() < config.train.world_size()) {
      problems.push_back("--comm nccl: world size " + std::to_string(config.train.world_size()) +
                         " needs as many GPUs; " + std::to_string(core::cuda_device_count()) +
                         " found (use --comm loopback for one GPU)");
    }
  } else {
    problems.push_back("--comm: '" + o.comm + "' is not loopback, gloo or nccl");
  }
  if (o.device == "auto" || o.device.empty()) {
    config.use_cuda = config.backend == core::Backend::kNccl ||
                      (config.backend == core::Backend::kLoopback && core::cuda_available());
  } else if (o.device == "cuda") {
    config.use_cuda = true;
    if (config.backend == core::Backend::kGloo) problems.push_back("--device cuda: Gloo ranks run on the CPU");
    if (!core::cuda_available()) problems.push_back("--device cuda: no CUDA device (or a build without CUDA)");
  } else if (o.device == "cpu") {
    config.use_cuda = false;
    if (config.backend == core::Backend::kNccl) problems.push_back("--device cpu: NCCL ranks run on GPUs");
  } else {
    problems.push_back("--device: '" + o.device + "' is not auto, cpu or cuda");
  }
  resolve_rank_mode(o, config, problems);
  config.rank = o.rank;
  if (o.rank < 0 || o.rank >= config.train.world_size()) {
    problems.push_back("--rank " + std::to_string(o.rank) + " is outside the world of " +
                       std::to_string(config.train.world_size()) + " ranks");
  }
}

// Measurement flags: iterations, warmup, check, JSON file, bucket, CPU device size, timeout, weight version.
void resolve_measurement(const BenchOptions& o, BenchConfig& config, std::vector<std::string>& problems) {
  if (o.iterations < 1) problems.push_back("-n: at least 1 iteration, got " + std::to_string(o.iterations));
  if (o.warmup < 0) problems.push_back("-w: cannot be negative, got " + std::to_string(o.warmup));
  if (o.check != 0 && o.check != 1) problems.push_back("-c: 0 or 1, got " + std::to_string(o.check));
  config.iterations = o.iterations;
  config.warmup = o.warmup;
  config.check = o.check == 1;
  config.json_file = o.json_file;
  if (o.bucket_bytes < 0) problems.push_back("--bucket: cannot be negative, got " + std::to_string(o.bucket_bytes));
  if (o.bucket_bytes > 0) config.bucket_bytes = o.bucket_bytes;
  if (!o.transport.empty()) {
    if (const auto transport = core::parse_transport(o.transport)) {
      config.transport = *transport;
    } else {
      problems.push_back("--transport: '" + o.transport + "' is not auto, peer or sendrecv");
    }
  }
  if (o.direct_min_bytes < -1) {
    problems.push_back("--direct-min: cannot be negative, got " + std::to_string(o.direct_min_bytes));
  }
  if (o.direct_min_bytes >= 0) config.direct_min_bytes = o.direct_min_bytes;
  if (o.peer_copy_min_row < -1) {
    problems.push_back("--peer-copy-min-row: cannot be negative, got " + std::to_string(o.peer_copy_min_row));
  }
  config.peer_copy_min_row = std::max<std::int64_t>(-1, o.peer_copy_min_row);
  if (o.coalesce_rows != 0 && o.coalesce_rows != 1) {
    problems.push_back("--coalesce-rows: must be 0 or 1, got " + std::to_string(o.coalesce_rows));
  }
  config.coalesce_rows = o.coalesce_rows != 0;
  config.work_only = o.work_only;
  if (o.cpu_device_memory < 0) {
    problems.push_back("--cpu-device-memory: cannot be negative, got " + std::to_string(o.cpu_device_memory));
  }
  if (o.cpu_device_memory > 0) config.cpu_device_memory = o.cpu_device_memory;
  if (o.timeout_ms < 0) problems.push_back("--timeout-ms: cannot be negative, got " + std::to_string(o.timeout_ms));
  if (o.timeout_ms > 0) config.timeout_ms = o.timeout_ms;
  if (o.job_file.empty()) config.version = o.version;
}

// Batch: the global batch (dp replicas x rows) must split evenly over the inference data-parallel groups.
void resolve_batch(const BenchOptions& o, BenchConfig& config, std::vector<std::string>& problems) {
  if (config.inference.tp > 0 && config.inference.world_size % config.inference.tp == 0 && config.train.dp > 0) {
    const std::int64_t groups = config.inference.world_size / config.inference.tp;
    const std::int64_t rows_unit = groups / std::gcd(groups, static_cast<std::int64_t>(config.train.dp));
    config.batch_rows = o.batch_rows > 0 ? o.batch_rows : 4 * rows_unit;
    if (o.batch_rows < 0) problems.push_back("--batch-rows: cannot be negative");
    if ((config.batch_rows * config.train.dp) % groups != 0) {
      problems.push_back("--batch-rows " + std::to_string(config.batch_rows) + ": dp * rows = " +
                         std::to_string(config.batch_rows * config.train.dp) + " does not split over " +
                         std::to_string(groups) + " inference groups; use a multiple of " + std::to_string(rows_unit));
    }
  }
  if (o.batch_cols < 1) problems.push_back("--batch-cols: at least 1, got " + std::to_string(o.batch_cols));
  config.batch_cols = o.batch_cols;
}

}  // namespace

std::string_view rank_mode_name(RankMode mode) { return mode == RankMode::kProcess ? "process" : "thread"; }

BenchConfig resolve_bench_options(const BenchOptions& o) {
  BenchConfig config;
  std::vector<std::string> problems;
  const bool have_layout_from_job = resolve_model(o, config, problems);
  resolve_layouts(o, have_layout_from_job, config, problems);
  resolve_run(o, config, problems);
  resolve_measurement(o, config, problems);
  resolve_batch(o, config, problems);
  if (!problems.empty()) {
    std::ostringstream message;
    message << "hybridshard bench: " << problems.size() << (problems.size() == 1 ? " problem" : " problems")
            << " with the options:";
    for (const std::string& problem : problems) message << "\n  " << problem;
    HS_THROW(core::ConfigError, message.str());
  }
  return config;
}

}  // namespace hybridshard::service::bench
