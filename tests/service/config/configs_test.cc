// The shipped jobs (configs/*.yaml) validate, the broken examples give exactly the expected diagnostics, and the
// memory plan adds up.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "hybridshard/core/error.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/config/memory_plan.h"

namespace hybridshard::service {
namespace {

const std::filesystem::path kSource = HYBRIDSHARD_SOURCE_DIR;

JobConfig load_valid(const std::filesystem::path& path) {
  LoadResult result = load_job_config(path.string());
  std::string text;
  for (const Diagnostic& diagnostic : result.diagnostics) text += diagnostic.format() + "\n";
  EXPECT_TRUE(result.job.has_value()) << text;
  return result.job.value_or(JobConfig{});
}

// Diagnostics of a broken example, with the directory stripped from the file name.
std::vector<std::string> diagnostics_of(const std::string& name) {
  const std::filesystem::path path = kSource / "tests/service/config/data" / name;
  const LoadResult result = load_job_config(path.string());
  EXPECT_FALSE(result.job.has_value());
  std::vector<std::string> lines;
  for (const Diagnostic& diagnostic : result.diagnostics) {
    std::string line = diagnostic.format();
    const std::string prefix = path.parent_path().string() + "/";
    if (line.rfind(prefix, 0) == 0) line = line.substr(prefix.size());
    lines.push_back(line);
  }
  return lines;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream stream(path);
  std::stringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

TEST(ConfigsTest, quickstart_file_is_the_default_job) {
  EXPECT_EQ(read_text(kSource / "configs/quickstart.yaml"), default_job_yaml());
  const JobConfig job = load_valid(kSource / "configs/quickstart.yaml");
  EXPECT_EQ(job.runtime.world_size, 4);
  EXPECT_EQ(job.runtime.backend, BackendChoice::kGloo);
}

TEST(ConfigsTest, llama3_8b_job_is_valid_and_fits_on_80_gb) {
  const JobConfig job = load_valid(kSource / "configs/llama3-8b.yaml");
  EXPECT_EQ(job.model.spec.hidden_size, 4096);
  EXPECT_EQ(job.train.tp, 4);
  EXPECT_EQ(job.train.pp, 2);
  EXPECT_EQ(job.rollout.tp, 2);
  EXPECT_EQ(job.runtime.backend, BackendChoice::kNccl);
  const MemoryPlan plan = make_memory_plan(job);
  ASSERT_EQ(plan.ranks.size(), 8u);
  EXPECT_TRUE(plan.fits) << format_memory_plan(plan);
}

TEST(ConfigsTest, qwen3_30b_a3b_job_is_valid_fits_on_80_gb_and_counts_its_experts) {
  const JobConfig job = load_valid(kSource / "configs/qwen3-30b-a3b.yaml");
  EXPECT_EQ(job.model.spec.num_experts, 128);
  EXPECT_EQ(job.train.ep, 4);
  EXPECT_EQ(job.train.etp, 1);
  EXPECT_TRUE(job.rollout.expert_parallel);
  const MemoryPlan plan = make_memory_plan(job);
  ASSERT_EQ(plan.ranks.size(), 8u);
  EXPECT_TRUE(plan.fits) << format_memory_plan(plan);
  // 48 layers x 128 experts x 3 x 2048 x 768 bf16 = 54 GiB: a quarter of a stage's half on each train rank (6.75
  // GiB), a quarter of all on each rollout rank (13.5 GiB).
  const std::string text = format_memory_plan(plan);
  EXPECT_NE(text.find("experts: 6.75 GiB of the train params (EP 4, ETP 1), 13.50 GiB of the inference shard (expert "
                      "parallel)"),
            std::string::npos)
      << text;
}

TEST(ConfigsTest, qwen15_moe_a27b_job_is_valid_fits_on_80_gb_and_counts_its_shared_expert) {
  const JobConfig job = load_valid(kSource / "configs/qwen1.5-moe-a2.7b.yaml");
  EXPECT_EQ(job.model.spec.architecture, core::Architecture::kQwen2Moe);
  EXPECT_EQ(job.model.spec.shared_expert_intermediate_size, 5632);
  const MemoryPlan plan = make_memory_plan(job);
  ASSERT_EQ(plan.ranks.size(), 8u);
  EXPECT_TRUE(plan.fits) << format_memory_plan(plan);
  // Routed: 24 layers x 60 experts x 3 x 1408 x 2048 bf16 = 23.20 GiB, a stage's half over EP 4 on each train rank
  // (2.90 GiB), half of every expert on each rollout rank (11.60 GiB). Shared: 24 x (3 x 5632 + 1) x 2048 bf16 =
  // 1.55 GiB, a stage's half over tp 2 (+ the whole gates) on each train rank, half on each rollout rank.
  const std::string text = format_memory_plan(plan);
  EXPECT_NE(text.find("experts: 2.90 GiB of the train params (EP 4, ETP 1), 11.60 GiB of the inference shard "
                      "(tensor-parallel experts); shared expert: "),
            std::string::npos)
      << text;
}

TEST(ConfigsTest, qwen25_32b_job_is_valid_and_fits_on_80_gb) {
  const JobConfig job = load_valid(kSource / "configs/qwen2.5-32b.yaml");
  EXPECT_EQ(job.model.spec.architecture, core::Architecture::kQwen2);
  EXPECT_EQ(job.train.tp, 8);
  EXPECT_EQ(job.rollout.tp, 4);
  const MemoryPlan plan = make_memory_plan(job);
  EXPECT_TRUE(plan.fits) << format_memory_plan(plan);
}

TEST(ConfigsTest, llama3_70b_job_is_valid_and_its_rollout_side_fits) {
  const JobConfig job = load_valid(kSource / "configs/llama3-70b.yaml");
  EXPECT_EQ(job.model.spec.num_hidden_layers, 80);
  EXPECT_EQ(job.train.tp, 8);
  EXPECT_EQ(job.rollout.tp, 8);
  const MemoryPlan plan = make_memory_plan(job);
  ASSERT_EQ(plan.ranks.size(), 8u);
  const RankMemoryPlan& rank = plan.ranks[0];
  // 18 bytes per parameter in training: more than a card, and the plan says so.
  EXPECT_GT(rank.phases[0].device_total(), plan.device_memory);
  EXPECT_FALSE(plan.fits);
  EXPECT_NE(format_memory_plan(plan).find("does not fit: train needs"), std::string::npos);
  // Enter, rollout and exit fit with the optimizer and gradients on the host.
  for (int phase = 1; phase < kNumPlanPhases; ++phase) {
    EXPECT_LE(rank.phases[static_cast<std::size_t>(phase)].device_total(), plan.device_memory) << phase;
  }
}

// The README picture's job: a CPU job whose buffers (tens of MiB) fit 1 GiB in every phase, without the check's
// single-rank reference buffers on rank 0.
TEST(ConfigsTest, dashboard_demo_job_is_valid_and_fits_a_cpu_rank) {
  const JobConfig job = load_valid(kSource / "configs/dashboard-demo.yaml");
  EXPECT_EQ(job.runtime.backend, BackendChoice::kGloo);
  EXPECT_FALSE(job.generation.check);
  const MemoryPlan plan = make_memory_plan(job);
  ASSERT_EQ(plan.ranks.size(), 4u);
  EXPECT_TRUE(plan.fits) << format_memory_plan(plan);
}

TEST(ConfigsTest, typos_and_wrong_types_give_the_expected_diagnostics) {
  const std::vector<std::string> expected{
      "typos_and_types.yaml:4:3: error: model.hiden_size: unknown key 'hiden_size'; did you mean 'hidden_size'?",
      "typos_and_types.yaml:6:31: error: train.tensor_model_parallel_size: expected a whole number, got '2.5'",
      "typos_and_types.yaml:9:10: error: rollout.check: expected true or false, got 'yes'",
      "typos_and_types.yaml:11:17: error: memory.bucket_bytes: expected a size such as 4096, 256MiB or 80GB: unknown "
      "unit 'Mb'; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB",
      "typos_and_types.yaml:14:12: error: runtime.backend: 'mpi' is not one of auto, nccl or gloo",
  };
  EXPECT_EQ(diagnostics_of("typos_and_types.yaml"), expected);
}

TEST(ConfigsTest, layouts_that_do_not_divide_give_the_expected_diagnostics) {
  const std::vector<std::string> expected{
      "layout_does_not_divide.yaml:5:31: error: train.tensor_model_parallel_size: tensor_model_parallel_size 4 must "
      "divide num_key_value_heads 2 (Megatron-Core splits whole query groups); tensor_model_parallel_size values "
      "that work here: 1 or 2",
      "layout_does_not_divide.yaml:6:33: error: train.pipeline_model_parallel_size: num_hidden_layers 4 is not "
      "divisible by pipeline_model_parallel_size * virtual_pipeline_model_parallel_size = 3 * 1; "
      "pipeline_model_parallel_size values that work here: 1",
      "layout_does_not_divide.yaml:8:31: error: rollout.tensor_model_parallel_size: 5 does not divide world_size 12; "
      "tensor_model_parallel_size values that work here: 1, 2 or 4",
  };
  EXPECT_EQ(diagnostics_of("layout_does_not_divide.yaml"), expected);
}

TEST(ConfigsTest, duplicates_and_conflicts_give_the_expected_diagnostics) {
  const std::vector<std::string> expected{
      "duplicates_and_conflicts.yaml:4:15: error: model.num_layers: 6 conflicts with model.num_hidden_layers 4 (line "
      "3); give one of them",
      "duplicates_and_conflicts.yaml:8:3: error: runtime.world_size: duplicate key 'world_size' (first given at line "
      "7); give each key once",
      "duplicates_and_conflicts.yaml:10:11: error: metrics.listen: '127.0.0.1:99999' is not HOST:PORT: the port "
      "'99999' is not a number in 0..65535 (expected HOST:PORT: 127.0.0.1:9464, [::1]:9464 or a host name; port "
      "0..65535); \"\" for no endpoint",
  };
  EXPECT_EQ(diagnostics_of("duplicates_and_conflicts.yaml"), expected);
}

TEST(MemoryPlanTest, quickstart_plan_adds_up_per_rank_and_phase) {
  const JobConfig job = load_valid(kSource / "configs/quickstart.yaml");
  const MemoryPlan plan = make_memory_plan(job);
  EXPECT_EQ(plan.device_memory, job.runtime.cpu_device_memory);
  EXPECT_TRUE(plan.device_is_cpu);
  ASSERT_EQ(plan.ranks.size(), 4u);
  for (const RankMemoryPlan& rank : plan.ranks) {
    const core::RankPlan reshard = core::make_rank_plan(job.model.spec, job.train, job.rollout, rank.rank,
                                                        core::PlanOptions{job.memory.bucket_bytes});
    std::int64_t params = 0;
    std::int64_t fp32 = 0;  // the chunks' tensors at aligned fp32 offsets: what the train step holds per state
    for (const auto& buffer : reshard.train_buffers) {
      params += buffer.bytes;
      core::BufferLayout widened;
      widened.dtype = core::DType::kFloat32;
      for (const core::LocalTensor& tensor : buffer.tensors) core::append_tensor(widened, tensor);
      fp32 += widened.bytes;
    }
    const auto& train = rank.phases[0];
    const auto& enter = rank.phases[1];
    const auto& rollout = rank.phases[2];
    const auto kind = [](core::BufferKind k) { return static_cast<std::size_t>(k); };
    EXPECT_EQ(train.device[kind(core::BufferKind::kParams)], params);
    EXPECT_EQ(train.device[kind(core::BufferKind::kGrads)], fp32);
    EXPECT_EQ(train.device[kind(core::BufferKind::kMasterParams)], fp32);
    EXPECT_EQ(train.device[kind(core::BufferKind::kOptimizerState)], 2 * fp32);
    EXPECT_EQ(train.device[kind(core::BufferKind::kInferenceParams)], 0);  // exit_policy free
    EXPECT_EQ(train.device[kind(core::BufferKind::kKvCache)], 0);          // free_kv_cache_in_train
    // Offloaded for the rollout: optimizer, master weights and gradients live on the host.
    EXPECT_EQ(rollout.device[kind(core::BufferKind::kOptimizerState)], 0);
    EXPECT_EQ(rollout.host[kind(core::BufferKind::kOptimizerState)], 2 * fp32);
    EXPECT_EQ(rollout.host[kind(core::BufferKind::kGrads)], fp32);
    EXPECT_EQ(rollout.device[kind(core::BufferKind::kInferenceParams)], reshard.inference_buffer.bytes);
    EXPECT_EQ(enter.device[kind(core::BufferKind::kStaging)], reshard.staging_bytes());
    // vLLM's rule: the KV cache fills gpu_memory_utilization of the device.
    EXPECT_EQ(rollout.device_total(), static_cast<std::int64_t>(0.5 * static_cast<double>(plan.device_memory)));
    EXPECT_EQ(rank.enter_network_received, reshard.bytes_received());
    EXPECT_EQ(rank.enter_network_sent, reshard.bytes_sent());
    EXPECT_TRUE(rank.fits);
  }
  const std::string table = format_memory_plan(plan);
  EXPECT_NE(table.find("enter network: receives"), std::string::npos) << table;
  EXPECT_NE(table.find("inference_params"), std::string::npos) << table;
  EXPECT_NE(table.find("\nfits\n"), std::string::npos) << table;
}

TEST(MemoryPlanTest, too_little_device_memory_does_not_fit_and_says_why) {
  const JobConfig job = load_valid(kSource / "configs/quickstart.yaml");
  const MemoryPlan plan = make_memory_plan(job, 64 << 10);
  EXPECT_FALSE(plan.fits);
  const std::string table = format_memory_plan(plan);
  EXPECT_NE(table.find("DOES NOT FIT"), std::string::npos) << table;
  EXPECT_NE(table.find("does not fit: "), std::string::npos) << table;
}

TEST(MemoryPlanTest, cached_holds_what_left_the_device_since_the_last_release) {
  const JobConfig base = load_valid(kSource / "configs/quickstart.yaml");  // exit free, optimizer offloaded
  const auto kind = [](core::BufferKind k) { return static_cast<std::size_t>(k); };
  JobConfig driver = base;
  driver.memory.release_on_exit = core::ReleaseOnExit::kDriver;
  const RankMemoryPlan to_driver = make_memory_plan(driver).ranks[0];
  const auto& enter = to_driver.phases[1];
  // Exit handed everything back: nothing cached while training; the optimizer's blocks stay cached once it left.
  EXPECT_EQ(to_driver.phases[0].cached, 0);
  EXPECT_GE(enter.cached, to_driver.phases[0].device[kind(core::BufferKind::kOptimizerState)]);
  EXPECT_GE(to_driver.phases[3].cached, enter.device[kind(core::BufferKind::kStaging)]);

  JobConfig cache = base;
  cache.memory.release_on_exit = core::ReleaseOnExit::kCache;
  const MemoryPlan kept = make_memory_plan(cache);
  // The freed shard, staging and KV cache stay cached through train.
  const auto& rollout = kept.ranks[0].phases[2];
  EXPECT_GE(kept.ranks[0].phases[0].cached, rollout.device[kind(core::BufferKind::kInferenceParams)] +
                                                rollout.device[kind(core::BufferKind::kKvCache)]);
  const std::string table = format_memory_plan(kept);
  EXPECT_NE(table.find("  cached "), std::string::npos) << table;
  EXPECT_NE(table.find("release on exit: cache"), std::string::npos) << table;
}

TEST(MemoryPlanTest, policy_fields_move_buffers_between_device_and_host) {
  LoadResult result = load_job_config_from_string(default_job_yaml(), "quickstart.yaml");
  ASSERT_TRUE(result.job);
  JobConfig job = *result.job;
  job.memory.offload_optimizer_in_rollout = false;
  job.memory.free_grads_in_rollout = true;
  job.memory.offload_params_in_rollout = true;
  job.memory.exit_policy = core::ExitPolicy::kOffload;
  job.memory.free_kv_cache_in_train = false;
  const MemoryPlan plan = make_memory_plan(job);
  const auto kind = [](core::BufferKind k) { return static_cast<std::size_t>(k); };
  const RankMemoryPlan& rank = plan.ranks[0];
  const auto& train = rank.phases[0];
  const auto& rollout = rank.phases[2];
  const auto& exit = rank.phases[3];
  EXPECT_GT(rollout.device[kind(core::BufferKind::kOptimizerState)], 0);
  EXPECT_EQ(rollout.device[kind(core::BufferKind::kGrads)] + rollout.host[kind(core::BufferKind::kGrads)], 0);
  EXPECT_EQ(rollout.device[kind(core::BufferKind::kParams)], 0);
  EXPECT_GT(rollout.host[kind(core::BufferKind::kParams)], 0);
  EXPECT_GT(train.host[kind(core::BufferKind::kInferenceParams)], 0);
  EXPECT_GT(exit.host[kind(core::BufferKind::kInferenceParams)], 0);
  EXPECT_GT(train.device[kind(core::BufferKind::kKvCache)], 0);
}

// A large job is planned per class of ranks: every rank's row equals its own plan computed alone.
TEST(MemoryPlanTest, classes_give_every_rank_its_own_numbers) {
  JobConfig job = load_valid(kSource / "configs/llama3-70b.yaml");
  job.train.pp = 4;
  job.train.dp = 32;
  job.runtime.world_size = 1024;
  job.rollout.tp = 4;
  job.rollout.world_size = 1024;
  const MemoryPlan plan = make_memory_plan(job);
  ASSERT_EQ(plan.ranks.size(), 1024u);
  for (const int rank : {0, 5, 263, 700, 1023}) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    const RankMemoryPlan& row = plan.ranks.at(static_cast<std::size_t>(rank));
    const MemoryPlan alone = make_rank_memory_plan(job, rank);
    ASSERT_EQ(alone.ranks.size(), 1u);
    EXPECT_EQ(row.rank, rank);
    EXPECT_EQ(alone.ranks[0].rank, rank);
    EXPECT_EQ(row.train.dp_rank, rank % 256 / 8);
    for (std::size_t p = 0; p < row.phases.size(); ++p) {
      EXPECT_EQ(row.phases[p].device, alone.ranks[0].phases[p].device);
      EXPECT_EQ(row.phases[p].host, alone.ranks[0].phases[p].host);
    }
    const core::RankPlan own =
        core::make_rank_plan(job.model.spec, job.train, job.rollout, rank, core::PlanOptions{job.memory.bucket_bytes});
    EXPECT_EQ(row.enter_network_received, own.bytes_received());
    EXPECT_EQ(row.enter_network_sent, own.bytes_sent());
  }
  EXPECT_THROW(make_rank_memory_plan(job, 1024), core::ConfigError);
  EXPECT_NE(format_memory_plan(plan).find("ranks 0-248 every 8"), std::string::npos) << format_memory_plan(plan);
}

TEST(MemoryPlanTest, topology_section_sets_the_prediction_and_bad_values_name_their_key) {
  const std::string topology = "topology:\n  inter_host_gb_per_s: 1\n  message_latency_us: 0\n  peer_sync_us: 0\n";
  LoadResult result = load_job_config_from_string(default_job_yaml() + topology + "  gpus_per_host: 1\n", "job.yaml");
  ASSERT_TRUE(result.job);
  EXPECT_EQ(result.job->topology.gpus_per_host, 1);
  EXPECT_DOUBLE_EQ(result.job->topology.inter_host_bytes_per_s, 1e9);
  EXPECT_DOUBLE_EQ(result.job->topology.message_latency_s, 0.0);
  EXPECT_DOUBLE_EQ(result.job->topology.peer_sync_s, 0.0);
  const LoadResult sendrecv = load_job_config_from_string(
      default_job_yaml() + "topology:\n  sendrecv_latency_us: 20\n  sendrecv_copy_overlap: 1\n", "job.yaml");
  ASSERT_TRUE(sendrecv.job);
  EXPECT_DOUBLE_EQ(sendrecv.job->topology.sendrecv_latency_s, 20e-6);
  EXPECT_DOUBLE_EQ(sendrecv.job->topology.sendrecv_copy_overlap, 1.0);
  const MemoryPlan across_hosts = make_memory_plan(*result.job);
  LoadResult one_host = load_job_config_from_string(default_job_yaml() + topology, "job.yaml");
  ASSERT_TRUE(one_host.job);
  EXPECT_GT(across_hosts.predicted_enter_seconds, make_memory_plan(*one_host.job).predicted_enter_seconds);
  EXPECT_NE(format_memory_plan(across_hosts).find("predicted enter of the job"), std::string::npos);

  const std::pair<std::string, std::string> bad_values[] = {
      {"intra_host_gb_per_s: 0", "topology.intra_host_gb_per_s"},
      {"sendrecv_copy_overlap: 1.5", "topology.sendrecv_copy_overlap"}};
  for (const auto& [line, key] : bad_values) {
    const LoadResult bad = load_job_config_from_string(default_job_yaml() + "topology:\n  " + line + "\n", "job.yaml");
    EXPECT_FALSE(bad.job) << line;
    ASSERT_FALSE(bad.diagnostics.empty()) << line;
    EXPECT_NE(bad.diagnostics.front().format().find(key), std::string::npos) << bad.diagnostics.front().format();
  }
}

}  // namespace
}  // namespace hybridshard::service
