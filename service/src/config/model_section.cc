// The `model` section: a Hugging Face checkpoint, a preset, or the shape keys (with their Megatron aliases); keys
// beside a checkpoint must agree with its config.json.
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config_text.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "job_reader.h"

namespace hybridshard::service::detail {
namespace {

// Where a model key was given, and its path as written (an alias such as "model.num_layers").
struct Given {
  const YamlNode* node = nullptr;
  std::string spelled;
};

// The shape keys as written (canonical Hugging Face names), before they meet the base shape.
struct ModelKeys {
  std::map<std::string, Given> given;            // "model.num_hidden_layers" -> where
  std::map<std::string, std::int64_t> integers;  // "num_hidden_layers" -> value
  std::optional<core::Architecture> architecture;
  std::optional<core::DType> dtype;
  std::optional<bool> tie;
  std::optional<double> rope_theta;
  std::optional<double> rms_norm_eps;
  const YamlNode* checkpoint = nullptr;
  const YamlNode* preset = nullptr;
};

// An integer shape key (or its Megatron alias); an alias and its Hugging Face name must agree.
void read_shape_integer(JobReader& reader, ModelKeys& keys, const YamlNode& value, const std::string& key,
                        const std::string& name) {
  const std::string canonical = "model." + name;
  const std::int64_t min = name == "head_dim" ? 0 : 1;
  const std::int64_t max = name == "vocab_size" ? std::int64_t{1} << 31 : std::int64_t{1} << 24;
  auto v = reader.integer(value, key, min, max);
  if (!v) {
    reader.mark_failed(canonical);
    return;
  }
  if (auto previous = keys.given.find(canonical); previous != keys.given.end()) {
    if (keys.integers[name] != *v) {
      reader.error(value, key,
                   std::to_string(*v) + " conflicts with " + previous->second.spelled + " " +
                       std::to_string(keys.integers[name]) + " (line " + std::to_string(previous->second.node->line) +
                       "); give one of them");
      reader.mark_failed(canonical);
    }
    return;
  }
  keys.integers[name] = *v;
  keys.given[canonical] = {&value, key};
  reader.remember(canonical, value, key);
}

ModelKeys read_model_keys(JobReader& reader, const YamlNode& node) {
  static const std::map<std::string_view, std::string_view> kAliases{
      {"num_layers", "num_hidden_layers"},
      {"num_query_groups", "num_key_value_heads"},
      {"ffn_hidden_size", "intermediate_size"},
      {"num_moe_experts", "num_experts"},
      {"moe_router_topk", "num_experts_per_tok"},
      {"moe_ffn_hidden_size", "moe_intermediate_size"},
      {"moe_shared_expert_intermediate_size", "shared_expert_intermediate_size"},
  };
  const std::vector<std::string_view> architectures = {"llama", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "mixtral"};
  JobConfig& job = reader.job();
  ModelKeys keys;
  reader.section(node, "model",
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
                  "moe_ffn_hidden_size",
                  "shared_expert_intermediate_size",
                  "moe_shared_expert_intermediate_size"},
                 [&](const YamlNode& value, const std::string& key) {
                   std::string name = value.key;
                   if (auto alias = kAliases.find(name); alias != kAliases.end()) name = std::string(alias->second);
                   const std::string canonical = "model." + name;
                   if (name == "checkpoint") {
                     if (auto v = reader.text(value, key)) {
                       job.model.checkpoint = *v;
                       keys.checkpoint = &value;
                     }
                   } else if (name == "preset") {
                     const auto names = core::model_preset_names();
                     if (reader.choice(value, key, std::vector<std::string_view>(names.begin(), names.end()))) {
                       job.model.preset = value.scalar;
                       keys.preset = &value;
                     }
                   } else if (name == "seed") {
                     if (auto v = reader.integer(value, key, 0, std::numeric_limits<std::uint32_t>::max())) {
                       job.model.seed = static_cast<std::uint32_t>(*v);
                     }
                   } else if (name == "architecture") {
                     if (auto v = reader.choice(value, key, architectures)) {
                       keys.architecture = core::parse_architecture(*v);
                       keys.given[canonical] = {&value, key};
                     }
                   } else if (name == "dtype") {
                     if (auto v = reader.text(value, key)) {
                       keys.dtype = core::parse_dtype(*v);
                       if (!keys.dtype) {
                         reader.error(value, key, "'" + *v + "' is not a weight dtype; use bf16, fp16 or fp32");
                       } else {
                         keys.given[canonical] = {&value, key};
                       }
                     }
                   } else if (name == "tie_word_embeddings") {
                     if ((keys.tie = reader.boolean(value, key))) keys.given[canonical] = {&value, key};
                   } else if (name == "rope_theta") {
                     if ((keys.rope_theta = reader.real(value, key, 0.0, 1e12, true)))
                       keys.given[canonical] = {&value, key};
                   } else if (name == "rms_norm_eps") {
                     if ((keys.rms_norm_eps = reader.real(value, key, 0.0, 1.0, true)))
                       keys.given[canonical] = {&value, key};
                   } else {
                     read_shape_integer(reader, keys, value, key, name);
                   }
                 });
  return keys;
}

// The base shape: the checkpoint's config.json (sets `from_checkpoint`), a preset, or the defaults.
core::ModelSpec base_spec(JobReader& reader, const ModelKeys& keys, const std::filesystem::path& base_directory,
                          bool& from_checkpoint) {
  JobConfig& job = reader.job();
  from_checkpoint = false;
  if (keys.checkpoint == nullptr)
    return keys.preset != nullptr ? *core::model_preset(job.model.preset) : core::ModelSpec{};
  if (keys.preset != nullptr)
    reader.error(*keys.preset, "model.preset", "give either a checkpoint or a preset, not both");
  std::filesystem::path directory = job.model.checkpoint;
  if (directory.is_relative() && !base_directory.empty()) directory = base_directory / directory;
  job.model.checkpoint = directory.string();
  CheckpointCheck check;
  try {
    check = check_hf_checkpoint(directory);
  } catch (const std::exception& unexpected) {
    check.problems.push_back(unexpected.what());
  }
  for (const std::string& problem : check.problems) reader.error(*keys.checkpoint, "model.checkpoint", problem);
  if (!check.spec) return core::ModelSpec{};
  from_checkpoint = true;
  return *check.spec;
}

// The keys given over the base shape; beside a checkpoint they must agree with its config.json (dtype may differ:
// weights are converted on load).
void apply_model_keys(JobReader& reader, const ModelKeys& keys, bool from_checkpoint, core::ModelSpec& spec) {
  const auto agree = [&](const std::string& name, const std::string& ours, const std::string& theirs) {
    const Given& g = keys.given.at("model." + name);
    reader.error(*g.node, g.spelled,
                 ours + " differs from " + name + " " + theirs +
                     " in the checkpoint's config.json; drop the key or use " + theirs);
  };
  const auto set = [&](const std::string& name, const auto& value, auto& field, const auto& text) {
    if (!value) return;
    if (from_checkpoint && *value != field) {
      agree(name, text(*value), text(field));
    } else {
      field = *value;
    }
  };
  const auto integer_text = [](std::int64_t value) { return std::to_string(value); };
  const auto integer = [&](const std::string& name, std::int64_t& field) {
    auto it = keys.integers.find(name);
    set(name, it == keys.integers.end() ? std::optional<std::int64_t>() : it->second, field, integer_text);
  };
  integer("num_hidden_layers", spec.num_hidden_layers);
  integer("hidden_size", spec.hidden_size);
  integer("num_attention_heads", spec.num_attention_heads);
  integer("num_key_value_heads", spec.num_key_value_heads);
  integer("intermediate_size", spec.intermediate_size);
  integer("vocab_size", spec.vocab_size);
  integer("head_dim", spec.head_dim);
  integer("max_position_embeddings", spec.max_position_embeddings);
  integer("num_experts", spec.num_experts);
  integer("num_experts_per_tok", spec.num_experts_per_tok);
  integer("moe_intermediate_size", spec.moe_intermediate_size);
  integer("decoder_sparse_step", spec.decoder_sparse_step);
  integer("shared_expert_intermediate_size", spec.shared_expert_intermediate_size);
  set("architecture", keys.architecture, spec.architecture,
      [](core::Architecture value) { return std::string(core::architecture_name(value)); });
  set("tie_word_embeddings", keys.tie, spec.tie_word_embeddings,
      [](bool value) { return std::string(value ? "true" : "false"); });
  set("rope_theta", keys.rope_theta, spec.rope_theta, format_number);
  set("rms_norm_eps", keys.rms_norm_eps, spec.rms_norm_eps, format_number);
  if (keys.dtype) spec.dtype = *keys.dtype;
}

}  // namespace

void read_model_section(JobReader& reader, const YamlNode& node, const std::filesystem::path& base_directory) {
  const ModelKeys keys = read_model_keys(reader, node);
  bool from_checkpoint = false;
  core::ModelSpec spec = base_spec(reader, keys, base_directory, from_checkpoint);
  apply_model_keys(reader, keys, from_checkpoint, spec);
  reader.job().model.spec = spec;
}

}  // namespace hybridshard::service::detail
