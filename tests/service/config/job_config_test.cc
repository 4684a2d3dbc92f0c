// Job files: every value read, every problem reported with line, column and key path, nothing crashes or hangs.
#include "hybridshard/service/config/job_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/config/units.h"

namespace hybridshard::service {
namespace {

LoadResult load(const std::string& yaml) { return load_job_config_from_string(yaml, "job.yaml"); }

std::vector<std::string> formatted(const LoadResult& result) {
  std::vector<std::string> lines;
  for (const Diagnostic& diagnostic : result.diagnostics) lines.push_back(diagnostic.format());
  return lines;
}

std::string all_text(const LoadResult& result) {
  std::string text;
  for (const std::string& line : formatted(result)) text += line + "\n";
  return text;
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("hs-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(JobConfigTest, expert_parallel_keys_and_megatron_aliases_load_and_bad_layouts_name_the_key) {
  const LoadResult result = load(
      "model:\n  preset: qwen3-30b-a3b\n"
      "train:\n  tensor_model_parallel_size: 2\n  expert_model_parallel_size: 4\n"
      "  expert-tensor-parallel-size: 1\n"
      "rollout:\n  tensor_model_parallel_size: 4\n  enable_expert_parallel: true\n"
      "runtime:\n  world_size: 8\n");
  ASSERT_TRUE(result.job.has_value()) << all_text(result);
  EXPECT_EQ(result.job->train.ep, 4);
  EXPECT_EQ(result.job->train.etp, 1);
  EXPECT_TRUE(result.job->rollout.expert_parallel);
  const LoadResult bad = load(
      "model:\n  preset: qwen3-30b-a3b\n"
      "train:\n  expert_model_parallel_size: 3\n"
      "runtime:\n  world_size: 3\n");
  ASSERT_FALSE(bad.job.has_value());
  const std::string text = all_text(bad);
  EXPECT_NE(text.find("train.expert_model_parallel_size"), std::string::npos) << text;
  EXPECT_NE(text.find("does not divide num_experts 128"), std::string::npos) << text;
  const LoadResult keys = load(
      "model:\n  architecture: qwen3_moe\n  num_moe_experts: 8\n  num_experts_per_tok: 2\n"
      "  moe_ffn_hidden_size: 32\n  decoder_sparse_step: 2\n"
      "train:\n  expert_model_parallel_size: 2\nruntime:\n  world_size: 4\n");
  ASSERT_TRUE(keys.job.has_value()) << all_text(keys);
  EXPECT_EQ(keys.job->model.spec.num_experts, 8);
  EXPECT_EQ(keys.job->model.spec.moe_intermediate_size, 32);
  EXPECT_FALSE(keys.job->model.spec.layer_has_experts(0));
  EXPECT_TRUE(keys.job->model.spec.layer_has_experts(1));
  const LoadResult topk = load(
      "model:\n  architecture: mixtral\n  num_experts: 4\n  num_experts_per_tok: 5\n"
      "  moe_intermediate_size: 32\n");
  EXPECT_NE(all_text(topk).find("job.yaml:4:"), std::string::npos) << all_text(topk);
  EXPECT_NE(all_text(topk).find("model.num_experts_per_tok"), std::string::npos) << all_text(topk);
  // qwen2_moe: the shared expert's width by its Hugging Face or Megatron name; beside qwen3_moe it is refused at
  // its line.
  const LoadResult shared = load(
      "model:\n  architecture: qwen2_moe\n  num_experts: 4\n  num_experts_per_tok: 2\n"
      "  moe_intermediate_size: 32\n  moe_shared_expert_intermediate_size: 64\n"
      "train:\n  expert_model_parallel_size: 2\nruntime:\n  world_size: 4\n");
  ASSERT_TRUE(shared.job.has_value()) << all_text(shared);
  EXPECT_EQ(shared.job->model.spec.shared_expert_intermediate_size, 64);
  const LoadResult stray = load(
      "model:\n  architecture: qwen3_moe\n  num_experts: 4\n  num_experts_per_tok: 2\n"
      "  moe_intermediate_size: 32\n  shared_expert_intermediate_size: 64\n");
  EXPECT_NE(all_text(stray).find("job.yaml:6:"), std::string::npos) << all_text(stray);
  EXPECT_NE(all_text(stray).find("qwen3_moe has no shared expert"), std::string::npos) << all_text(stray);
  const LoadResult odd = load(
      "model:\n  preset: qwen1.5-moe-a2.7b\n  shared_expert_intermediate_size: 5633\n"
      "train:\n  tensor_model_parallel_size: 2\nruntime:\n  world_size: 2\n");
  EXPECT_NE(all_text(odd).find("train.tensor_model_parallel_size"), std::string::npos) << all_text(odd);
  EXPECT_NE(all_text(odd).find("does not divide shared_expert_intermediate_size 5633"), std::string::npos)
      << all_text(odd);
  const LoadResult dense = load("train:\n  expert_model_parallel_size: 2\nruntime:\n  world_size: 2\n");
  EXPECT_NE(all_text(dense).find("llama has none"), std::string::npos) << all_text(dense);
}

TEST(JobConfigTest, quickstart_job_loads_without_diagnostics) {
  const LoadResult result = load(default_job_yaml());
  ASSERT_TRUE(result.job.has_value()) << all_text(result);
  const JobConfig& job = *result.job;
  EXPECT_EQ(job.runtime.world_size, 4);
  EXPECT_EQ(job.runtime.backend, BackendChoice::kGloo);
  EXPECT_EQ(job.train.tp, 2);
  EXPECT_EQ(job.train.pp, 2);
  EXPECT_EQ(job.train.dp, 1);
  EXPECT_EQ(job.rollout.tp, 1);
  EXPECT_EQ(job.rollout.world_size, 4);
  EXPECT_EQ(job.schedule.iterations, 3);
  EXPECT_EQ(job.metrics.listen, "127.0.0.1:9464");
  EXPECT_EQ(job.memory.bucket_bytes, std::int64_t{1} << 20);
  EXPECT_EQ(job.runtime.timeout, std::chrono::seconds(30));
  EXPECT_EQ(job.model.spec.num_hidden_layers, 4);
  EXPECT_EQ(job.model.spec.vocab_size, 500);
  EXPECT_EQ(job.model.spec.architecture, core::Architecture::kLlama);
  EXPECT_EQ(job.model.spec.dtype, core::DType::kBFloat16);
  EXPECT_TRUE(job.validate().empty());
}

TEST(JobConfigTest, every_section_reads_its_values) {
  const LoadResult result = load(R"(model:
  preset: qwen2.5-7b
  num_layers: 4
  dtype: fp16
  seed: 7
train:
  tensor_model_parallel_size: 2
  pipeline_model_parallel_size: 2
  virtual_pipeline_model_parallel_size: 2
  make_vocab_size_divisible_by: 64
rollout:
  tensor_model_parallel_size: 2
  gpu_memory_utilization: 0.75
  max_new_tokens: 3
  prompts: [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]
  kv_cache_bytes: 64MiB
  check: false
  check_max_parameters: 1_000
memory:
  exit_policy: offload
  release_on_exit: cache
  offload_optimizer_in_rollout: false
  free_grads_in_rollout: true
  offload_params_in_rollout: true
  free_kv_cache_in_train: false
  bucket_bytes: 1.5MiB
schedule: {iterations: 5, learning_rate: 1e-4}
runtime:
  world_size: 8
  backend: nccl
  strategy: seed
  transport: sendrecv
  devices: [0, 1, 2, 3, 4, 5, 6, 7]
  master_addr: node-a
  master_port: 29500
  timeout: 1.5s
  cpu_device_memory: 2GB
  device_memory: 79GiB
metrics: {listen: "[::1]:9000", record: run.jsonl, sample_interval_seconds: 2, serve_priority: low,
          max_requests_per_second: 10}
)");
  ASSERT_TRUE(result.job.has_value()) << all_text(result);
  const JobConfig& job = *result.job;
  EXPECT_EQ(job.model.preset, "qwen2.5-7b");
  EXPECT_EQ(job.model.spec.architecture, core::Architecture::kQwen2);
  EXPECT_EQ(job.model.spec.num_hidden_layers, 4);
  EXPECT_EQ(job.model.spec.hidden_size, 3584);
  EXPECT_EQ(job.model.spec.dtype, core::DType::kFloat16);
  EXPECT_EQ(job.model.seed, 7u);
  EXPECT_EQ(job.train.vpp, 2);
  EXPECT_EQ(job.train.dp, 2);
  EXPECT_EQ(job.train.make_vocab_size_divisible_by, 64);
  EXPECT_EQ(job.rollout.tp, 2);
  EXPECT_DOUBLE_EQ(job.generation.gpu_memory_utilization, 0.75);
  EXPECT_EQ(job.generation.prompts.size(), 4u);
  EXPECT_EQ(job.generation.prompts_per_train_replica, 2);  // 4 prompts over 2 train replicas
  EXPECT_EQ(job.generation.kv_cache_bytes, 64 << 20);
  EXPECT_FALSE(job.generation.check);
  EXPECT_EQ(job.generation.check_max_parameters, 1000);
  EXPECT_EQ(job.memory.exit_policy, core::ExitPolicy::kOffload);
  EXPECT_EQ(job.memory.release_on_exit, core::ReleaseOnExit::kCache);
  EXPECT_FALSE(job.memory.offload_optimizer_in_rollout);
  EXPECT_TRUE(job.memory.free_grads_in_rollout);
  EXPECT_TRUE(job.memory.offload_params_in_rollout);
  EXPECT_FALSE(job.memory.free_kv_cache_in_train);
  EXPECT_EQ(job.memory.bucket_bytes, 3 << 19);
  EXPECT_EQ(job.schedule.iterations, 5);
  EXPECT_DOUBLE_EQ(job.schedule.learning_rate, 1e-4);
  EXPECT_EQ(job.runtime.backend, BackendChoice::kNccl);
  EXPECT_EQ(job.runtime.strategy, core::Strategy::kSeed);
  EXPECT_EQ(job.runtime.transport, core::Transport::kSendRecv);
  EXPECT_EQ(job.runtime.devices.size(), 8u);
  EXPECT_EQ(job.runtime.master_addr, "node-a");
  EXPECT_EQ(job.runtime.master_port, 29500);
  EXPECT_EQ(job.runtime.timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(job.runtime.cpu_device_memory, 2'000'000'000);
  EXPECT_EQ(job.runtime.device_memory, std::int64_t{79} << 30);
  EXPECT_EQ(job.metrics.listen, "[::1]:9000");
  EXPECT_EQ(job.metrics.record, "run.jsonl");
  EXPECT_DOUBLE_EQ(job.metrics.sample_interval_seconds, 2.0);
  EXPECT_EQ(job.metrics.serve_priority, "low");
  EXPECT_DOUBLE_EQ(job.metrics.max_requests_per_second, 10.0);
  EXPECT_EQ(job.positions.at("train.tensor_model_parallel_size").line, 7);
  EXPECT_EQ(job.positions.at("train.tensor_model_parallel_size").column, 31);
}

TEST(JobConfigTest, diagnostic_formats_file_line_column_key_and_message) {
  const Diagnostic placed{"job.yaml", 12, 5, "train.tensor_model_parallel_size", "3 does not divide 32"};
  EXPECT_EQ(placed.format(), "job.yaml:12:5: error: train.tensor_model_parallel_size: 3 does not divide 32");
  const Diagnostic unplaced{"job.yaml", 0, 0, "runtime.world_size", "must be at least 1"};
  EXPECT_EQ(unplaced.format(), "job.yaml: error: runtime.world_size: must be at least 1");
}

TEST(JobConfigTest, unknown_key_names_its_place_and_the_closest_known_key) {
  const LoadResult result = load("train:\n  tensor_model_paralel_size: 2\n");
  ASSERT_FALSE(result.job.has_value());
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_EQ(result.diagnostics[0].format(),
            "job.yaml:2:3: error: train.tensor_model_paralel_size: unknown key 'tensor_model_paralel_size'; did you "
            "mean 'tensor_model_parallel_size'?");
}

TEST(JobConfigTest, unknown_section_lists_the_known_ones_when_nothing_is_close) {
  const LoadResult result = load("optimizer:\n  lr: 1\n");
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_EQ(result.diagnostics[0].line, 1);
  EXPECT_NE(
      result.diagnostics[0].message.find("model, train, rollout, memory, schedule, runtime, metrics and topology"),
      std::string::npos)
      << result.diagnostics[0].message;
}

TEST(JobConfigTest, wrong_types_are_reported_at_the_value) {
  const LoadResult result = load(R"(train:
  tensor_model_parallel_size: two
rollout:
  check: maybe
  gpu_memory_utilization: [0.5]
runtime:
  world_size: "4"
)");
  ASSERT_FALSE(result.job.has_value());
  const auto lines = formatted(result);
  ASSERT_EQ(lines.size(), 4u) << all_text(result);
  EXPECT_EQ(lines[0], "job.yaml:2:31: error: train.tensor_model_parallel_size: expected a whole number, got 'two'");
  EXPECT_EQ(lines[1], "job.yaml:4:10: error: rollout.check: expected true or false, got 'maybe'");
  EXPECT_EQ(lines[2], "job.yaml:5:27: error: rollout.gpu_memory_utilization: expected a number, got a list");
  EXPECT_EQ(lines[3], "job.yaml:7:15: error: runtime.world_size: expected a whole number, got the quoted text \"4\"");
}

TEST(JobConfigTest, every_problem_is_reported_at_once_in_file_order) {
  const LoadResult result = load(R"(runtime:
  world_size: 0
schedule:
  iterations: -3
  learning_rate: 0
memory:
  exit_policy: drop
  bucket_bytes: -1MiB
)");
  ASSERT_FALSE(result.job.has_value());
  ASSERT_EQ(result.diagnostics.size(), 5u) << all_text(result);
  int previous_line = 0;
  for (const Diagnostic& diagnostic : result.diagnostics) {
    EXPECT_GT(diagnostic.line, previous_line);
    previous_line = diagnostic.line;
  }
  EXPECT_EQ(result.diagnostics[0].key, "runtime.world_size");
  EXPECT_EQ(result.diagnostics[0].message, "0 is too small; at least 1");
  EXPECT_EQ(result.diagnostics[3].message, "'drop' is not one of free or offload");
  EXPECT_NE(result.diagnostics[4].message.find("cannot be negative"), std::string::npos);
}

TEST(JobConfigTest, release_on_exit_defaults_to_the_driver_and_refuses_other_values_naming_line_and_key) {
  const LoadResult defaults = load("runtime:\n  world_size: 4\n");
  ASSERT_TRUE(defaults.job.has_value()) << all_text(defaults);
  EXPECT_EQ(defaults.job->memory.release_on_exit, core::ReleaseOnExit::kDriver);  // serves a colocated trainer
  const LoadResult result = load("memory:\n  release_on_exit: keep\n");
  ASSERT_FALSE(result.job.has_value());
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_EQ(result.diagnostics[0].format(),
            "job.yaml:2:20: error: memory.release_on_exit: 'keep' is not one of driver or cache");
}

TEST(JobConfigTest, duplicate_keys_are_errors_naming_the_first) {
  const LoadResult result = load("runtime:\n  world_size: 4\n  world_size: 8\n");
  ASSERT_FALSE(result.job.has_value());
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_EQ(result.diagnostics[0].format(),
            "job.yaml:3:3: error: runtime.world_size: duplicate key 'world_size' (first given at line 2); give each "
            "key once");
}

TEST(JobConfigTest, duplicate_sections_are_errors) {
  const LoadResult result = load("train: {}\nrollout: {}\ntrain: {}\n");
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_EQ(result.diagnostics[0].line, 3);
  EXPECT_EQ(result.diagnostics[0].key, "train");
}

TEST(JobConfigTest, alias_bomb_is_refused_within_a_bounded_budget) {
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int level = 1; level <= 12; ++level) {
    yaml += "a" + std::to_string(level) + ": &a" + std::to_string(level) + " [";
    for (int k = 0; k < 10; ++k) yaml += std::string(k ? ", " : "") + "*a" + std::to_string(level - 1);
    yaml += "]\n";
  }
  const LoadResult result = load(yaml);
  ASSERT_FALSE(result.job.has_value());
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_NE(result.diagnostics[0].message.find("aliases"), std::string::npos) << result.diagnostics[0].message;
}

TEST(JobConfigTest, small_aliases_are_expanded) {
  const LoadResult result = load(R"(train: &layout
  tensor_model_parallel_size: 2
rollout:
  tensor_model_parallel_size: 2
runtime: {world_size: 2}
)");
  ASSERT_TRUE(result.job.has_value()) << all_text(result);
  const LoadResult reused = load("runtime:\n  world_size: &w 2\ntrain:\n  tensor_model_parallel_size: *w\n");
  ASSERT_TRUE(reused.job.has_value()) << all_text(reused);
  EXPECT_EQ(reused.job->train.tp, 2);
}

TEST(JobConfigTest, huge_numbers_are_reported_not_wrapped) {
  const LoadResult result = load(R"(runtime:
  world_size: 99999999999999999999999
  cpu_device_memory: 99999999999TiB
rollout:
  check_max_parameters: 9223372036854775808
)");
  ASSERT_FALSE(result.job.has_value());
  const auto lines = formatted(result);
  ASSERT_EQ(lines.size(), 3u) << all_text(result);
  EXPECT_NE(lines[0].find("runtime.world_size: 99999999999999999999999 is too large"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("larger than 2^63-1 bytes"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("rollout.check_max_parameters: 9223372036854775808 is too large"), std::string::npos)
      << lines[2];
}

TEST(JobConfigTest, syntax_error_has_line_and_column) {
  const LoadResult result = load("train:\n  tensor_model_parallel_size: [2\nrollout: {}\n");
  ASSERT_FALSE(result.job.has_value());
  ASSERT_EQ(result.diagnostics.size(), 1u) << all_text(result);
  EXPECT_GT(result.diagnostics[0].line, 0);
  EXPECT_NE(result.diagnostics[0].message.find("YAML syntax"), std::string::npos);
}

TEST(JobConfigTest, empty_binary_and_non_mapping_files_are_errors) {
  for (const std::string& text : {std::string(), std::string("   \n# only a comment\n")}) {
    const LoadResult result = load(text);
    ASSERT_EQ(result.diagnostics.size(), 1u);
    EXPECT_NE(result.diagnostics[0].message.find("empty"), std::string::npos);
  }
  const LoadResult binary = load(std::string("model:\n  preset: ti\0ny\n", 20));
  ASSERT_EQ(binary.diagnostics.size(), 1u);
  EXPECT_EQ(binary.diagnostics[0].line, 2);
  EXPECT_EQ(binary.diagnostics[0].column, 13);
  EXPECT_NE(binary.diagnostics[0].message.find("0x00"), std::string::npos);
  const LoadResult utf8 = load("model:\n  preset: \xff\xfe\n");
  ASSERT_EQ(utf8.diagnostics.size(), 1u);
  const LoadResult list = load("- model\n- train\n");
  ASSERT_EQ(list.diagnostics.size(), 1u);
  EXPECT_NE(list.diagnostics[0].message.find("mapping of sections"), std::string::npos);
  const LoadResult two = load("train: {}\n---\ntrain: {}\n");
  ASSERT_EQ(two.diagnostics.size(), 1u);
  EXPECT_NE(two.diagnostics[0].message.find("more than one YAML document"), std::string::npos);
}

TEST(JobConfigTest, deep_nesting_ends_with_an_error) {
  const std::string deep = "model: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  const LoadResult result = load(deep);
  ASSERT_FALSE(result.job.has_value());
  EXPECT_FALSE(result.diagnostics.empty());
}

TEST(JobConfigTest, megatron_alias_conflicting_with_hugging_face_name_is_an_error) {
  const LoadResult conflict = load("model:\n  num_hidden_layers: 4\n  num_layers: 8\n");
  ASSERT_EQ(conflict.diagnostics.size(), 1u) << all_text(conflict);
  EXPECT_EQ(conflict.diagnostics[0].format(),
            "job.yaml:3:15: error: model.num_layers: 8 conflicts with model.num_hidden_layers 4 (line 2); give one "
            "of them");
  const LoadResult agree = load("model:\n  num_hidden_layers: 4\n  num_layers: 4\n  ffn_hidden_size: 256\n");
  ASSERT_TRUE(agree.job.has_value()) << all_text(agree);
  EXPECT_EQ(agree.job->model.spec.intermediate_size, 256);
}

TEST(JobConfigTest, sizes_that_do_not_divide_name_the_key_and_the_values_that_work) {
  const LoadResult result = load(R"(model:
  preset: tiny
train:
  tensor_model_parallel_size: 3
runtime:
  world_size: 3
rollout:
  prompts_per_train_replica: 3
)");
  ASSERT_FALSE(result.job.has_value());
  bool found = false;
  for (const Diagnostic& diagnostic : result.diagnostics) {
    if (diagnostic.key == "train.tensor_model_parallel_size") {
      found = true;
      EXPECT_EQ(diagnostic.line, 4);
      EXPECT_NE(diagnostic.message.find("values that work here: 1"), std::string::npos) << diagnostic.message;
    }
  }
  EXPECT_TRUE(found) << all_text(result);
}

TEST(JobConfigTest, world_size_must_be_a_multiple_of_tp_times_pp) {
  const LoadResult result = load(R"(train: {tensor_model_parallel_size: 2, pipeline_model_parallel_size: 2}
runtime: {world_size: 6}
)");
  ASSERT_FALSE(result.job.has_value());
  ASSERT_FALSE(result.diagnostics.empty());
  EXPECT_EQ(result.diagnostics[0].key, "runtime.world_size");
  EXPECT_EQ(result.diagnostics[0].line, 2);
  EXPECT_NE(result.diagnostics[0].message.find("not a multiple of"), std::string::npos);
}

TEST(JobConfigTest, rollout_needs_a_row_per_replica_and_a_dividing_tp) {
  const LoadResult result = load(R"(rollout:
  tensor_model_parallel_size: 3
  prompts_per_train_replica: 1
runtime: {world_size: 4}
)");
  ASSERT_FALSE(result.job.has_value());
  const std::string text = all_text(result);
  EXPECT_NE(text.find("job.yaml:2:31: error: rollout.tensor_model_parallel_size: 3 does not divide world_size 4"),
            std::string::npos)
      << text;
  const LoadResult rows = load(
      "train: {tensor_model_parallel_size: 2, pipeline_model_parallel_size: 2}\nrollout: {prompts_per_train_replica: "
      "1}\nruntime: {world_size: 4}\n");
  ASSERT_EQ(rows.diagnostics.size(), 1u) << all_text(rows);
  EXPECT_EQ(rows.diagnostics[0].key, "rollout.prompts_per_train_replica");
  EXPECT_NE(rows.diagnostics[0].message.find("use at least 4"), std::string::npos);
}

TEST(JobConfigTest, prompts_must_be_rectangular_and_inside_the_vocabulary) {
  const LoadResult result = load(R"(model: {preset: tiny}
rollout:
  prompts: [[1, 2], [3], [4, 500], [5, 6]]
runtime: {world_size: 1}
)");
  ASSERT_FALSE(result.job.has_value());
  const std::string text = all_text(result);
  EXPECT_NE(text.find("prompt 1 has 1 tokens but prompt 0 has 2"), std::string::npos) << text;
  EXPECT_NE(text.find("prompt 2 has token id 500, outside the vocabulary [0, 500)"), std::string::npos) << text;
}

TEST(JobConfigTest, unknown_preset_and_enum_values_suggest_the_closest) {
  const LoadResult result =
      load("model: {preset: llama3-8B}\nruntime: {backend: ncl, strategy: seeds, transport: pear}\n");
  const std::string text = all_text(result);
  EXPECT_NE(text.find("model.preset: 'llama3-8B' is not one of"), std::string::npos) << text;
  EXPECT_NE(text.find("did you mean 'llama3-8b'?"), std::string::npos) << text;
  EXPECT_NE(text.find("did you mean 'nccl'?"), std::string::npos) << text;
  EXPECT_NE(text.find("did you mean 'seed'?"), std::string::npos) << text;
  EXPECT_NE(text.find("did you mean 'peer'?"), std::string::npos) << text;
}

TEST(JobConfigTest, seed_strategy_needs_rollout_tp_dividing_train_tp) {
  const LoadResult result = load(R"(train: {tensor_model_parallel_size: 1}
rollout: {tensor_model_parallel_size: 2}
runtime: {world_size: 2, strategy: seed}
)");
  ASSERT_FALSE(result.job.has_value());
  bool found = false;
  for (const Diagnostic& diagnostic : result.diagnostics) found |= diagnostic.key == "runtime.strategy";
  EXPECT_TRUE(found) << all_text(result);
}

TEST(JobConfigTest, validate_of_a_job_built_in_code_reports_without_places) {
  JobConfig job;
  job.file = "built.yaml";
  job.runtime.world_size = 4;
  job.train.tp = 2;
  job.train.pp = 2;
  job.train.dp = 1;
  job.rollout.world_size = 4;
  job.generation.prompts_per_train_replica = 4;
  EXPECT_TRUE(job.validate().empty());
  job.train.tp = 3;
  job.runtime.world_size = 6;
  const auto diagnostics = job.validate();
  ASSERT_FALSE(diagnostics.empty());
  EXPECT_EQ(diagnostics[0].line, 0);
  EXPECT_EQ(diagnostics[0].file, "built.yaml");
}

TEST(JobConfigTest, listen_address_and_timeout_are_checked) {
  const LoadResult result = load("metrics: {listen: localhost}\nruntime: {timeout: 30 parsecs}\n");
  const std::string text = all_text(result);
  EXPECT_NE(text.find("metrics.listen: 'localhost' is not HOST:PORT"), std::string::npos) << text;
  EXPECT_NE(text.find("runtime.timeout: expected a duration"), std::string::npos) << text;
}

TEST(JobConfigTest, missing_job_file_and_directory_are_reported) {
  const LoadResult missing = load_job_config("/nonexistent/job.yaml");
  ASSERT_EQ(missing.diagnostics.size(), 1u);
  EXPECT_EQ(missing.diagnostics[0].format(),
            "/nonexistent/job.yaml: error: cannot read the job file: it does not exist");
  TempDir dir;
  const LoadResult directory = load_job_config(dir.path().string());
  ASSERT_EQ(directory.diagnostics.size(), 1u);
  EXPECT_NE(directory.diagnostics[0].message.find("directory"), std::string::npos);
}

TEST(JobConfigTest, checkpoint_shape_comes_from_config_json_relative_to_the_job_file) {
  TempDir dir;
  core::ModelSpec spec = *core::model_preset("tiny");
  spec.num_hidden_layers = 2;
  spec.dtype = core::DType::kFloat32;
  write_hf_checkpoint(dir.path() / "ckpt", spec, [](const core::HfTensor& tensor, void* data) {
    std::memset(data, 0, static_cast<std::size_t>(tensor.numel()) * 4);
  });
  write_file(dir.path() / "job.yaml", "model:\n  checkpoint: ckpt\n  dtype: bf16\nruntime: {world_size: 1}\n");
  const LoadResult result = load_job_config((dir.path() / "job.yaml").string());
  ASSERT_TRUE(result.job.has_value()) << all_text(result);
  EXPECT_EQ(result.job->model.spec.num_hidden_layers, 2);
  EXPECT_EQ(result.job->model.spec.dtype, core::DType::kBFloat16);  // converted on load
  EXPECT_EQ(result.job->model.checkpoint, (dir.path() / "ckpt").string());

  write_file(dir.path() / "conflict.yaml", "model:\n  checkpoint: ckpt\n  num_hidden_layers: 4\n");
  const LoadResult conflict = load_job_config((dir.path() / "conflict.yaml").string());
  ASSERT_EQ(conflict.diagnostics.size(), 1u) << all_text(conflict);
  EXPECT_EQ(conflict.diagnostics[0].line, 3);
  EXPECT_NE(conflict.diagnostics[0].message.find("differs from num_hidden_layers 2"), std::string::npos);
}

TEST(JobConfigTest, missing_or_truncated_checkpoint_is_reported_at_the_checkpoint_key) {
  TempDir dir;
  const LoadResult missing =
      load_job_config_from_string("model:\n  checkpoint: " + (dir.path() / "nothing").string() + "\n", "job.yaml");
  ASSERT_EQ(missing.diagnostics.size(), 1u) << all_text(missing);
  EXPECT_EQ(missing.diagnostics[0].key, "model.checkpoint");
  EXPECT_EQ(missing.diagnostics[0].line, 2);
  EXPECT_NE(missing.diagnostics[0].message.find("no such directory"), std::string::npos);

  core::ModelSpec spec = *core::model_preset("tiny");
  write_hf_checkpoint(dir.path() / "ckpt", spec, [](const core::HfTensor& tensor, void* data) {
    std::memset(data, 0, static_cast<std::size_t>(tensor.numel()) * 2);
  });
  const auto file = dir.path() / "ckpt" / "model.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 100);
  const LoadResult truncated =
      load_job_config_from_string("model:\n  checkpoint: " + (dir.path() / "ckpt").string() + "\n", "job.yaml");
  ASSERT_FALSE(truncated.diagnostics.empty());
  EXPECT_EQ(truncated.diagnostics[0].key, "model.checkpoint");
  EXPECT_NE(truncated.diagnostics[0].message.find("truncated"), std::string::npos) << all_text(truncated);
}

TEST(JobConfigTest, mutated_job_files_never_throw_and_always_answer) {
  // Byte flips, insertions and truncations of the quickstart: each load ends with a job or with diagnostics.
  const std::string original = default_job_yaml();
  std::mt19937 random(12345);
  const std::string alphabet = "{}[]:,-&*!|>'\"#%@` \n\t0123456789abcxyz.\x00\xff";
  for (int round = 0; round < 3000; ++round) {
    std::string text = original;
    const int edits = 1 + static_cast<int>(random() % 6);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = random() % text.size();
      switch (random() % 4) {
        case 0:
          text[at] = alphabet[random() % alphabet.size()];
          break;
        case 1:
          text.insert(at, 1, alphabet[random() % alphabet.size()]);
          break;
        case 2:
          text.erase(at, 1 + random() % 8);
          break;
        default:
          text.resize(at);
          break;
      }
    }
    LoadResult result;
    ASSERT_NO_THROW(result = load(text)) << text;
    const bool errors = std::any_of(result.diagnostics.begin(), result.diagnostics.end(),
                                    [](const Diagnostic& d) { return d.severity == Severity::kError; });
    EXPECT_NE(result.job.has_value(), errors) << text;
    for (const Diagnostic& diagnostic : result.diagnostics) EXPECT_FALSE(diagnostic.message.empty()) << text;
  }
}

// The job a newcomer writes first: the model's shape, the two layouts, the world, Gloo; nothing about the batch.
std::string newcomer_job(int world, int train_tp, int train_pp, int rollout_tp) {
  return "model:\n  num_hidden_layers: 4\n  hidden_size: 64\n  num_attention_heads: 4\n  num_key_value_heads: 2\n"
         "  intermediate_size: 128\n  vocab_size: 500\n"
         "train:\n  tensor_model_parallel_size: " +
         std::to_string(train_tp) + "\n  pipeline_model_parallel_size: " + std::to_string(train_pp) +
         "\nrollout:\n  tensor_model_parallel_size: " + std::to_string(rollout_tp) +
         "\nruntime:\n  world_size: " + std::to_string(world) + "\n  backend: gloo\n";
}

struct NewcomerCase {
  int world;
  int train_tp;
  int train_pp;
  int rollout_tp;
  std::int64_t rows_per_train_replica;  // the default batch: max(2, ceil(rollout replicas / train dp))
};

TEST(JobConfigTest, a_newcomer_job_without_batch_keys_validates_for_every_world_the_layouts_divide) {
  const std::vector<NewcomerCase> cases{
      {4, 2, 2, 1, 4},  // the issue's job: dp 1, 4 rollout replicas
      {2, 2, 1, 1, 2}, {2, 1, 2, 1, 2}, {2, 1, 1, 2, 2}, {4, 1, 1, 1, 2},
      {4, 2, 1, 1, 2}, {8, 2, 2, 1, 4},  // dp 2, 8 rollout replicas
      {8, 2, 2, 2, 2}, {8, 1, 4, 1, 4}, {8, 2, 4, 1, 8}, {8, 1, 1, 4, 2},
  };
  for (const NewcomerCase& c : cases) {
    SCOPED_TRACE("world " + std::to_string(c.world) + ", train tp " + std::to_string(c.train_tp) + " pp " +
                 std::to_string(c.train_pp) + ", rollout tp " + std::to_string(c.rollout_tp));
    const LoadResult result = load(newcomer_job(c.world, c.train_tp, c.train_pp, c.rollout_tp));
    ASSERT_TRUE(result.job.has_value()) << all_text(result);
    EXPECT_TRUE(result.diagnostics.empty()) << all_text(result);
    const JobConfig& job = *result.job;
    EXPECT_EQ(job.generation.prompts_per_train_replica, c.rows_per_train_replica);
    // Every rollout replica gets a row of the global batch.
    EXPECT_GE(job.generation.prompts_per_train_replica * job.train.dp, job.rollout.dp());
    EXPECT_TRUE(job.validate().empty());
  }
}

TEST(JobConfigTest, the_default_batch_is_two_rows_per_train_replica_unless_rollout_replicas_need_more) {
  EXPECT_EQ(default_prompts_per_train_replica(4, 1), 2);
  EXPECT_EQ(default_prompts_per_train_replica(2, 4), 2);
  EXPECT_EQ(default_prompts_per_train_replica(1, 4), 4);
  EXPECT_EQ(default_prompts_per_train_replica(2, 8), 4);
  EXPECT_EQ(default_prompts_per_train_replica(2, 3), 2);
  EXPECT_EQ(default_prompts_per_train_replica(3, 8), 3);
  // Explicit prompts set the batch instead; a given value is kept.
  const LoadResult explicit_rows = load(
      "train: {tensor_model_parallel_size: 2}\nrollout: {prompts_per_train_replica: 5}\nruntime: {world_size: 4}\n");
  ASSERT_TRUE(explicit_rows.job.has_value()) << all_text(explicit_rows);
  EXPECT_EQ(explicit_rows.job->generation.prompts_per_train_replica, 5);
  const LoadResult rows_from_prompts = load(
      "train: {tensor_model_parallel_size: 2}\nrollout: {prompts: [[1], [2], [3], [4], [5], [6]]}\n"
      "runtime: {world_size: 4}\n");
  ASSERT_TRUE(rows_from_prompts.job.has_value()) << all_text(rows_from_prompts);
  EXPECT_EQ(rows_from_prompts.job->generation.prompts_per_train_replica, 3);  // 6 prompts over train dp 2
}

TEST(JobConfigTest, the_old_batch_key_still_works_with_a_warning) {
  const LoadResult old = load("rollout:\n  prompts_per_replica: 3\n");
  ASSERT_TRUE(old.job.has_value()) << all_text(old);
  EXPECT_EQ(old.job->generation.prompts_per_train_replica, 3);
  ASSERT_EQ(old.diagnostics.size(), 1u) << all_text(old);
  EXPECT_EQ(old.diagnostics[0].format(),
            "job.yaml:2:3: warning: rollout.prompts_per_replica: renamed to prompts_per_train_replica (it counts rows "
            "per train data-parallel replica); the old name still works for now");
  // Under the old name, a problem names the old key where it was written.
  const LoadResult too_few = load(
      "train: {tensor_model_parallel_size: 2, pipeline_model_parallel_size: 2}\nrollout:\n  prompts_per_replica: 1\n"
      "runtime: {world_size: 4}\n");
  ASSERT_FALSE(too_few.job.has_value());
  EXPECT_NE(all_text(too_few).find("job.yaml:3:24: error: rollout.prompts_per_replica: the batch has 1 rows"),
            std::string::npos)
      << all_text(too_few);
  const LoadResult both = load("rollout:\n  prompts_per_train_replica: 2\n  prompts_per_replica: 4\n");
  ASSERT_FALSE(both.job.has_value());
  EXPECT_NE(all_text(both).find("job.yaml:3:24: error: rollout.prompts_per_replica: 4 conflicts with "
                                "rollout.prompts_per_train_replica 2 (line 2); give one of them"),
            std::string::npos)
      << all_text(both);
}

TEST(JobConfigTest, export_scope_checks_only_what_export_uses) {
  // Wrong for a run (too few rows, prompt + new tokens past the model's positions, a bad endpoint, a seed strategy
  // that does not apply), but export moves weights only: the model, the layouts, the world, bucket_bytes.
  const std::string run_only =
      "model: {preset: tiny, max_position_embeddings: 16}\n"
      "train: {tensor_model_parallel_size: 1, pipeline_model_parallel_size: 2}\n"
      "rollout: {tensor_model_parallel_size: 2, prompts_per_train_replica: 1, max_new_tokens: 12, prompt_length: 8}\n"
      "runtime: {world_size: 4, strategy: seed}\n"
      "schedule: {iterations: 1}\n"
      "metrics: {listen: nowhere}\n";
  const LoadResult run = load_job_config_from_string(run_only, "job.yaml", ValidationScope::kRun);
  ASSERT_FALSE(run.job.has_value());
  const std::string text = all_text(run);
  EXPECT_NE(text.find("rollout.max_new_tokens"), std::string::npos) << text;
  EXPECT_NE(text.find("runtime.strategy"), std::string::npos) << text;
  EXPECT_NE(text.find("metrics.listen"), std::string::npos) << text;
  const LoadResult exported = load_job_config_from_string(run_only, "job.yaml", ValidationScope::kExport);
  EXPECT_TRUE(exported.job.has_value()) << all_text(exported);
  EXPECT_TRUE(exported.diagnostics.empty()) << all_text(exported);
  // What export does use is still checked, and syntax, types and unknown keys everywhere.
  const LoadResult bad = load_job_config_from_string(
      "train: {tensor_model_parallel_size: 3}\nrollout: {check: maybe}\nruntime: {world_size: 3}\n", "job.yaml",
      ValidationScope::kExport);
  const std::string bad_text = all_text(bad);
  EXPECT_NE(bad_text.find("job.yaml:1:37: error: train.tensor_model_parallel_size: tensor_model_parallel_size 3"),
            std::string::npos)
      << bad_text;
  EXPECT_NE(bad_text.find("job.yaml:2:18: error: rollout.check: expected true or false"), std::string::npos)
      << bad_text;
}

// One problem of each kind, each placed at the key (as written) it is about: core's problems carry their field, so
// the place follows the field, never the wording of the message.
struct PlacedCase {
  std::string yaml;
  std::string expected;  // a diagnostic, "FILE:LINE:COL: error: KEY: " and the start of its message
};

TEST(JobConfigTest, every_cross_field_problem_names_the_file_line_and_key_it_is_about) {
  const std::vector<PlacedCase> cases{
      // model spec problems: the field's key, or its alias as written
      {"model:\n  num_attention_heads: 4\n  num_key_value_heads: 3\n",
       "job.yaml:3:24: error: model.num_key_value_heads: num_key_value_heads 3 does not divide num_attention_heads 4"},
      {"model:\n  num_attention_heads: 4\n  num_query_groups: 3\n",
       "job.yaml:3:21: error: model.num_query_groups: num_key_value_heads 3 does not divide"},
      {"model:\n  hidden_size: 66\n  num_attention_heads: 4\n  num_key_value_heads: 4\n",
       "job.yaml:3:24: error: model.num_attention_heads: num_attention_heads 4 does not divide hidden_size 66"},
      // a field not written in the file (from a preset): its section
      {"model:\n  preset: tiny\n  num_attention_heads: 3\n  head_dim: 16\n",
       "job.yaml:2:3: error: model.num_key_value_heads: num_key_value_heads 2 does not divide num_attention_heads 3"},
      // train layout problems
      {"train:\n  tensor_model_parallel_size: 4\nruntime:\n  world_size: 4\n",
       "job.yaml:2:31: error: train.tensor_model_parallel_size: tensor_model_parallel_size 4 must divide "
       "num_key_value_heads 2"},
      {"train:\n  pipeline_model_parallel_size: 3\nruntime:\n  world_size: 3\n",
       "job.yaml:2:33: error: train.pipeline_model_parallel_size: num_hidden_layers 4 is not divisible"},
      {"train:\n  virtual_pipeline_model_parallel_size: 2\n",
       "job.yaml:2:41: error: train.virtual_pipeline_model_parallel_size: virtual_pipeline_model_parallel_size 2 "
       "needs pipeline_model_parallel_size > 1"},
      {"train:\n  tensor_model_parallel_size: 2\n  pipeline_model_parallel_size: 2\nruntime:\n  world_size: 6\n",
       "job.yaml:5:15: error: runtime.world_size: 6 is not a multiple of train tensor_model_parallel_size x "
       "pipeline_model_parallel_size = 4"},
      // rollout layout problems
      {"rollout:\n  tensor_model_parallel_size: 8\nruntime:\n  world_size: 8\n",
       "job.yaml:2:31: error: rollout.tensor_model_parallel_size: rollout tensor_model_parallel_size 8 does not "
       "divide num_attention_heads 4"},
      {"rollout:\n  tensor_model_parallel_size: 3\nruntime:\n  world_size: 4\n",
       "job.yaml:2:31: error: rollout.tensor_model_parallel_size: 3 does not divide world_size 4"},
      {"train:\n  tensor_model_parallel_size: 1\nrollout:\n  tensor_model_parallel_size: 2\nruntime:\n"
       "  world_size: 2\n  strategy: seed\n",
       "job.yaml:7:13: error: runtime.strategy: the seed strategy needs the rollout tensor_model_parallel_size"},
      // experts: the field's key, or the Megatron-LM spelling as written
      {"model:\n  preset: qwen3-30b-a3b\ntrain:\n  expert_model_parallel_size: 3\nruntime:\n  world_size: 3\n",
       "job.yaml:4:31: error: train.expert_model_parallel_size: expert_model_parallel_size 3 does not divide "
       "num_experts 128"},
      {"model:\n  preset: qwen3-30b-a3b\ntrain:\n  expert-model-parallel-size: 3\nruntime:\n  world_size: 3\n",
       "job.yaml:4:31: error: train.expert-model-parallel-size: expert_model_parallel_size 3 does not divide"},
      {"train:\n  expert_model_parallel_size: 2\n  expert-model-parallel-size: 4\n",
       "job.yaml:3:31: error: train.expert-model-parallel-size: 4 conflicts with train.expert_model_parallel_size 2 "
       "(line 2); give one of them"},
      {"rollout:\n  enable_expert_parallel: true\n",
       "job.yaml:2:27: error: rollout.enable_expert_parallel: rollout enable_expert_parallel applies to models with "
       "experts"},
      {"model:\n  preset: qwen3-30b-a3b\ntrain:\n  tensor_model_parallel_size: 1\nrollout:\n"
       "  tensor_model_parallel_size: 1\nruntime:\n  world_size: 1\n  strategy: seed\n",
       "job.yaml:9:13: error: runtime.strategy: the seed strategy has no Mixture-of-Experts path"},
      // the batch
      {"train:\n  pipeline_model_parallel_size: 4\nrollout:\n  prompts_per_train_replica: 1\nruntime:\n"
       "  world_size: 4\n",
       "job.yaml:4:30: error: rollout.prompts_per_train_replica: the batch has 1 rows"},
      {"rollout:\n  prompts_per_train_replica: 1\n  prompts: [[1, 2], [3, 4]]\nruntime:\n  world_size: 1\n",
       "job.yaml:3:12: error: rollout.prompts: 2 prompts given, but the batch has prompts_per_train_replica x train "
       "data parallel size = 1 x 1 = 1 rows"},
      {"rollout:\n  prompts: [[1], [2], [3]]\nruntime:\n  world_size: 2\n",
       "job.yaml:2:12: error: rollout.prompts: 3 prompts do not split evenly over the train data parallel size 2"},
      {"model:\n  max_position_embeddings: 10\nrollout:\n  max_new_tokens: 4\n",
       "job.yaml:4:19: error: rollout.max_new_tokens: prompt length 8 + max_new_tokens 4 exceeds"},
      // the plain settings
      {"memory:\n  bucket_bytes: 1KiB\n", "job.yaml:2:17: error: memory.bucket_bytes: 1.00 KiB is too small"},
      {"runtime:\n  devices: [0, 0]\n", "job.yaml:2:12: error: runtime.devices: device 0 is listed twice"},
      {"metrics:\n  listen: localhost\n", "job.yaml:2:11: error: metrics.listen: 'localhost' is not HOST:PORT"},
  };
  for (const PlacedCase& c : cases) {
    const LoadResult result = load(c.yaml);
    EXPECT_FALSE(result.job.has_value()) << c.yaml;
    const std::vector<std::string> lines = formatted(result);
    EXPECT_TRUE(std::any_of(lines.begin(), lines.end(),
                            [&](const std::string& line) { return line.rfind(c.expected, 0) == 0; }))
        << "expected a line starting with\n  " << c.expected << "\ngot\n"
        << all_text(result) << "for\n"
        << c.yaml;
  }
}

TEST(JobConfigTest, rates_and_intervals_below_their_bounds_name_the_file_line_and_key) {
  const std::vector<PlacedCase> cases{
      {"metrics:\n  max_requests_per_second: 0.1\n",
       "job.yaml:2:28: error: metrics.max_requests_per_second: 0.1 is too low"},
      {"metrics:\n  sample_interval_seconds: 1e-300\n",
       "job.yaml:2:28: error: metrics.sample_interval_seconds: 1e-300 s is too short"},
      {"runtime:\n  timeout: 100ms\n", "job.yaml:2:12: error: runtime.timeout: 100ms is too short"},
  };
  for (const PlacedCase& c : cases) {
    const LoadResult result = load(c.yaml);
    EXPECT_FALSE(result.job.has_value()) << c.yaml;
    const std::vector<std::string> lines = formatted(result);
    ASSERT_EQ(lines.size(), 1u) << all_text(result);
    EXPECT_EQ(lines[0].rfind(c.expected, 0), 0u) << lines[0];
  }
  // The bounds themselves, and 0 for no request limit, are fine.
  EXPECT_TRUE(load("metrics:\n  max_requests_per_second: 0\n  sample_interval_seconds: 0.01\nruntime:\n"
                   "  timeout: 1s\n")
                  .job.has_value());
  EXPECT_TRUE(load("metrics:\n  max_requests_per_second: 1\n").job.has_value());
}

TEST(UnitsTest, byte_sizes_parse_with_binary_and_decimal_units) {
  EXPECT_EQ(parse_byte_size("4096"), 4096);
  EXPECT_EQ(parse_byte_size("256MiB"), std::int64_t{256} << 20);
  EXPECT_EQ(parse_byte_size("1.5 GiB"), std::int64_t{3} << 29);
  EXPECT_EQ(parse_byte_size("80GB"), 80'000'000'000);
  EXPECT_EQ(parse_byte_size("1_000B"), 1000);
  std::string why;
  EXPECT_FALSE(parse_byte_size("12Mib", &why));
  EXPECT_NE(why.find("unknown unit 'Mib'"), std::string::npos);
  EXPECT_FALSE(parse_byte_size("-1", &why));
  EXPECT_FALSE(parse_byte_size("0.3B", &why));
  EXPECT_NE(why.find("whole number"), std::string::npos);
  EXPECT_FALSE(parse_byte_size("8EiB", &why));
  EXPECT_FALSE(parse_byte_size("9223372036854775808", &why));
  EXPECT_EQ(parse_byte_size("9223372036854775807"), std::numeric_limits<std::int64_t>::max());
  EXPECT_FALSE(parse_byte_size("", &why));
}

TEST(UnitsTest, durations_parse_and_bytes_format) {
  EXPECT_EQ(parse_duration("30s"), std::chrono::seconds(30));
  EXPECT_EQ(parse_duration("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(parse_duration("2m"), std::chrono::minutes(2));
  EXPECT_EQ(parse_duration("10"), std::chrono::seconds(10));
  EXPECT_FALSE(parse_duration("3 days"));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(std::int64_t{3} << 29), "1.50 GiB");
}

}  // namespace
}  // namespace hybridshard::service
