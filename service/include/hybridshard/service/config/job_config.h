// A job, as read from its YAML file. Every field has a default; validate() and load_job_config() report every
// problem at once, each with the file, line, column and key path. docs/configuration.md lists the keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "hybridshard/core/device.h"
#include "hybridshard/core/enter_time.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/core/transition.h"

namespace hybridshard::service {

enum class Severity : std::uint8_t {
  kError,    // the job is refused
  kWarning,  // the job loads (a deprecated key name, ...)
};

// One problem in a job file: "job.yaml:12:5: error: train.tensor_model_parallel_size: 3 does not divide
// num_attention_heads 32; use 1, 2, 4, 8, 16 or 32".
struct Diagnostic {
  std::string file;
  int line = 0;     // 1-based; 0 when not tied to a place in the file
  int column = 0;   // 1-based
  std::string key;  // dotted path: "train.tensor_model_parallel_size"
  std::string message;
  Severity severity = Severity::kError;
  std::string format() const;
};

// What a job is loaded for, and so what is checked beyond the file's syntax, types and keys (which are always).
enum class ValidationScope : std::uint8_t {
  kRun,     // everything: `validate`, `plan`, `run`
  kExport,  // what `export` uses: the model, the two layouts, the world size, memory.bucket_bytes
};

struct ModelConfig {
  std::string checkpoint;  // Hugging Face directory; empty: `spec` with seeded random weights
  std::string preset;      // optional: "llama3-8b", ... (shape fields given beside it override it)
  core::ModelSpec spec;    // from the shape keys, the preset, or the checkpoint's config.json
  std::uint32_t seed = 0;  // version of core::weight_value used for random weights
};

// What the rollout generates, and with how much KV cache: the `rollout` keys other than its tensor parallel size
// (that one is the rollout layout's, JobConfig::rollout.tp).
struct GenerationConfig {
  double gpu_memory_utilization = 0.5;  // fraction of device memory the KV cache may grow into (after weights)
  std::int64_t max_new_tokens = 8;
  std::int64_t prompt_length = 8;  // used when `prompts` is empty: seeded random prompts of this length
  // Rows of the batch each train data-parallel replica holds (the global batch is this x train dp). A job file that
  // does not give it gets default_prompts_per_train_replica(); a job built in code keeps 2.
  std::int64_t prompts_per_train_replica = 2;
  std::vector<std::vector<std::int32_t>> prompts;  // explicit token ids (each row the same length)
  std::int64_t kv_cache_bytes = 0;  // 0: derive from gpu_memory_utilization; CPU ranks: from runtime.cpu_device_memory
  bool check = true;                // compare with a single-rank reference every iteration
  std::int64_t check_max_parameters = 200'000'000;  // the check is skipped (and said so) above this size
};

// The batch a job file gets when it gives neither prompts_per_train_replica nor prompts: two rows per train replica,
// or more when there are more rollout replicas than that, so that every rollout replica (world / rollout tp) gets a
// row: max(2, ceil(rollout_replicas / train_dp)).
std::int64_t default_prompts_per_train_replica(std::int64_t train_dp, std::int64_t rollout_replicas);

struct MemoryConfig {
  core::ExitPolicy exit_policy = core::ExitPolicy::kFree;  // inference shards on exit: free | offload
  // What exit does with the device memory it freed: back to the driver (a colocated trainer's allocator can use it)
  // or kept in the device's cache for the next enter.
  core::ReleaseOnExit release_on_exit = core::ReleaseOnExit::kDriver;
  bool offload_optimizer_in_rollout = true;  // Adam moments and fp32 master weights -> pinned host during rollout
  bool offload_grads_in_rollout = true;      // fp32 gradients -> pinned host (or freed: free_grads_in_rollout)
  bool free_grads_in_rollout = false;
  bool offload_params_in_rollout = false;               // train-layout params -> host during rollout
  bool free_kv_cache_in_train = true;                   // KV cache dropped after each rollout
  std::int64_t bucket_bytes = std::int64_t{256} << 20;  // staging per direction per round of enter
};

struct ScheduleConfig {
  int iterations = 3;
  double learning_rate = 1e-2;
};

enum class BackendChoice : std::uint8_t { kAuto, kNccl, kGloo };

struct RuntimeConfig {
  int world_size = 4;
  BackendChoice backend = BackendChoice::kAuto;  // auto: nccl with GPUs, gloo without
  core::Strategy strategy = core::Strategy::kHybridshard;
  core::Transport transport = core::Transport::kAuto;  // hybridshard's enter: peer path where possible, send/recv
  std::vector<int> devices;                            // CUDA device per local rank; empty: local rank i uses device i
  std::string master_addr = "127.0.0.1";
  int master_port = 0;                                     // 0: the launcher picks a free port
  std::chrono::milliseconds timeout{30000};                // any wait: rendezvous, collectives, heartbeats
  std::int64_t cpu_device_memory = std::int64_t{1} << 30;  // what a CPU rank reports as its device memory
  std::int64_t device_memory = 0;  // per-GPU bytes `plan` checks against; 0: the device's own (CPU: cpu_device_memory)
};

struct MetricsConfig {
  std::string listen = "127.0.0.1:9464";  // "" disables the endpoint
  std::string record;                     // run record file (JSON lines); "" for none
  double sample_interval_seconds = 0.5;   // memory samples
  std::string serve_priority = "idle";    // CPU priority of the endpoint's threads: idle, low or normal
  double max_requests_per_second = 50;    // the endpoint's pace; 0: no limit
};

// Where a key's value was written in the job file (1-based), and the key path as spelled there (an alias such as
// "model.num_layers" for "model.num_hidden_layers").
struct SourcePosition {
  int line = 0;
  int column = 0;
  std::string key;
};

struct JobConfig {
  std::string file;                                 // where it was read from
  std::map<std::string, SourcePosition> positions;  // canonical key path -> where it was written (load time)
  ModelConfig model;
  core::TrainLayout train;        // the train layout; dp = runtime.world_size / (tp * pp), set at load
  core::InferenceLayout rollout;  // the rollout layout; world_size = runtime.world_size, set at load
  GenerationConfig generation;    // the rest of the `rollout` section
  MemoryConfig memory;
  ScheduleConfig schedule;
  RuntimeConfig runtime;
  MetricsConfig metrics;
  core::Topology topology;  // the cluster `plan` predicts enter times for (section `topology`)

  // Cross-field checks (divisibility, world sizes, the batch), every problem at once; diagnostics carry key paths
  // (and the lines recorded at load time, when the job came from a file). `scope` leaves out what its use ignores.
  std::vector<Diagnostic> validate(ValidationScope scope = ValidationScope::kRun) const;
};

struct LoadResult {
  std::optional<JobConfig> job;         // set when there were no errors (warnings allowed)
  std::vector<Diagnostic> diagnostics;  // every problem and warning, in file order
};

// Reads and validates a job file. Unknown keys, wrong types, duplicate keys, bad values, missing checkpoint files:
// all reported, never thrown. `scope`: which cross-field checks apply (ValidationScope).
LoadResult load_job_config(const std::string& path, ValidationScope scope = ValidationScope::kRun);
LoadResult load_job_config_from_string(const std::string& yaml, const std::string& file_name,
                                       ValidationScope scope = ValidationScope::kRun);

// The job the README's first command runs when no file is given (CPU ranks over Gloo, a small model).
std::string default_job_yaml();

}  // namespace hybridshard::service
