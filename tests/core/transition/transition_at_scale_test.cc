// A transition of many ranks on this machine: 64 Gloo ranks (threads on 127.0.0.1, each with its own CPU device and
// its own plan) enter, and every rank's inference shard is bit-exact against the independent reference. Small shapes,
// so the whole job runs in seconds on 2 cores; issue 13's many-rank simulation.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/store.h"
#include "hybridshard/core/transition.h"
#include "rank_threads.h"
#include "test_backend.h"
#include "transition_support.h"

namespace hybridshard::core {
namespace {

using testing::LayoutCase;

constexpr std::int64_t kCapacity = std::int64_t{64} << 20;
constexpr std::chrono::milliseconds kTimeout{60000};

std::string case_name(const ::testing::TestParamInfo<LayoutCase>& param) { return param.param.name; }

class TransitionAtScaleTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(TransitionAtScaleTest, every_rank_of_64_enters_bit_exact) {
  const LayoutCase& layout = GetParam();
  const int world_size = layout.train.world_size();
  ASSERT_GE(world_size, 64);
  if (const std::string why = testing::why_not_runnable(world_size); !why.empty()) GTEST_SKIP() << why;
  StoreOptions server_options;
  server_options.port = 0;
  server_options.is_server = true;
  server_options.timeout = kTimeout;
  const std::unique_ptr<Store> server = Store::open(server_options);
  const InferenceLayout inference = layout.inference();
  PlanOptions plan_options;
  plan_options.bucket_bytes = 16384;  // several rounds per rank

  testing::run_ranks(world_size, [&](int rank) {
    StoreOptions options;
    options.port = server->port();
    options.timeout = kTimeout;
    const std::unique_ptr<Store> store = Store::open(options);
    const std::unique_ptr<Communicator> comm = testing::make_rank_communicator(*store, rank, world_size, kTimeout);
    const std::unique_ptr<Device> device = testing::make_rank_device(rank, kCapacity);
    const RankPlan plan = make_rank_plan(layout.spec, layout.train, inference, rank, plan_options);
    testing::TrainBuffers train(plan, *device, nullptr);
    train.generate(plan, *device, 7);
    auto transition = make_transition(Strategy::kHybridshard, plan, *comm, *device, nullptr, TransitionOptions{});
    transition->set_iteration(0);
    const FlatBuffer& shard = transition->enter(train.pointers);
    EXPECT_EQ(testing::compare_with_reference(layout.spec, inference, inference.coord(rank).tp_rank, 7, *device, shard),
              "")
        << "rank " << rank;
    EXPECT_EQ(transition->last_enter().bytes_network_received, plan.bytes_received()) << "rank " << rank;
    transition->exit(ExitPolicy::kFree);
  });
}

INSTANTIATE_TEST_SUITE_P(World64, TransitionAtScaleTest,
                         ::testing::Values(LayoutCase{"llama_tp2_pp2_dp16_to_tp4",
                                                      testing::tiny_spec(Architecture::kLlama, DType::kBFloat16, 4),
                                                      testing::train_layout(2, 2, 1, 16), 4},
                                           LayoutCase{
                                               "qwen3_moe_tp1_pp2_dp32_ep4_to_tp2_vllm_ep",
                                               testing::tiny_moe_spec(Architecture::kQwen3Moe, DType::kBFloat16, 2),
                                               testing::train_layout(1, 2, 1, 32, 4), 2, true}),
                         case_name);

}  // namespace
}  // namespace hybridshard::core
