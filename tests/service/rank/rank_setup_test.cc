// The rank setup: rollout groups in closed form, options from a job, and 4 Gloo ranks as threads that set up and
// enter, each shard compared bit for bit with the shard the weight generator makes for that inference layout.
#include "hybridshard/service/rank/rank_setup.h"

#include <gtest/gtest.h>

#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/service/config/job_config.h"

namespace hybridshard::service {
namespace {

core::TrainLayout train_layout(int tp, int pp, int dp) {
  core::TrainLayout train;
  train.tp = tp;
  train.pp = pp;
  train.dp = dp;
  return train;
}

core::InferenceLayout rollout_layout(int tp, int world_size) {
  core::InferenceLayout rollout;
  rollout.tp = tp;
  rollout.world_size = world_size;
  return rollout;
}

TEST(RolloutGroupTest, hybridshard_groups_are_consecutive_ranks) {
  const core::TrainLayout train = train_layout(4, 2, 1);
  const core::InferenceLayout rollout = rollout_layout(2, 8);
  EXPECT_EQ(rollout_group_of(core::Strategy::kHybridshard, train, rollout, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(rollout_group_of(core::Strategy::kHybridshard, train, rollout, 5), (std::vector<int>{4, 5}));
}

TEST(RolloutGroupTest, seed_groups_are_strided_inside_the_train_tp_group) {
  // train tp 4 -> rollout tp 2: micro dp 2, so train tp ranks {0, 2} and {1, 3} form the groups (verl's vLLM groups).
  const core::TrainLayout train = train_layout(4, 2, 1);
  const core::InferenceLayout rollout = rollout_layout(2, 8);
  EXPECT_EQ(rollout_group_of(core::Strategy::kSeed, train, rollout, 0), (std::vector<int>{0, 2}));
  EXPECT_EQ(rollout_group_of(core::Strategy::kSeed, train, rollout, 3), (std::vector<int>{1, 3}));
  EXPECT_EQ(rollout_group_of(core::Strategy::kSeed, train, rollout, 6), (std::vector<int>{4, 6}));
}

TEST(RankSetupOptionsTest, a_job_names_the_device_store_and_weights) {
  JobConfig job;
  job.model.seed = 7;
  job.runtime.world_size = 4;
  job.runtime.backend = BackendChoice::kNccl;
  job.runtime.devices = {3, 1};
  job.memory.bucket_bytes = 4096;
  StoreAddress store;
  store.host = "10.0.0.1";
  store.port = 1234;
  const RankSetupOptions options = rank_setup_options(job, 2, 3, store);
  EXPECT_EQ(options.rank, 2);
  EXPECT_EQ(options.world_size, 4);
  EXPECT_EQ(options.device.type, core::DeviceType::kCuda);
  EXPECT_EQ(options.device.cuda_index, 1);  // local rank 3 -> devices[3 % 2]
  EXPECT_EQ(options.store.host, "10.0.0.1");
  EXPECT_EQ(options.store.port, 1234);
  EXPECT_EQ(options.bucket_bytes, 4096);
  EXPECT_EQ(options.seed, 7u);
  job.runtime.backend = BackendChoice::kGloo;
  EXPECT_EQ(rank_setup_options(job, 0, 0, store).device.type, core::DeviceType::kCpu);
}

// Every rank of `world_size` as a thread: setup, enter, and the number of elements of its shard that differ from
// the generator's shard of the same inference layout and version.
std::vector<std::int64_t> wrong_elements_after_enter(core::Strategy strategy, const core::TrainLayout& train,
                                                     const core::InferenceLayout& rollout,
                                                     const core::ModelSpec* spec = nullptr) {
  const int world_size = train.world_size();
  StoreAddress address;
  address.port = 0;
  address.host_it = true;
  address.prefix = "rank-setup-test";
  const std::unique_ptr<core::Store> server = open_store(address, -1, std::chrono::seconds(30));
  address.port = server->port();
  address.host_it = false;

  std::vector<std::int64_t> wrong(static_cast<std::size_t>(world_size), -1);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world_size));
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        RankSetupOptions options;
        if (spec != nullptr) options.spec = *spec;
        options.train = train;
        options.rollout = rollout;
        options.strategy = strategy;
        options.rank = rank;
        options.world_size = world_size;
        options.store = address;
        options.device.cpu_device_memory = std::int64_t{1} << 30;
        options.timeout = std::chrono::seconds(30);
        options.bucket_bytes = 64 << 10;  // several rounds
        options.seed = 5;
        RankSetup setup(options);
        EXPECT_EQ(setup.rollout_group() != nullptr, rollout.tp > 1);
        core::FlatBuffer& shard = setup.transition().enter(setup.train_params());
        const core::BufferLayout expected_layout =
            core::inference_param_buffer(options.spec, rollout, setup.inference_tp_rank());
        core::FlatBuffer expected(expected_layout, core::BufferKind::kStaging, setup.device(), nullptr, rank);
        expected.move_to(core::Residency::kGpu, false);
        setup.device().generate(expected_layout, options.seed, expected.data());
        EXPECT_EQ(shard.bytes(), expected.bytes());
        wrong[static_cast<std::size_t>(rank)] =
            setup.device().count_mismatches(shard.data(), expected.data(), shard.bytes());
        setup.world().barrier();
      } catch (...) {
        errors[static_cast<std::size_t>(rank)] = std::current_exception();
      }
    });
  }
  for (std::thread& thread : ranks) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  return wrong;
}

TEST(RankSetupTest, four_gloo_ranks_enter_bit_exact_shards_tp2_pp2_to_tp2) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  const std::vector<std::int64_t> wrong =
      wrong_elements_after_enter(core::Strategy::kHybridshard, train_layout(2, 2, 1), rollout_layout(2, 4));
  EXPECT_EQ(wrong, (std::vector<std::int64_t>(4, 0)));
}

// Experts: train EP 4 over dp 4 -> vLLM's expert parallelism over tp' 2; each rank's train weights are its own
// experts, and the experts it lacks come from the other data-parallel ranks.
TEST(RankSetupTest, four_gloo_ranks_enter_bit_exact_shards_with_experts_ep4_to_vllm_ep2) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  core::ModelSpec spec = *core::model_preset("tiny");
  spec.architecture = core::Architecture::kQwen3Moe;
  spec.num_hidden_layers = 2;
  spec.num_experts = 8;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 32;
  core::TrainLayout train = train_layout(1, 1, 4);
  train.ep = 4;
  core::InferenceLayout rollout = rollout_layout(2, 4);
  rollout.expert_parallel = true;
  const std::vector<std::int64_t> wrong =
      wrong_elements_after_enter(core::Strategy::kHybridshard, train, rollout, &spec);
  EXPECT_EQ(wrong, (std::vector<std::int64_t>(4, 0)));
}

TEST(RankSetupTest, seed_strategy_sets_up_its_own_groups_and_enters_bit_exact_shards) {
  if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
  const std::vector<std::int64_t> wrong =
      wrong_elements_after_enter(core::Strategy::kSeed, train_layout(2, 1, 2), rollout_layout(1, 4));
  EXPECT_EQ(wrong, (std::vector<std::int64_t>(4, 0)));
}

}  // namespace
}  // namespace hybridshard::service
