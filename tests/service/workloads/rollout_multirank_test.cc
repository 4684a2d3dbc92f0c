// Tensor-parallel rollout (tp' = 2 and 4) with threads as ranks over Gloo on 127.0.0.1: every rank generates the
// single-rank reference's greedy tokens (top-k routed experts included: vLLM's tensor-parallel and expert-parallel
// experts, and Qwen2-MoE's gated shared expert), and a stale shard on one rank fails the check.
#include <gtest/gtest.h>

#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/workloads/reference_model.h"
#include "hybridshard/service/workloads/rollout.h"
#include "test_models.h"

namespace hybridshard::service::workloads {
namespace {

using std::chrono::milliseconds;

void run_ranks(int world_size, const std::function<void(int rank)>& body) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world_size));
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        body(rank);
      } catch (...) {
        errors[static_cast<std::size_t>(rank)] = std::current_exception();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

struct Case {
  std::string name;
  core::ModelSpec spec;
  int tp = 2;
  bool expert_parallel = false;  // vLLM's enable_expert_parallel
};

struct RankOutput {
  core::TokenBatch tokens;
  std::vector<float> logits;
};

class RolloutMultirankTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
    core::StoreOptions options;
    options.port = 0;
    options.is_server = true;
    options.timeout = milliseconds(20000);
    server_ = core::Store::open(options);
  }

  // Each rank: its own device, store client and Gloo communicator; shard `tp_rank` of `full` (or of `stale` on
  // `stale_rank`), generation of `max_new_tokens` after `prompts`.
  std::vector<RankOutput> generate_on_ranks(const core::ModelSpec& spec, int tp, bool expert_parallel,
                                            ReferenceModel& full, ReferenceModel* stale, int stale_rank,
                                            const core::TokenBatch& prompts, std::int64_t max_new_tokens,
                                            const std::string& scope) {
    std::vector<RankOutput> outputs(static_cast<std::size_t>(tp));
    run_ranks(tp, [&](int rank) {
      core::StoreOptions options;
      options.port = server_->port();
      options.timeout = milliseconds(20000);
      auto store = core::Store::open(options);
      auto scoped = store->scoped(scope);
      auto comm = core::make_gloo_communicator(*scoped, rank, tp, milliseconds(20000));
      auto device = core::make_cpu_device(testing::kDeviceBytes);
      core::InferenceLayout layout;
      layout.tp = tp;
      layout.world_size = tp;
      layout.expert_parallel = expert_parallel;
      ReferenceModel& source = (stale != nullptr && rank == stale_rank) ? *stale : full;
      auto shard = testing::shard_from_full(spec, source, core::inference_param_buffer(spec, layout, rank),
                                            core::BufferKind::kInferenceParams, *device);
      Rollout rollout(spec, layout, rank, comm.get(), *device, nullptr, rank, std::int64_t{1} << 20);
      RankOutput& out = outputs[static_cast<std::size_t>(rank)];
      out.tokens = rollout.generate(*shard, prompts, max_new_tokens);
      out.logits = rollout.last_token_logits();
    });
    return outputs;
  }

  std::unique_ptr<core::Store> server_;
};

TEST_P(RolloutMultirankTest, every_rank_generates_the_references_greedy_tokens) {
  const Case& param = GetParam();
  const core::ModelSpec& spec = param.spec;
  auto device = core::make_cpu_device(testing::kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, testing::kSeedVersion);
  reference.step(0);  // trained weights, not just the seed's multiples of 1/128
  const core::TokenBatch prompts = testing::make_prompts(3, 5, spec.vocab_size, 11);
  const core::TokenBatch expected = reference.generate(prompts, 6);

  const std::vector<RankOutput> outputs = generate_on_ranks(spec, param.tp, param.expert_parallel, reference, nullptr,
                                                            -1, prompts, 6, "generate." + param.name);
  for (int rank = 0; rank < param.tp; ++rank) {
    const RankOutput& out = outputs[static_cast<std::size_t>(rank)];
    EXPECT_EQ(out.tokens.tokens, expected.tokens) << "rank " << rank;
    EXPECT_EQ(out.logits, outputs[0].logits) << "rank " << rank << " chose with other logits than rank 0";
    const CheckResult check = reference.check(prompts, out.tokens, out.logits);
    EXPECT_TRUE(check.ok) << "rank " << rank << ": " << check.detail;
    EXPECT_LT(check.max_logit_diff, 1e-3) << check.detail;
  }
}

TEST_P(RolloutMultirankTest, a_stale_shard_on_one_rank_fails_the_check) {
  const Case& param = GetParam();
  const core::ModelSpec& spec = param.spec;
  auto device = core::make_cpu_device(testing::kDeviceBytes);
  ReferenceModel stale(spec, *device, nullptr, 0, AdamOptions{}, testing::kSeedVersion);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, testing::kSeedVersion);
  reference.step(0);
  const core::TokenBatch prompts = testing::make_prompts(3, 5, spec.vocab_size, 12);
  const std::vector<RankOutput> outputs = generate_on_ranks(spec, param.tp, param.expert_parallel, reference, &stale,
                                                            param.tp - 1, prompts, 5, "stale." + param.name);
  const CheckResult check = reference.check(prompts, outputs[0].tokens, outputs[0].logits);
  EXPECT_FALSE(check.ok) << check.detail;
}

INSTANTIATE_TEST_SUITE_P(Layouts, RolloutMultirankTest,
                         ::testing::Values(Case{"llama_gqa_untied_tp2", testing::small_llama(), 2},
                                           Case{"llama_gqa_untied_tp4", testing::small_llama(), 4},
                                           Case{"qwen2_tied_tp2", testing::small_qwen2_tied(), 2},
                                           Case{"qwen2_tied_tp4_replicated_kv_heads", testing::small_qwen2_tied(), 4},
                                           Case{"qwen3_tp2", testing::small_qwen3(), 2},
                                           Case{"qwen3_moe_tp_experts_tp2", testing::small_qwen3_moe(), 2},
                                           Case{"qwen3_moe_vllm_ep_tp4", testing::small_qwen3_moe(), 4, true},
                                           Case{"mixtral_vllm_ep_tp2", testing::small_mixtral(), 2, true},
                                           Case{"qwen2_moe_tp_experts_tp2", testing::small_qwen2_moe(), 2},
                                           Case{"qwen2_moe_vllm_ep_tp4", testing::small_qwen2_moe(), 4, true}),
                         [](const auto& test) { return test.param.name; });

}  // namespace
}  // namespace hybridshard::service::workloads
