// load_job_config: YAML text -> JobConfig, every problem reported with its line, column and key path. The model
// section is read in model_section.cc, the typed values in job_reader.cc; the cross-field checks are
// JobConfig::validate (job_validator.cc).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string_view>
#include <utility>

#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/files/input_file.h"
#include "job_reader.h"
#include "yaml_document.h"

namespace hybridshard::service {
namespace {

using detail::YamlNode;

constexpr int kMaxRanks = 1 << 20;
const std::string kBatchKey = "rollout.prompts_per_train_replica";

class Loader {
 public:
  Loader(const std::string& file, std::filesystem::path base_directory, ValidationScope scope)
      : reader_(file, job_), base_directory_(std::move(base_directory)), scope_(scope) {}

  LoadResult load(std::string_view text) {
    detail::YamlDocument document = detail::parse_yaml_document(text);
    for (const auto& problem : document.problems) {
      reader_.add(problem.line, problem.column, problem.key, problem.message);
      if (!problem.key.empty()) reader_.mark_failed(problem.key);
    }
    if (!document.ok) return finish(false);
    const YamlNode& root = document.root;
    if (root.kind != YamlNode::Kind::kMap) {
      reader_.add(root.line, root.column, {},
                  "a job file is a mapping of sections (model, train, rollout, ...), got " + detail::describe(root));
      return finish(false);
    }
    static const std::vector<std::string_view> kSections{"model",    "train",   "rollout", "memory",
                                                         "schedule", "runtime", "metrics", "topology"};
    std::map<std::string, const YamlNode*> sections;
    for (const YamlNode& child : root.children) {
      if (std::find(kSections.begin(), kSections.end(), child.key) == kSections.end()) {
        reader_.unknown_key(child, {}, kSections);
        continue;
      }
      sections.emplace(child.key, &child);
      reader_.remember(child.key, child, child.key);
    }
    const YamlNode empty;
    const auto section = [&](const char* name) -> const YamlNode& {
      auto it = sections.find(name);
      return it == sections.end() ? empty : *it->second;
    };
    read_runtime(section("runtime"));
    read_train(section("train"));
    read_rollout(section("rollout"));
    read_memory(section("memory"));
    read_schedule(section("schedule"));
    read_metrics(section("metrics"));
    read_topology(section("topology"));
    detail::read_model_section(reader_, section("model"), base_directory_);  // last: wants a clean file first
    derive_layouts_and_batch();
    return finish(true);
  }

 private:
  void read_runtime(const YamlNode& node) {
    RuntimeConfig& runtime = job_.runtime;
    reader_.section(node, "runtime",
                    {"world_size", "backend", "strategy", "transport", "devices", "master_addr", "master_port",
                     "timeout", "cpu_device_memory", "device_memory"},
                    [&](const YamlNode& value, const std::string& key) {
                      const std::string_view name = value.key;
                      if (name == "world_size") {
                        if (auto v = reader_.small_integer(value, key, 1, kMaxRanks)) runtime.world_size = *v;
                      } else if (name == "backend") {
                        if (auto v = reader_.choice(value, key, {"auto", "nccl", "gloo"})) {
                          runtime.backend = *v == "nccl"   ? BackendChoice::kNccl
                                            : *v == "gloo" ? BackendChoice::kGloo
                                                           : BackendChoice::kAuto;
                        }
                      } else if (name == "strategy") {
                        if (auto v = reader_.choice(value, key, {"hybridshard", "seed"})) {
                          runtime.strategy = *v == "seed" ? core::Strategy::kSeed : core::Strategy::kHybridshard;
                        }
                      } else if (name == "transport") {
                        if (auto v = reader_.choice(value, key, {"auto", "peer", "sendrecv"})) {
                          runtime.transport = *core::parse_transport(*v);
                        }
                      } else if (name == "devices") {
                        read_devices(value, key);
                      } else if (name == "master_addr") {
                        if (auto v = reader_.text(value, key)) runtime.master_addr = *v;
                      } else if (name == "master_port") {
                        if (auto v = reader_.small_integer(value, key, 0, 65535)) runtime.master_port = *v;
                      } else if (name == "timeout") {
                        if (auto v = reader_.duration(value, key)) runtime.timeout = *v;
                      } else if (name == "cpu_device_memory") {
                        if (auto v = reader_.byte_size(value, key, 1 << 20, std::int64_t{1} << 50)) {
                          runtime.cpu_device_memory = *v;
                        }
                      } else if (name == "device_memory") {
                        if (auto v = reader_.byte_size(value, key, 0, std::int64_t{1} << 50))
                          runtime.device_memory = *v;
                      }
                    });
  }

  // The cluster `plan` predicts enter times for (core::Topology); bandwidths in GB/s (1e9 bytes/s) per GPU.
  void read_topology(const YamlNode& node) {
    core::Topology& topology = job_.topology;
    reader_.section(
        node, "topology",
        {"gpus_per_host", "intra_host_gb_per_s", "inter_host_gb_per_s", "device_copy_gb_per_s", "message_latency_us",
         "peer_sync_us", "sendrecv_efficiency", "sendrecv_latency_us", "sendrecv_copy_overlap"},
        [&](const YamlNode& value, const std::string& key) {
          const std::string_view name = value.key;
          if (name == "gpus_per_host") {
            if (auto v = reader_.small_integer(value, key, 1, kMaxRanks)) topology.gpus_per_host = *v;
          } else if (name == "message_latency_us") {
            if (auto v = reader_.real(value, key, 0.0, 1e6, false)) topology.message_latency_s = *v * 1e-6;
          } else if (name == "peer_sync_us") {
            if (auto v = reader_.real(value, key, 0.0, 1e9, false)) topology.peer_sync_s = *v * 1e-6;
          } else if (name == "sendrecv_efficiency") {
            if (auto v = reader_.real(value, key, 0.0, 1.0, true)) topology.sendrecv_efficiency = *v;
          } else if (name == "sendrecv_latency_us") {
            if (auto v = reader_.real(value, key, 0.0, 1e6, false)) topology.sendrecv_latency_s = *v * 1e-6;
          } else if (name == "sendrecv_copy_overlap") {
            if (auto v = reader_.real(value, key, 0.0, 1.0, false)) topology.sendrecv_copy_overlap = *v;
          } else if (auto v = reader_.real(value, key, 0.0, 1e6, true)) {
            double& rate = name == "intra_host_gb_per_s"   ? topology.intra_host_bytes_per_s
                           : name == "inter_host_gb_per_s" ? topology.inter_host_bytes_per_s
                                                           : topology.device_copy_bytes_per_s;
            rate = *v * 1e9;
          }
        });
  }

  void read_devices(const YamlNode& node, const std::string& key) {
    if (node.kind != YamlNode::Kind::kSequence) {
      reader_.error(node, key,
                    "expected a list of CUDA device numbers such as [0, 1, 2, 3], got " + detail::describe(node));
      return;
    }
    std::vector<int> devices;
    bool ok = true;
    for (std::size_t i = 0; i < node.children.size(); ++i) {
      auto device = reader_.small_integer(node.children[i], key + "[" + std::to_string(i) + "]", 0, 1023);
      if (!device) {
        ok = false;
        reader_.mark_failed(key);
        continue;
      }
      devices.push_back(*device);
    }
    if (ok) job_.runtime.devices = std::move(devices);
  }

  void read_train(const YamlNode& node) {
    core::TrainLayout& train = job_.train;
    reader_.section(
        node, "train",
        {"tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
         "make_vocab_size_divisible_by", "expert_model_parallel_size", "expert_tensor_parallel_size"},
        [&](const YamlNode& value, const std::string& key) {
          const std::string_view name = value.key;
          if (name == "virtual_pipeline_model_parallel_size" && value.kind == YamlNode::Kind::kNull) {
            train.vpp = 1;  // verl writes null for "no virtual pipeline"
            return;
          }
          // Mixture of experts; Megatron-LM's command-line spellings are aliases.
          const bool ep = name == "expert_model_parallel_size" || name == "expert-model-parallel-size";
          const bool etp = name == "expert_tensor_parallel_size" || name == "expert-tensor-parallel-size";
          auto v = reader_.small_integer(value, key, 1, name == "make_vocab_size_divisible_by" ? 1 << 20 : kMaxRanks);
          if (!v) return;
          if (ep || etp) {
            const std::string canonical = ep ? "train.expert_model_parallel_size" : "train.expert_tensor_parallel_size";
            if (reader_.alias_given(canonical, value, key, std::to_string(*v))) (ep ? train.ep : train.etp) = *v;
            return;
          }
          if (name == "tensor_model_parallel_size") train.tp = *v;
          if (name == "pipeline_model_parallel_size") train.pp = *v;
          if (name == "virtual_pipeline_model_parallel_size") train.vpp = *v;
          if (name == "make_vocab_size_divisible_by") train.make_vocab_size_divisible_by = *v;
        },
        {"expert-model-parallel-size", "expert-tensor-parallel-size"});
  }

  // The rollout layout (tensor parallel size, expert parallelism), and what the rollout generates (GenerationConfig).
  void read_rollout(const YamlNode& node) {
    GenerationConfig& generation = job_.generation;
    reader_.section(
        node, "rollout",
        {"tensor_model_parallel_size", "enable_expert_parallel", "gpu_memory_utilization", "max_new_tokens",
         "prompt_length", "prompts_per_train_replica", "prompts", "kv_cache_bytes", "check", "check_max_parameters"},
        [&](const YamlNode& value, const std::string& key) {
          const std::string_view name = value.key;
          if (name == "tensor_model_parallel_size") {
            if (auto v = reader_.small_integer(value, key, 1, kMaxRanks)) job_.rollout.tp = *v;
          } else if (name == "enable_expert_parallel") {
            if (auto v = reader_.boolean(value, key)) job_.rollout.expert_parallel = *v;
          } else if (name == "gpu_memory_utilization") {
            if (auto v = reader_.real(value, key, 0.0, 1.0, true)) generation.gpu_memory_utilization = *v;
          } else if (name == "max_new_tokens") {
            if (auto v = reader_.integer(value, key, 1, 1 << 20)) generation.max_new_tokens = *v;
          } else if (name == "prompt_length") {
            if (auto v = reader_.integer(value, key, 1, 1 << 20)) generation.prompt_length = *v;
          } else if (name == "prompts_per_train_replica" || name == "prompts_per_replica") {
            read_prompts_per_train_replica(value, key);
          } else if (name == "prompts") {
            read_prompts(value, key);
          } else if (name == "kv_cache_bytes") {
            if (auto v = reader_.byte_size(value, key, 0, std::int64_t{1} << 50)) generation.kv_cache_bytes = *v;
          } else if (name == "check") {
            if (auto v = reader_.boolean(value, key)) generation.check = *v;
          } else if (name == "check_max_parameters") {
            if (auto v = reader_.integer(value, key, 0, std::numeric_limits<std::int64_t>::max())) {
              generation.check_max_parameters = *v;
            }
          }
        },
        {"prompts_per_replica"});
  }

  // `prompts_per_train_replica`, or its old name `prompts_per_replica` (read, with a warning); both only when equal.
  void read_prompts_per_train_replica(const YamlNode& value, const std::string& key) {
    if (key != kBatchKey) {
      reader_.warning(value, key,
                      "renamed to prompts_per_train_replica (it counts rows per train data-parallel replica); the old "
                      "name still works for now");
    }
    auto v = reader_.integer(value, key, 1, 1 << 20);
    if (!v) {
      reader_.mark_failed(kBatchKey);
      return;
    }
    if (reader_.alias_given(kBatchKey, value, key, std::to_string(*v))) job_.generation.prompts_per_train_replica = *v;
  }

  void read_prompts(const YamlNode& node, const std::string& key) {
    if (node.kind != YamlNode::Kind::kSequence) {
      reader_.error(node, key,
                    "expected a list of prompts, each a list of token ids ([[1, 2, 3], [4, 5, 6]]), got " +
                        detail::describe(node));
      return;
    }
    std::vector<std::vector<std::int32_t>> prompts;
    bool ok = true;
    for (std::size_t row = 0; row < node.children.size(); ++row) {
      const YamlNode& item = node.children[row];
      const std::string row_key = key + "[" + std::to_string(row) + "]";
      if (item.kind != YamlNode::Kind::kSequence) {
        reader_.error(item, row_key, "expected a list of token ids, got " + detail::describe(item));
        ok = false;
        continue;
      }
      std::vector<std::int32_t> tokens;
      for (std::size_t col = 0; col < item.children.size(); ++col) {
        auto token = reader_.integer(item.children[col], row_key + "[" + std::to_string(col) + "]", 0,
                                     std::numeric_limits<std::int32_t>::max());
        if (!token) {
          ok = false;
          continue;
        }
        tokens.push_back(static_cast<std::int32_t>(*token));
      }
      prompts.push_back(std::move(tokens));
    }
    if (!ok) {
      reader_.mark_failed(key);
      return;
    }
    job_.generation.prompts = std::move(prompts);
  }

  void read_memory(const YamlNode& node) {
    MemoryConfig& memory = job_.memory;
    reader_.section(node, "memory",
                    {"exit_policy", "release_on_exit", "offload_optimizer_in_rollout", "offload_grads_in_rollout",
                     "free_grads_in_rollout", "offload_params_in_rollout", "free_kv_cache_in_train", "bucket_bytes"},
                    [&](const YamlNode& value, const std::string& key) {
                      const std::string_view name = value.key;
                      if (name == "exit_policy") {
                        if (auto v = reader_.choice(value, key, {"free", "offload"})) {
                          memory.exit_policy = *v == "offload" ? core::ExitPolicy::kOffload : core::ExitPolicy::kFree;
                        }
                      } else if (name == "release_on_exit") {
                        if (auto v = reader_.choice(value, key, {"driver", "cache"})) {
                          memory.release_on_exit = *core::parse_release_on_exit(*v);
                        }
                      } else if (name == "bucket_bytes") {
                        if (auto v = reader_.byte_size(value, key, 1, std::int64_t{1} << 40)) memory.bucket_bytes = *v;
                      } else if (auto v = reader_.boolean(value, key)) {
                        if (name == "offload_optimizer_in_rollout") memory.offload_optimizer_in_rollout = *v;
                        if (name == "offload_grads_in_rollout") memory.offload_grads_in_rollout = *v;
                        if (name == "free_grads_in_rollout") memory.free_grads_in_rollout = *v;
                        if (name == "offload_params_in_rollout") memory.offload_params_in_rollout = *v;
                        if (name == "free_kv_cache_in_train") memory.free_kv_cache_in_train = *v;
                      }
                    });
  }

  void read_schedule(const YamlNode& node) {
    ScheduleConfig& schedule = job_.schedule;
    reader_.section(node, "schedule", {"iterations", "learning_rate"},
                    [&](const YamlNode& value, const std::string& key) {
                      if (value.key == "iterations") {
                        if (auto v = reader_.small_integer(value, key, 1, 1'000'000'000)) schedule.iterations = *v;
                      } else if (auto v = reader_.real(value, key, 0.0, 1e3, true)) {
                        schedule.learning_rate = *v;
                      }
                    });
  }

  void read_metrics(const YamlNode& node) {
    MetricsConfig& metrics = job_.metrics;
    reader_.section(node, "metrics",
                    {"listen", "record", "sample_interval_seconds", "serve_priority", "max_requests_per_second"},
                    [&](const YamlNode& value, const std::string& key) {
                      if (value.key == "listen") {
                        if (auto v = reader_.text(value, key)) metrics.listen = *v;
                      } else if (value.key == "record") {
                        if (auto v = reader_.text(value, key)) metrics.record = *v;
                      } else if (value.key == "serve_priority") {
                        if (auto v = reader_.choice(value, key, {"idle", "low", "normal"})) metrics.serve_priority = *v;
                      } else if (value.key == "max_requests_per_second") {
                        if (auto v = reader_.real(value, key, 0.0, 1e6, false)) metrics.max_requests_per_second = *v;
                      } else if (auto v = reader_.real(value, key, 0.0, 3600.0, true)) {
                        metrics.sample_interval_seconds = *v;
                      }
                    });
  }

  // What follows from the world size: train dp, the rollout layout's world, and (when not given) the batch.
  void derive_layouts_and_batch() {
    const int world = job_.runtime.world_size;
    core::TrainLayout& train = job_.train;
    const int group = train.tp * train.pp;
    train.dp = group > 0 && world % group == 0 ? world / group : 1;
    job_.rollout.world_size = world;
    if (job_.positions.count(kBatchKey) > 0 || world % group != 0) return;
    GenerationConfig& generation = job_.generation;
    if (!generation.prompts.empty()) {
      // Explicit prompts set the batch: rows per train replica = rows / train dp (validate checks that it divides).
      if (static_cast<std::int64_t>(generation.prompts.size()) % train.dp == 0) {
        generation.prompts_per_train_replica = static_cast<std::int64_t>(generation.prompts.size()) / train.dp;
      }
    } else if (job_.rollout.tp >= 1 && world % job_.rollout.tp == 0) {
      generation.prompts_per_train_replica = default_prompts_per_train_replica(train.dp, world / job_.rollout.tp);
    }
  }

  LoadResult finish(bool parsed) {
    std::vector<Diagnostic>& diagnostics = reader_.diagnostics();
    if (parsed) {
      // Cross-field checks, minus those about keys that already failed to load (their defaults stand in).
      for (Diagnostic& diagnostic : job_.validate(scope_)) {
        bool about_failed = false;
        for (const std::string& key : reader_.failed()) {
          if (diagnostic.key == key || diagnostic.key.rfind(key + ".", 0) == 0 ||
              diagnostic.key.rfind(key + "[", 0) == 0) {
            about_failed = true;
          }
        }
        if (!about_failed) diagnostics.push_back(std::move(diagnostic));
      }
    }
    // File order; problems without a place last.
    std::stable_sort(diagnostics.begin(), diagnostics.end(), [](const Diagnostic& a, const Diagnostic& b) {
      const int line_a = a.line > 0 ? a.line : std::numeric_limits<int>::max();
      const int line_b = b.line > 0 ? b.line : std::numeric_limits<int>::max();
      return std::tie(line_a, a.column) < std::tie(line_b, b.column);
    });
    LoadResult result;
    const bool errors = std::any_of(diagnostics.begin(), diagnostics.end(),
                                    [](const Diagnostic& d) { return d.severity == Severity::kError; });
    result.diagnostics = std::move(diagnostics);
    if (parsed && !errors) result.job = std::move(job_);
    return result;
  }

  JobConfig job_;
  detail::JobReader reader_;
  std::filesystem::path base_directory_;
  ValidationScope scope_;
};

}  // namespace

LoadResult load_job_config_from_string(const std::string& yaml, const std::string& file_name, ValidationScope scope) {
  Loader loader(file_name, {}, scope);
  return loader.load(yaml);
}

LoadResult load_job_config(const std::string& path, ValidationScope scope) {
  LoadResult result;
  const auto fail = [&](std::string message) {
    result.diagnostics.push_back({path, 0, 0, {}, std::move(message)});
    return result;
  };
  // A FIFO or device is refused before it is opened (nothing waits on it); a symbolic link loop says so.
  std::string problem;
  std::optional<std::string> text = read_input_file(path, detail::kMaxYamlBytes, problem);
  if (!text) return fail("cannot read the job file: it " + problem);
  Loader loader(path, std::filesystem::path(path).parent_path(), scope);
  return loader.load(*text);
}

}  // namespace hybridshard::service
