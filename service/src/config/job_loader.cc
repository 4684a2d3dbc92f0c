// load_job_config: YAML text -> JobConfig, every problem reported with its line, column and key path.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "config_text.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/config/units.h"
#include "yaml_document.h"

namespace hybridshard::service {
namespace {

using detail::YamlNode;

constexpr std::int64_t kMaxRanks = 1 << 20;

std::string describe(const YamlNode& node) {
  switch (node.kind) {
    case YamlNode::Kind::kNull:
      return "nothing";
    case YamlNode::Kind::kSequence:
      return "a list";
    case YamlNode::Kind::kMap:
      return "a mapping";
    case YamlNode::Kind::kScalar:
      break;
  }
  std::string text = node.scalar.size() > 40 ? node.scalar.substr(0, 40) + "..." : node.scalar;
  return node.plain ? "'" + text + "'" : "the quoted text \"" + text + "\"";
}

// Whole numbers as YAML 1.2 writes them, with optional '_' separators: "-12", "200_000_000".
enum class IntParse { kOk, kNotInteger, kOverflow };
IntParse parse_integer(std::string_view text, std::int64_t& value) {
  std::string digits;
  bool negative = false;
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else if (c == '_' && !digits.empty() && i + 1 < text.size()) {
      continue;
    } else {
      return IntParse::kNotInteger;
    }
  }
  if (digits.empty()) return IntParse::kNotInteger;
  std::uint64_t magnitude = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude);
  if (error == std::errc::result_out_of_range) return IntParse::kOverflow;
  if (error != std::errc() || end != digits.data() + digits.size()) return IntParse::kNotInteger;
  const auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (magnitude > limit + (negative ? 1u : 0u)) return IntParse::kOverflow;
  value = negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
  return IntParse::kOk;
}

class Loader {
 public:
  Loader(std::string file, std::filesystem::path base_directory)
      : file_(std::move(file)), base_directory_(std::move(base_directory)) {
    job_.file = file_;
  }

  LoadResult load(std::string_view text) {
    detail::YamlDocument document = detail::parse_yaml_document(text);
    for (const auto& problem : document.problems) {
      add(problem.line, problem.column, problem.key, problem.message);
      if (!problem.key.empty()) failed_.insert(problem.key);
    }
    if (!document.ok) return finish(false);
    const YamlNode& root = document.root;
    if (root.kind != YamlNode::Kind::kMap) {
      add(root.line, root.column, {},
          "a job file is a mapping of sections (model, train, rollout, ...), got " + describe(root));
      return finish(false);
    }
    static const std::vector<std::string_view> kSections{"model",    "train",   "rollout", "memory",
                                                         "schedule", "runtime", "metrics"};
    std::map<std::string, const YamlNode*> sections;
    for (const YamlNode& child : root.children) {
      if (std::find(kSections.begin(), kSections.end(), child.key) == kSections.end()) {
        unknown_key(child, {}, kSections);
        continue;
      }
      sections.emplace(child.key, &child);
      remember(child.key, child, child.key);
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
    read_model(section("model"));  // last: the checkpoint check wants a clean file first
    finish_layouts();
    return finish(true);
  }

 private:
  // ---- diagnostics ------------------------------------------------------------------------------------------------
  void add(int line, int column, std::string key, std::string message) {
    diagnostics_.push_back({file_, line, column, std::move(key), std::move(message)});
  }
  void error(const YamlNode& at, const std::string& key, std::string message) {
    add(at.line, at.column, key, std::move(message));
    failed_.insert(key);
  }
  void remember(const std::string& canonical, const YamlNode& node, const std::string& spelled) {
    job_.positions[canonical] = SourcePosition{node.line, node.column, spelled};
  }
  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }

  void unknown_key(const YamlNode& node, const std::string& path, const std::vector<std::string_view>& known) {
    const std::string key = join(path, node.key);
    std::string message = "unknown key '" + node.key + "'";
    if (const std::string near = detail::closest_word(node.key, known); !near.empty()) {
      message += "; did you mean '" + near + "'?";
    } else {
      message += "; known keys" + std::string(path.empty() ? "" : " of '" + path + "'") + ": " +
                 detail::join_words(known, "and");
    }
    add(node.key_line, node.key_column, key, message);
    failed_.insert(key);
  }

  // Calls `read(value_node, key_path)` for every known key of the mapping `node`; reports the unknown ones.
  void section(const YamlNode& node, const std::string& path, const std::vector<std::string_view>& keys,
               const std::function<void(const YamlNode&, const std::string&)>& read) {
    if (node.kind == YamlNode::Kind::kNull) return;  // "memory:" alone: every default
    if (node.kind != YamlNode::Kind::kMap) {
      error(node, path, "expected a mapping of keys (" + detail::join_words(keys, "and") + "), got " + describe(node));
      return;
    }
    for (const YamlNode& child : node.children) {
      if (std::find(keys.begin(), keys.end(), child.key) == keys.end()) {
        unknown_key(child, path, keys);
        continue;
      }
      const std::string key = join(path, child.key);
      remember(key, child, key);
      read(child, key);
    }
  }

  // ---- typed values -----------------------------------------------------------------------------------------------
  bool scalar(const YamlNode& node, const std::string& key, const char* expected) {
    if (node.kind == YamlNode::Kind::kScalar) return true;
    error(node, key, std::string("expected ") + expected + ", got " + describe(node));
    return false;
  }

  std::optional<std::int64_t> integer(const YamlNode& node, const std::string& key, std::int64_t min,
                                      std::int64_t max) {
    if (!scalar(node, key, "a whole number")) return std::nullopt;
    std::int64_t value = 0;
    const IntParse parsed = node.plain ? parse_integer(node.scalar, value) : IntParse::kNotInteger;
    if (parsed == IntParse::kOverflow) {
      error(node, key, node.scalar + " is too large; at most " + std::to_string(max));
      return std::nullopt;
    }
    if (parsed != IntParse::kOk) {
      error(node, key, "expected a whole number, got " + describe(node));
      return std::nullopt;
    }
    if (value < min || value > max) {
      error(node, key,
            std::to_string(value) + (value < min ? " is too small; at least " + std::to_string(min)
                                                 : " is too large; at most " + std::to_string(max)));
      return std::nullopt;
    }
    return value;
  }

  std::optional<int> small_integer(const YamlNode& node, const std::string& key, int min, int max) {
    auto value = integer(node, key, min, max);
    if (!value) return std::nullopt;
    return static_cast<int>(*value);
  }

  // A real number in [min, max] (or (min, max] with `min_exclusive`).
  std::optional<double> real(const YamlNode& node, const std::string& key, double min, double max, bool min_exclusive) {
    if (!scalar(node, key, "a number")) return std::nullopt;
    const std::string& text = node.scalar;
    char* end = nullptr;
    errno = 0;
    const double value = node.plain && !text.empty() ? std::strtod(text.c_str(), &end) : 0.0;
    const bool whole = node.plain && !text.empty() && end == text.c_str() + text.size();
    const bool hex = text.find_first_of("xXnN") != std::string::npos;  // no hex floats, no nan/inf
    if (!whole || hex || !std::isfinite(value)) {
      error(node, key, "expected a number, got " + describe(node));
      return std::nullopt;
    }
    const bool too_small = min_exclusive ? !(value > min) : !(value >= min);
    if (too_small || value > max) {
      std::ostringstream message;
      message << text << " is out of range; use a number " << (min_exclusive ? "above " : "from ") << min
              << (min_exclusive ? " up to " : " to ") << max;
      error(node, key, message.str());
      return std::nullopt;
    }
    return value;
  }

  std::optional<bool> boolean(const YamlNode& node, const std::string& key) {
    if (!scalar(node, key, "true or false")) return std::nullopt;
    if (node.plain) {
      const std::string& text = node.scalar;
      if (text == "true" || text == "True" || text == "TRUE") return true;
      if (text == "false" || text == "False" || text == "FALSE") return false;
    }
    error(node, key, "expected true or false, got " + describe(node));
    return std::nullopt;
  }

  std::optional<std::string> text(const YamlNode& node, const std::string& key) {
    if (node.kind == YamlNode::Kind::kNull) {
      error(node, key, "no value given; write \"\" for an empty text");
      return std::nullopt;
    }
    if (!scalar(node, key, "a text")) return std::nullopt;
    return node.scalar;
  }

  // One of `choices`; suggests the closest.
  std::optional<std::string> choice(const YamlNode& node, const std::string& key,
                                    const std::vector<std::string_view>& choices) {
    auto value = text(node, key);
    if (!value) return std::nullopt;
    if (std::find(choices.begin(), choices.end(), *value) != choices.end()) return value;
    std::string message = "'" + *value + "' is not one of " + detail::join_words(choices, "or");
    if (const std::string near = detail::closest_word(*value, choices); !near.empty()) {
      message += "; did you mean '" + near + "'?";
    }
    error(node, key, message);
    return std::nullopt;
  }

  std::optional<std::int64_t> byte_size(const YamlNode& node, const std::string& key, std::int64_t min,
                                        std::int64_t max) {
    if (!scalar(node, key, "a size such as 256MiB")) return std::nullopt;
    std::string why;
    const auto value = parse_byte_size(node.scalar, &why);
    if (!value) {
      error(node, key, "expected a size such as 4096, 256MiB or 80GB: " + why);
      return std::nullopt;
    }
    if (*value < min || *value > max) {
      error(node, key,
            node.scalar + (*value < min ? " is too small; at least " + format_bytes(min)
                                        : " is too large; at most " + format_bytes(max)));
      return std::nullopt;
    }
    return value;
  }

  // ---- sections ---------------------------------------------------------------------------------------------------
  void read_runtime(const YamlNode& node) {
    RuntimeConfig& runtime = job_.runtime;
    section(node, "runtime",
            {"world_size", "backend", "strategy", "devices", "master_addr", "master_port", "timeout",
             "cpu_device_memory", "device_memory"},
            [&](const YamlNode& value, const std::string& key) {
              const std::string_view name = value.key;
              if (name == "world_size") {
                if (auto v = small_integer(value, key, 1, kMaxRanks)) runtime.world_size = *v;
              } else if (name == "backend") {
                if (auto v = choice(value, key, {"auto", "nccl", "gloo"})) {
                  runtime.backend = *v == "nccl"   ? BackendChoice::kNccl
                                    : *v == "gloo" ? BackendChoice::kGloo
                                                   : BackendChoice::kAuto;
                }
              } else if (name == "strategy") {
                if (auto v = choice(value, key, {"hybridshard", "seed"})) {
                  runtime.strategy = *v == "seed" ? core::Strategy::kSeed : core::Strategy::kHybridshard;
                }
              } else if (name == "devices") {
                read_devices(value, key);
              } else if (name == "master_addr") {
                if (auto v = text(value, key)) runtime.master_addr = *v;
              } else if (name == "master_port") {
                if (auto v = small_integer(value, key, 0, 65535)) runtime.master_port = *v;
              } else if (name == "timeout") {
                if (!scalar(value, key, "a duration such as 30s")) return;
                std::string why;
                const auto duration = parse_duration(value.scalar, &why);
                if (!duration) {
                  error(value, key, "expected a duration such as 30s, 500ms or 2m: " + why);
                } else if (duration->count() < 1 || *duration > std::chrono::hours(24)) {
                  error(value, key, value.scalar + " is out of range; use 1ms to 24h");
                } else {
                  runtime.timeout = *duration;
                }
              } else if (name == "cpu_device_memory") {
                if (auto v = byte_size(value, key, 1 << 20, std::int64_t{1} << 50)) runtime.cpu_device_memory = *v;
              } else if (name == "device_memory") {
                if (auto v = byte_size(value, key, 0, std::int64_t{1} << 50)) runtime.device_memory = *v;
              }
            });
  }

  void read_devices(const YamlNode& node, const std::string& key) {
    if (node.kind != YamlNode::Kind::kSequence) {
      error(node, key, "expected a list of CUDA device numbers such as [0, 1, 2, 3], got " + describe(node));
      return;
    }
    std::vector<int> devices;
    bool ok = true;
    for (std::size_t i = 0; i < node.children.size(); ++i) {
      auto device = small_integer(node.children[i], key + "[" + std::to_string(i) + "]", 0, 1023);
      if (!device) {
        ok = false;
        failed_.insert(key);
        continue;
      }
      devices.push_back(*device);
    }
    if (ok) job_.runtime.devices = std::move(devices);
  }

  void read_train(const YamlNode& node) {
    core::TrainLayout& train = job_.train;
    section(node, "train",
            {"tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
             "make_vocab_size_divisible_by", "expert_model_parallel_size", "expert_tensor_parallel_size",
             "expert-model-parallel-size", "expert-tensor-parallel-size"},
            [&](const YamlNode& value, const std::string& key) {
              const std::string_view name = value.key;
              // Mixture of experts; Megatron-LM's command-line spellings are aliases.
              if (name == "expert_model_parallel_size" || name == "expert-model-parallel-size") {
                if (auto v = small_integer(value, key, 1, kMaxRanks)) train.ep = *v;
                return;
              }
              if (name == "expert_tensor_parallel_size" || name == "expert-tensor-parallel-size") {
                if (auto v = small_integer(value, key, 1, kMaxRanks)) train.etp = *v;
                return;
              }
              if (name == "virtual_pipeline_model_parallel_size" && value.kind == YamlNode::Kind::kNull) {
                train.vpp = 1;  // verl writes null for "no virtual pipeline"
                return;
              }
              auto v = small_integer(value, key, 1, name == "make_vocab_size_divisible_by" ? 1 << 20 : kMaxRanks);
              if (!v) return;
              if (name == "tensor_model_parallel_size") train.tp = *v;
              if (name == "pipeline_model_parallel_size") train.pp = *v;
              if (name == "virtual_pipeline_model_parallel_size") train.vpp = *v;
              if (name == "make_vocab_size_divisible_by") train.make_vocab_size_divisible_by = *v;
            });
  }

  void read_rollout(const YamlNode& node) {
    RolloutConfig& rollout = job_.rollout_settings;
    section(
        node, "rollout",
        {"tensor_model_parallel_size", "gpu_memory_utilization", "max_new_tokens", "prompt_length",
         "prompts_per_replica", "prompts", "kv_cache_bytes", "check", "check_max_parameters", "enable_expert_parallel"},
        [&](const YamlNode& value, const std::string& key) {
          const std::string_view name = value.key;
          if (name == "tensor_model_parallel_size") {
            if (auto v = small_integer(value, key, 1, kMaxRanks)) rollout.tensor_model_parallel_size = *v;
          } else if (name == "gpu_memory_utilization") {
            if (auto v = real(value, key, 0.0, 1.0, true)) rollout.gpu_memory_utilization = *v;
          } else if (name == "max_new_tokens") {
            if (auto v = integer(value, key, 1, 1 << 20)) rollout.max_new_tokens = *v;
          } else if (name == "prompt_length") {
            if (auto v = integer(value, key, 1, 1 << 20)) rollout.prompt_length = *v;
          } else if (name == "prompts_per_replica") {
            if (auto v = integer(value, key, 1, 1 << 20)) rollout.prompts_per_replica = *v;
          } else if (name == "prompts") {
            read_prompts(value, key);
          } else if (name == "kv_cache_bytes") {
            if (auto v = byte_size(value, key, 0, std::int64_t{1} << 50)) rollout.kv_cache_bytes = *v;
          } else if (name == "check") {
            if (auto v = boolean(value, key)) rollout.check = *v;
          } else if (name == "enable_expert_parallel") {
            if (auto v = boolean(value, key)) rollout.enable_expert_parallel = *v;
          } else if (name == "check_max_parameters") {
            if (auto v = integer(value, key, 0, std::numeric_limits<std::int64_t>::max())) {
              rollout.check_max_parameters = *v;
            }
          }
        });
  }

  void read_prompts(const YamlNode& node, const std::string& key) {
    if (node.kind != YamlNode::Kind::kSequence) {
      error(node, key,
            "expected a list of prompts, each a list of token ids ([[1, 2, 3], [4, 5, 6]]), got " + describe(node));
      return;
    }
    std::vector<std::vector<std::int32_t>> prompts;
    bool ok = true;
    for (std::size_t row = 0; row < node.children.size(); ++row) {
      const YamlNode& item = node.children[row];
      const std::string row_key = key + "[" + std::to_string(row) + "]";
      if (item.kind != YamlNode::Kind::kSequence) {
        error(item, row_key, "expected a list of token ids, got " + describe(item));
        ok = false;
        continue;
      }
      std::vector<std::int32_t> tokens;
      for (std::size_t col = 0; col < item.children.size(); ++col) {
        auto token = integer(item.children[col], row_key + "[" + std::to_string(col) + "]", 0,
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
      failed_.insert(key);
      return;
    }
    job_.rollout_settings.prompts = std::move(prompts);
  }

  void read_memory(const YamlNode& node) {
    MemoryConfig& memory = job_.memory;
    section(node, "memory",
            {"exit_policy", "offload_optimizer_in_rollout", "offload_grads_in_rollout", "free_grads_in_rollout",
             "offload_params_in_rollout", "free_kv_cache_in_train", "bucket_bytes"},
            [&](const YamlNode& value, const std::string& key) {
              const std::string_view name = value.key;
              if (name == "exit_policy") {
                if (auto v = choice(value, key, {"free", "offload"})) {
                  memory.exit_policy = *v == "offload" ? core::ExitPolicy::kOffload : core::ExitPolicy::kFree;
                }
              } else if (name == "bucket_bytes") {
                if (auto v = byte_size(value, key, 1, std::int64_t{1} << 40)) memory.bucket_bytes = *v;
              } else if (auto v = boolean(value, key)) {
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
    section(node, "schedule", {"iterations", "learning_rate"}, [&](const YamlNode& value, const std::string& key) {
      if (value.key == "iterations") {
        if (auto v = small_integer(value, key, 1, 1'000'000'000)) schedule.iterations = *v;
      } else if (auto v = real(value, key, 0.0, 1e3, true)) {
        schedule.learning_rate = *v;
      }
    });
  }

  void read_metrics(const YamlNode& node) {
    MetricsConfig& metrics = job_.metrics;
    section(node, "metrics",
            {"listen", "record", "sample_interval_seconds", "serve_priority", "max_requests_per_second"},
            [&](const YamlNode& value, const std::string& key) {
              if (value.key == "listen") {
                if (auto v = text(value, key)) metrics.listen = *v;
              } else if (value.key == "record") {
                if (auto v = text(value, key)) metrics.record = *v;
              } else if (value.key == "serve_priority") {
                if (auto v = choice(value, key, {"idle", "low", "normal"})) metrics.serve_priority = *v;
              } else if (value.key == "max_requests_per_second") {
                if (auto v = real(value, key, 0.0, 1e6, false)) metrics.max_requests_per_second = *v;
              } else if (auto v = real(value, key, 0.0, 3600.0, true)) {
                metrics.sample_interval_seconds = *v;
              }
            });
  }

  // ---- model ------------------------------------------------------------------------------------------------------
  struct Given {
    const YamlNode* node = nullptr;
    std::string spelled;  // the key path as written
  };

  void read_model(const YamlNode& node) {
    static const std::map<std::string_view, std::string_view> kAliases{
        {"num_layers", "num_hidden_layers"},        {"num_query_groups", "num_key_value_heads"},
        {"ffn_hidden_size", "intermediate_size"},   {"num_moe_experts", "num_experts"},
        {"moe_router_topk", "num_experts_per_tok"}, {"moe_ffn_hidden_size", "moe_intermediate_size"},
    };
    std::map<std::string, Given> given;  // canonical name -> node
    std::map<std::string, std::int64_t> integers;
    std::optional<core::Architecture> architecture;
    std::optional<core::DType> dtype;
    std::optional<bool> tie;
    std::optional<double> rope_theta;
    std::optional<double> rms_norm_eps;
    const YamlNode* checkpoint_node = nullptr;
    const YamlNode* preset_node = nullptr;

    section(node, "model",
            {"checkpoint",
             "preset",
             "architecture",
             "num_hidden_layers",
             "hidden_size",
             "num_attention_heads",
             "num_key_value_heads",
             "intermediate_size",
             "vocab_size",
             "head_dim",
             "tie_word_embeddings",
             "dtype",
             "rope_theta",
             "rms_norm_eps",
             "max_position_embeddings",
             "seed",
             "num_layers",
             "num_query_groups",
             "ffn_hidden_size",
             "num_experts",
             "num_experts_per_tok",
             "moe_intermediate_size",
             "decoder_sparse_step",
             "num_moe_experts",
             "moe_router_topk",
             "moe_ffn_hidden_size"},
            [&](const YamlNode& value, const std::string& key) {
              const std::string written = value.key;
              std::string name = written;
              if (auto alias = kAliases.find(name); alias != kAliases.end()) name = std::string(alias->second);
              const std::string canonical = "model." + name;
              if (name == "checkpoint") {
                if (auto v = text(value, key)) {
                  job_.model.checkpoint = *v;
                  checkpoint_node = &value;
                }
              } else if (name == "preset") {
                const auto names = core::model_preset_names();
                const std::vector<std::string_view> views(names.begin(), names.end());
                if (choice(value, key, views)) {
                  job_.model.preset = value.scalar;
                  preset_node = &value;
                }
              } else if (name == "seed") {
                if (auto v = integer(value, key, 0, std::numeric_limits<std::uint32_t>::max())) {
                  job_.model.seed = static_cast<std::uint32_t>(*v);
                }
              } else if (name == "architecture") {
                if (auto v = choice(value, key, {"llama", "qwen2", "qwen3", "qwen3_moe", "mixtral"})) {
                  architecture = core::parse_architecture(*v);
                  given[canonical] = {&value, key};
                }
              } else if (name == "dtype") {
                if (auto v = text(value, key)) {
                  dtype = core::parse_dtype(*v);
                  if (!dtype) {
                    error(value, key, "'" + *v + "' is not a weight dtype; use bf16, fp16 or fp32");
                  } else {
                    given[canonical] = {&value, key};
                  }
                }
              } else if (name == "tie_word_embeddings") {
                if ((tie = boolean(value, key))) given[canonical] = {&value, key};
              } else if (name == "rope_theta") {
                if ((rope_theta = real(value, key, 0.0, 1e12, true))) given[canonical] = {&value, key};
              } else if (name == "rms_norm_eps") {
                if ((rms_norm_eps = real(value, key, 0.0, 1.0, true))) given[canonical] = {&value, key};
              } else {
                // The integer shape keys (and their Megatron aliases).
                const std::int64_t min = name == "head_dim" ? 0 : 1;
                const std::int64_t max = name == "vocab_size" ? std::int64_t{1} << 31 : std::int64_t{1} << 24;
                auto v = integer(value, key, min, max);
                if (!v) {
                  failed_.insert(canonical);
                  return;
                }
                if (auto previous = given.find(canonical); previous != given.end()) {
                  if (integers[name] != *v) {
                    error(value, key,
                          std::to_string(*v) + " conflicts with " + previous->second.spelled + " " +
                              std::to_string(integers[name]) + " (line " + std::to_string(previous->second.node->line) +
                              "); give one of them");
                    failed_.insert(canonical);
                  }
                  return;
                }
                integers[name] = *v;
                given[canonical] = {&value, key};
                remember(canonical, value, key);
              }
            });

    // The base shape: the checkpoint's config.json, a preset, or the defaults.
    core::ModelSpec spec;
    bool from_checkpoint = false;
    if (checkpoint_node != nullptr) {
      if (preset_node != nullptr) {
        error(*preset_node, "model.preset", "give either a checkpoint or a preset, not both");
      }
      std::filesystem::path directory = job_.model.checkpoint;
      if (directory.is_relative() && !base_directory_.empty()) directory = base_directory_ / directory;
      job_.model.checkpoint = directory.string();
      CheckpointCheck check;
      try {
        check = check_hf_checkpoint(directory);
      } catch (const std::exception& unexpected) {
        check.problems.push_back(unexpected.what());
      }
      for (const std::string& problem : check.problems) error(*checkpoint_node, "model.checkpoint", problem);
      if (check.spec) {
        spec = *check.spec;
        from_checkpoint = true;
      }
    } else if (preset_node != nullptr) {
      spec = *core::model_preset(job_.model.preset);
    }

    // Keys beside a checkpoint must agree with its config.json (dtype may differ: weights are converted on load).
    const auto agree = [&](const std::string& name, const std::string& ours, const std::string& theirs) {
      const Given& g = given.at("model." + name);
      error(*g.node, g.spelled,
            ours + " differs from " + name + " " + theirs + " in the checkpoint's config.json; drop the key or use " +
                theirs);
    };
    const auto set_integer = [&](const std::string& name, std::int64_t& field) {
      auto it = integers.find(name);
      if (it == integers.end()) return;
      if (from_checkpoint && it->second != field) {
        agree(name, std::to_string(it->second), std::to_string(field));
        return;
      }
      field = it->second;
    };
    set_integer("num_hidden_layers", spec.num_hidden_layers);
    set_integer("hidden_size", spec.hidden_size);
    set_integer("num_attention_heads", spec.num_attention_heads);
    set_integer("num_key_value_heads", spec.num_key_value_heads);
    set_integer("intermediate_size", spec.intermediate_size);
    set_integer("vocab_size", spec.vocab_size);
    set_integer("head_dim", spec.head_dim);
    set_integer("max_position_embeddings", spec.max_position_embeddings);
    set_integer("num_experts", spec.num_experts);
    set_integer("num_experts_per_tok", spec.num_experts_per_tok);
    set_integer("moe_intermediate_size", spec.moe_intermediate_size);
    set_integer("decoder_sparse_step", spec.decoder_sparse_step);
    if (architecture) {
      if (from_checkpoint && *architecture != spec.architecture) {
        agree("architecture", std::string(core::architecture_name(*architecture)),
              std::string(core::architecture_name(spec.architecture)));
      } else {
        spec.architecture = *architecture;
      }
    }
    if (tie) {
      if (from_checkpoint && *tie != spec.tie_word_embeddings) {
        agree("tie_word_embeddings", *tie ? "true" : "false", spec.tie_word_embeddings ? "true" : "false");
      } else {
        spec.tie_word_embeddings = *tie;
      }
    }
    if (rope_theta) {
      if (from_checkpoint && *rope_theta != spec.rope_theta) {
        agree("rope_theta", detail::format_number(*rope_theta), detail::format_number(spec.rope_theta));
      } else {
        spec.rope_theta = *rope_theta;
      }
    }
    if (rms_norm_eps) {
      if (from_checkpoint && *rms_norm_eps != spec.rms_norm_eps) {
        agree("rms_norm_eps", detail::format_number(*rms_norm_eps), detail::format_number(spec.rms_norm_eps));
      } else {
        spec.rms_norm_eps = *rms_norm_eps;
      }
    }
    if (dtype) spec.dtype = *dtype;
    job_.model.spec = spec;
  }

  void finish_layouts() {
    const int world = job_.runtime.world_size;
    core::TrainLayout& train = job_.train;
    const int group = train.tp * train.pp;
    train.dp = group > 0 && world % group == 0 ? world / group : 1;
    job_.rollout.tp = job_.rollout_settings.tensor_model_parallel_size;
    job_.rollout.world_size = world;
    job_.rollout.expert_parallel = job_.rollout_settings.enable_expert_parallel;
    // Explicit prompts set the batch: rows per replica = rows / train data parallel size.
    RolloutConfig& rollout = job_.rollout_settings;
    if (!rollout.prompts.empty() && job_.positions.count("rollout.prompts_per_replica") == 0 && world % group == 0 &&
        static_cast<std::int64_t>(rollout.prompts.size()) % train.dp == 0) {
      rollout.prompts_per_replica = static_cast<std::int64_t>(rollout.prompts.size()) / train.dp;
    }
  }

  LoadResult finish(bool parsed) {
    LoadResult result;
    if (parsed) {
      // Cross-field checks, minus those about keys that already failed to load (their defaults stand in).
      for (Diagnostic& diagnostic : job_.validate()) {
        bool about_failed = false;
        for (const std::string& key : failed_) {
          if (diagnostic.key == key || diagnostic.key.rfind(key + ".", 0) == 0 ||
              diagnostic.key.rfind(key + "[", 0) == 0) {
            about_failed = true;
          }
        }
        if (!about_failed) diagnostics_.push_back(std::move(diagnostic));
      }
    }
    // File order; problems without a place last.
    std::stable_sort(diagnostics_.begin(), diagnostics_.end(), [](const Diagnostic& a, const Diagnostic& b) {
      const int line_a = a.line > 0 ? a.line : std::numeric_limits<int>::max();
      const int line_b = b.line > 0 ? b.line : std::numeric_limits<int>::max();
      return std::tie(line_a, a.column) < std::tie(line_b, b.column);
    });
    result.diagnostics = std::move(diagnostics_);
    if (parsed && result.diagnostics.empty()) result.job = std::move(job_);
    return result;
  }

  std::string file_;
  std::filesystem::path base_directory_;
  JobConfig job_;
  std::vector<Diagnostic> diagnostics_;
  std::set<std::string> failed_;
};

}  // namespace

LoadResult load_job_config_from_string(const std::string& yaml, const std::string& file_name) {
  Loader loader(file_name, {});
  return loader.load(yaml);
}

LoadResult load_job_config(const std::string& path) {
  LoadResult result;
  const auto fail = [&](std::string message) {
    result.diagnostics.push_back({path, 0, 0, {}, std::move(message)});
    return result;
  };
  std::error_code code;
  const auto status = std::filesystem::status(path, code);
  if (code || !std::filesystem::exists(status)) return fail("cannot read the job file: it does not exist");
  if (std::filesystem::is_directory(status)) return fail("cannot read the job file: it is a directory");
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return fail("cannot open the job file for reading");
  std::string text;
  char buffer[65536];
  while (stream.read(buffer, sizeof buffer) || stream.gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(stream.gcount()));
    if (text.size() > detail::kMaxYamlBytes) {
      return fail("the file is larger than " + std::to_string(detail::kMaxYamlBytes) +
                  " bytes; a job file is small YAML");
    }
  }
  if (stream.bad()) return fail("reading the job file failed");
  Loader loader(path, std::filesystem::path(path).parent_path());
  return loader.load(text);
}

}  // namespace hybridshard::service
