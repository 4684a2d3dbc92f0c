// JobConfig::validate (the cross-field checks), Diagnostic::format and the quickstart job.
#include "hybridshard/service/config/job_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string_view>

#include "config_text.h"
#include "hybridshard/service/config/units.h"

namespace hybridshard::service {

namespace detail {

std::string closest_word(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string best;
  std::size_t best_distance = std::string::npos;
  for (std::string_view candidate : candidates) {
    // Levenshtein distance, one row at a time.
    std::vector<std::size_t> row(candidate.size() + 1);
    for (std::size_t j = 0; j <= candidate.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= word.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= candidate.size(); ++j) {
        const std::size_t above = row[j];
        const std::size_t cost = word[i - 1] == candidate[j - 1] ? 0 : 1;
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
        diagonal = above;
      }
    }
    if (row.back() < best_distance) {
      best_distance = row.back();
      best = std::string(candidate);
    }
  }
  // Close enough to be a typo: a third of the word, at least 2 edits; or a prefix ("tensor_model" -> "..._size").
  const std::size_t allowed = std::max<std::size_t>(2, word.size() / 3);
  if (best_distance <= allowed) return best;
  for (std::string_view candidate : candidates) {
    if (word.size() >= 4 && candidate.substr(0, word.size()) == word) return std::string(candidate);
  }
  return {};
}

std::string join_words(const std::vector<std::string_view>& words, std::string_view last) {
  std::string text;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) text += i + 1 == words.size() ? " " + std::string(last) + " " : ", ";
    text += words[i];
  }
  return text;
}

std::string join_numbers(const std::vector<long long>& numbers, std::string_view last) {
  std::vector<std::string> texts;
  for (long long number : numbers) texts.push_back(std::to_string(number));
  return join_words(std::vector<std::string_view>(texts.begin(), texts.end()), last);
}

std::string format_number(double value) {
  char text[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*g", precision, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  return text;
}

}  // namespace detail

std::string Diagnostic::format() const {
  std::string text = file.empty() ? std::string("<job>") : file;
  if (line > 0) {
    text += ":" + std::to_string(line);
    if (column > 0) text += ":" + std::to_string(column);
  }
  text += ": error: ";
  if (!key.empty()) text += key + ": ";
  text += message;
  return text;
}

namespace {

// Words that name a key in core's messages, and the job key they belong to.
struct KeyWord {
  std::string_view word;
  std::string_view key;
};

// The key of `section_keys` that a core message names first (e.g. "tensor_model_parallel_size 3 does not divide
// num_attention_heads 32" -> "train.tensor_model_parallel_size"); `fallback` when none does.
std::string key_named_in(const std::string& message, const std::vector<KeyWord>& section_keys,
                         const std::string& fallback) {
  std::size_t best = std::string::npos;
  std::string key = fallback;
  for (const KeyWord& candidate : section_keys) {
    std::size_t at = message.find(candidate.word);
    // Whole words only ("tp" must not match inside "output").
    while (at != std::string::npos) {
      const bool start_ok =
          at == 0 || !(std::isalnum(static_cast<unsigned char>(message[at - 1])) || message[at - 1] == '_');
      const std::size_t end = at + candidate.word.size();
      const bool end_ok =
          end >= message.size() || !(std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '_');
      if (start_ok && end_ok) break;
      at = message.find(candidate.word, at + 1);
    }
    if (at < best) {
      best = at;
      key = std::string(candidate.key);
    }
  }
  return key;
}

const std::vector<KeyWord>& train_keys() {
  static const std::vector<KeyWord> kTrainKeys{
      {"tensor_model_parallel_size", "train.tensor_model_parallel_size"},
      {"pipeline_model_parallel_size", "train.pipeline_model_parallel_size"},
      {"virtual_pipeline_model_parallel_size", "train.virtual_pipeline_model_parallel_size"},
      {"make_vocab_size_divisible_by", "train.make_vocab_size_divisible_by"},
      {"expert_model_parallel_size", "train.expert_model_parallel_size"},
      {"expert_tensor_parallel_size", "train.expert_tensor_parallel_size"},
      {"tp", "train.tensor_model_parallel_size"},
      {"pp", "train.pipeline_model_parallel_size"},
      {"vpp", "train.virtual_pipeline_model_parallel_size"},
  };
  return kTrainKeys;
}

class Validator {
 public:
  explicit Validator(const JobConfig& job) : job_(job) {}

  std::vector<Diagnostic> run() {
    check_layouts();
    check_rollout();
    check_memory();
    check_schedule();
    check_runtime();
    check_metrics();
    return std::move(diagnostics_);
  }

 private:
  void error(const std::string& key, std::string message) {
    for (const Diagnostic& existing : diagnostics_) {
      if (existing.key == key && existing.message == message) return;
    }
    Diagnostic diagnostic{job_.file, 0, 0, key, std::move(message)};
    // Where the key was written; else its section; else no place.
    std::string lookup = key;
    while (!lookup.empty()) {
      auto it = job_.positions.find(lookup);
      if (it != job_.positions.end()) {
        diagnostic.line = it->second.line;
        diagnostic.column = it->second.column;
        if (lookup == key && !it->second.key.empty()) diagnostic.key = it->second.key;
        break;
      }
      const std::size_t dot = lookup.rfind('.');
      lookup = dot == std::string::npos ? std::string() : lookup.substr(0, dot);
    }
    diagnostics_.push_back(std::move(diagnostic));
  }

  bool positive(const std::string& key, std::int64_t value) {
    if (value >= 1) return true;
    error(key, "must be at least 1, got " + std::to_string(value));
    return false;
  }

  // Train tensor-parallel sizes (or pipeline sizes) that would work with everything else unchanged.
  std::vector<long long> working_train(bool vary_tp) const {
    std::vector<long long> values;
    const int world = job_.runtime.world_size;
    for (int candidate = 1; candidate <= std::min(world, 1024); ++candidate) {
      core::TrainLayout layout = job_.train;
      (vary_tp ? layout.tp : layout.pp) = candidate;
      if (world % (layout.tp * layout.pp) != 0) continue;
      layout.dp = world / (layout.tp * layout.pp);
      // Only this key's own problems count: a bad pipeline size must not hide the tensor-parallel sizes that work.
      const std::string varied = vary_tp ? "train.tensor_model_parallel_size" : "train.pipeline_model_parallel_size";
      bool works = true;
      for (const std::string& problem : layout.validate(job_.model.spec)) {
        if (key_named_in(problem, train_keys(), "train") == varied) works = false;
      }
      if (works) values.push_back(candidate);
    }
    return values;
  }

  std::vector<long long> working_rollout() const {
    std::vector<long long> values;
    const int world = job_.runtime.world_size;
    for (int candidate = 1; candidate <= std::min(world, 1024); ++candidate) {
      if (world % candidate != 0) continue;
      core::InferenceLayout layout = job_.rollout;
      layout.tp = candidate;
      layout.world_size = world;
      if (!layout.validate(job_.model.spec).empty()) continue;
      if (job_.runtime.strategy == core::Strategy::kSeed) {
        core::TrainLayout train = job_.train;
        if (!core::strategy_applies(job_.runtime.strategy, train, layout)) continue;
      }
      values.push_back(candidate);
    }
    return values;
  }

  static std::string suggestion(const std::string& what, const std::vector<long long>& values) {
    if (values.empty()) return "";
    return "; " + what + " values that work here: " + detail::join_numbers(values, "or");
  }

  void check_layouts() {
    const core::ModelSpec& spec = job_.model.spec;
    const core::TrainLayout& train = job_.train;
    const int world = job_.runtime.world_size;
    bool usable = positive("runtime.world_size", world);
    usable &= positive("train.tensor_model_parallel_size", train.tp);
    usable &= positive("train.pipeline_model_parallel_size", train.pp);
    usable &= positive("train.virtual_pipeline_model_parallel_size", train.vpp);
    usable &= positive("train.make_vocab_size_divisible_by", train.make_vocab_size_divisible_by);
    usable &= positive("rollout.tensor_model_parallel_size", job_.rollout.tp);
    if (job_.rollout.tp != job_.rollout_settings.tensor_model_parallel_size) {
      error("rollout.tensor_model_parallel_size", "the rollout layout says " + std::to_string(job_.rollout.tp) +
                                                      " but the rollout settings say " +
                                                      std::to_string(job_.rollout_settings.tensor_model_parallel_size));
    }

    const std::vector<std::string> spec_problems = spec.validate();
    static const std::vector<KeyWord> kModelKeys{
        {"num_hidden_layers", "model.num_hidden_layers"},
        {"hidden_size", "model.hidden_size"},
        {"num_attention_heads", "model.num_attention_heads"},
        {"num_key_value_heads", "model.num_key_value_heads"},
        {"intermediate_size", "model.intermediate_size"},
        {"vocab_size", "model.vocab_size"},
        {"head_dim", "model.head_dim"},
        {"rope_theta", "model.rope_theta"},
        {"rms_norm_eps", "model.rms_norm_eps"},
        {"max_position_embeddings", "model.max_position_embeddings"},
        {"num_experts_per_tok", "model.num_experts_per_tok"},
        {"num_experts", "model.num_experts"},
        {"moe_intermediate_size", "model.moe_intermediate_size"},
        {"decoder_sparse_step", "model.decoder_sparse_step"},
    };
    const std::string model_fallback = job_.model.checkpoint.empty() ? "model" : "model.checkpoint";
    for (const std::string& problem : spec_problems) {
      error(job_.model.checkpoint.empty() ? key_named_in(problem, kModelKeys, model_fallback) : model_fallback,
            problem);
    }
    if (!usable || !spec_problems.empty()) return;

    const int group = train.tp * train.pp;
    if (world % group != 0) {
      std::vector<long long> worlds;
      for (int k = 1; k <= 4; ++k) worlds.push_back(static_cast<long long>(group) * k);
      error("runtime.world_size", std::to_string(world) +
                                      " is not a multiple of train tensor_model_parallel_size x "
                                      "pipeline_model_parallel_size = " +
                                      std::to_string(group) + "; use " + detail::join_numbers(worlds, "or") +
                                      suggestion(" (or a train tensor_model_parallel_size", working_train(true)) +
                                      (working_train(true).empty() ? "" : ")"));
      return;
    }
    if (train.world_size() != world) {
      error("train", "data parallel size " + std::to_string(train.dp) + " does not match world_size " +
                         std::to_string(world) + " / (tp x pp) = " + std::to_string(world / group));
    }
    if (job_.rollout.world_size != world) {
      error("rollout", "the rollout layout spans " + std::to_string(job_.rollout.world_size) +
                           " ranks but runtime.world_size is " + std::to_string(world) +
                           "; rollout and training share the same ranks");
    }
    bool rollout_ok = true;
    if (world % job_.rollout.tp != 0) {
      rollout_ok = false;
      error("rollout.tensor_model_parallel_size", std::to_string(job_.rollout.tp) + " does not divide world_size " +
                                                      std::to_string(world) +
                                                      suggestion("tensor_model_parallel_size", working_rollout()));
    }

    for (const std::string& problem : train.validate(spec)) {
      const std::string key = key_named_in(problem, train_keys(), "train");
      std::string hint;
      if (key == "train.tensor_model_parallel_size")
        hint = suggestion("tensor_model_parallel_size", working_train(true));
      if (key == "train.pipeline_model_parallel_size") {
        hint = suggestion("pipeline_model_parallel_size", working_train(false));
      }
      error(key, problem + hint);
    }
    if (!rollout_ok) return;
    for (const std::string& problem : job_.rollout.validate(spec)) {
      if (problem.find("enable_expert_parallel") != std::string::npos) {
        error("rollout.enable_expert_parallel", problem);
        continue;
      }
      error("rollout.tensor_model_parallel_size",
            problem + suggestion("tensor_model_parallel_size", working_rollout()));
    }
    if (job_.runtime.strategy == core::Strategy::kSeed && spec.is_moe()) {
      error("runtime.strategy", "the seed strategy has no Mixture-of-Experts path (" +
                                    std::string(core::architecture_name(spec.architecture)) +
                                    "); use strategy: hybridshard");
    }
    if (job_.runtime.strategy == core::Strategy::kSeed &&
        !core::strategy_applies(job_.runtime.strategy, train, job_.rollout)) {
      error("runtime.strategy",
            "the seed strategy needs the rollout tensor_model_parallel_size to divide the train "
            "one (" +
                std::to_string(job_.rollout.tp) + " does not divide " + std::to_string(train.tp) +
                "); use strategy: hybridshard");
    }
  }

  void check_rollout() {
    const RolloutConfig& rollout = job_.rollout_settings;
    const core::ModelSpec& spec = job_.model.spec;
    if (!(rollout.gpu_memory_utilization > 0.0 && rollout.gpu_memory_utilization <= 1.0)) {
      error("rollout.gpu_memory_utilization",
            detail::format_number(rollout.gpu_memory_utilization) + " is out of range; use a fraction above 0 up to 1");
    }
    bool sizes_ok = positive("rollout.max_new_tokens", rollout.max_new_tokens);
    sizes_ok &= positive("rollout.prompt_length", rollout.prompt_length);
    sizes_ok &= positive("rollout.prompts_per_replica", rollout.prompts_per_replica);
    if (rollout.kv_cache_bytes < 0) error("rollout.kv_cache_bytes", "must not be negative");
    if (rollout.check_max_parameters < 0) error("rollout.check_max_parameters", "must not be negative");

    std::int64_t prompt_length = rollout.prompt_length;
    if (!rollout.prompts.empty()) {
      prompt_length = static_cast<std::int64_t>(rollout.prompts.front().size());
      for (std::size_t row = 0; row < rollout.prompts.size(); ++row) {
        const auto& tokens = rollout.prompts[row];
        const std::string key = "rollout.prompts";
        if (tokens.empty()) {
          error(key, "prompt " + std::to_string(row) + " is empty; every prompt needs at least one token");
        } else if (static_cast<std::int64_t>(tokens.size()) != prompt_length) {
          error(key, "prompt " + std::to_string(row) + " has " + std::to_string(tokens.size()) +
                         " tokens but prompt 0 has " + std::to_string(prompt_length) +
                         "; every prompt must have the same length");
        }
        for (std::int32_t token : tokens) {
          if (spec.vocab_size > 0 && (token < 0 || token >= spec.vocab_size)) {
            error(key, "prompt " + std::to_string(row) + " has token id " + std::to_string(token) +
                           ", outside the vocabulary [0, " + std::to_string(spec.vocab_size) + ")");
            break;
          }
        }
      }
    }
    if (sizes_ok && prompt_length + rollout.max_new_tokens > spec.max_position_embeddings) {
      error("rollout.max_new_tokens", "prompt length " + std::to_string(prompt_length) + " + max_new_tokens " +
                                          std::to_string(rollout.max_new_tokens) +
                                          " exceeds the model's max_position_embeddings " +
                                          std::to_string(spec.max_position_embeddings));
    }

    const core::TrainLayout& train = job_.train;
    const int world = job_.runtime.world_size;
    if (!sizes_ok || train.tp < 1 || train.pp < 1 || world < 1 || job_.rollout.tp < 1) return;
    if (world % (train.tp * train.pp) != 0 || world % job_.rollout.tp != 0) return;
    const std::int64_t dp = world / (train.tp * train.pp);
    if (!rollout.prompts.empty() &&
        static_cast<std::int64_t>(rollout.prompts.size()) != rollout.prompts_per_replica * dp) {
      error("rollout.prompts", std::to_string(rollout.prompts.size()) +
                                   " prompts given, but the batch has prompts_per_replica x train data parallel "
                                   "size = " +
                                   std::to_string(rollout.prompts_per_replica) + " x " + std::to_string(dp) + " = " +
                                   std::to_string(rollout.prompts_per_replica * dp) + " rows");
    }
    const std::int64_t rollout_replicas = world / job_.rollout.tp;
    const std::int64_t rows = rollout.prompts_per_replica * dp;
    if (rows < rollout_replicas) {
      const std::int64_t needed = (rollout_replicas + dp - 1) / dp;
      error("rollout.prompts_per_replica",
            "the batch has " + std::to_string(rows) + " rows (prompts_per_replica x train data parallel size " +
                std::to_string(dp) + ") for " + std::to_string(rollout_replicas) +
                " rollout replicas (world_size / rollout tensor_model_parallel_size); every replica needs a row: "
                "use at least " +
                std::to_string(needed));
    }
  }

  void check_memory() {
    const MemoryConfig& memory = job_.memory;
    if (memory.bucket_bytes < 4096) {
      error("memory.bucket_bytes", format_bytes(memory.bucket_bytes) +
                                       " is too small; use at least 4KiB (256MiB is "
                                       "the default)");
    }
  }

  void check_schedule() {
    if (job_.schedule.iterations < 1) positive("schedule.iterations", job_.schedule.iterations);
    if (!(job_.schedule.learning_rate > 0.0) || !std::isfinite(job_.schedule.learning_rate)) {
      error("schedule.learning_rate", "must be a positive number");
    }
  }

  void check_runtime() {
    const RuntimeConfig& runtime = job_.runtime;
    std::set<int> seen;
    for (int device : runtime.devices) {
      if (device < 0) error("runtime.devices", "device " + std::to_string(device) + " is negative");
      if (!seen.insert(device).second) {
        error("runtime.devices", "device " + std::to_string(device) + " is listed twice; one rank per device");
      }
    }
    if (runtime.master_addr.empty()) error("runtime.master_addr", "must name a host, e.g. 127.0.0.1");
    if (runtime.master_port < 0 || runtime.master_port > 65535) {
      error("runtime.master_port", std::to_string(runtime.master_port) + " is not a port (0-65535)");
    }
    if (runtime.timeout.count() <= 0) error("runtime.timeout", "must be positive, e.g. 30s");
    if (runtime.cpu_device_memory <= 0) error("runtime.cpu_device_memory", "must be positive, e.g. 1GiB");
    if (runtime.device_memory < 0) error("runtime.device_memory", "must not be negative (0: ask the device)");
  }

  void check_metrics() {
    const MetricsConfig& metrics = job_.metrics;
    if (!metrics.listen.empty()) {
      const std::string& listen = metrics.listen;
      const std::size_t colon = listen.rfind(':');
      std::string host = colon == std::string::npos ? std::string() : listen.substr(0, colon);
      const std::string port = colon == std::string::npos ? std::string() : listen.substr(colon + 1);
      const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
      bool ok = !host.empty() && !port.empty() && port.size() <= 5 &&
                std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (ok) ok = std::stoi(port) <= 65535;
      if (ok && !bracketed && host.find(':') != std::string::npos) ok = false;  // IPv6 needs [..]
      if (!ok) {
        error("metrics.listen", "'" + listen +
                                    "' is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464, or \"\" for "
                                    "no endpoint)");
      }
    }
    if (!(metrics.sample_interval_seconds > 0.0) || !std::isfinite(metrics.sample_interval_seconds)) {
      error("metrics.sample_interval_seconds", "must be a positive number of seconds");
    }
  }

  const JobConfig& job_;
  std::vector<Diagnostic> diagnostics_;
};

}  // namespace

std::vector<Diagnostic> JobConfig::validate() const { return Validator(*this).run(); }

std::string default_job_yaml() {
  return R"(# The quickstart: 4 CPU ranks over Gloo on this host, a tiny Llama (the "tiny" preset, spelled out),
# trained with tensor parallel 2 x pipeline parallel 2 and generating with tensor parallel 1.
model:
  architecture: llama
  num_hidden_layers: 4
  hidden_size: 64
  num_attention_heads: 4
  num_key_value_heads: 2
  intermediate_size: 128
  vocab_size: 500
  tie_word_embeddings: false
  dtype: bf16
  rope_theta: 10000
  rms_norm_eps: 1.0e-6
  seed: 1
train:
  tensor_model_parallel_size: 2
  pipeline_model_parallel_size: 2
  virtual_pipeline_model_parallel_size: 1
rollout:
  tensor_model_parallel_size: 1
  gpu_memory_utilization: 0.5
  max_new_tokens: 8
  prompt_length: 8
  prompts_per_replica: 4
  check: true
memory:
  exit_policy: free
  offload_optimizer_in_rollout: true
  offload_grads_in_rollout: true
  free_kv_cache_in_train: true
  bucket_bytes: 1MiB
schedule:
  iterations: 3
  learning_rate: 0.01
runtime:
  world_size: 4
  backend: gloo
  strategy: hybridshard
  master_addr: 127.0.0.1
  master_port: 0
  timeout: 30s
  cpu_device_memory: 1GiB
metrics:
  listen: 127.0.0.1:9464
  record: ""
  sample_interval_seconds: 0.5
)";
}

}  // namespace hybridshard::service
