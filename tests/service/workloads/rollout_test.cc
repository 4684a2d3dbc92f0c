// Rollout on one rank (tp' = 1) against the single-rank reference: tokens, the check, stale and corrupted weights,
// the KV cache's budget and residency.
#include "hybridshard/service/workloads/rollout.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/weight_generator.h"
#include "hybridshard/service/workloads/reference_model.h"
#include "test_models.h"

namespace hybridshard::service::workloads {
namespace {

using testing::kDeviceBytes;
using testing::kSeedVersion;

struct Case {
  std::string name;
  core::ModelSpec spec;
};

class RolloutSingleRankTest : public ::testing::TestWithParam<Case> {};

TEST_P(RolloutSingleRankTest, greedy_tokens_equal_the_reference_and_the_check_passes) {
  const core::ModelSpec spec = GetParam().spec;
  auto device = core::make_cpu_device(kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, kSeedVersion);
  core::InferenceLayout layout;
  layout.tp = 1;
  layout.world_size = 1;
  auto shard = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                        core::BufferKind::kInferenceParams, *device);
  Rollout rollout(spec, layout, 0, nullptr, *device, nullptr, 0, std::int64_t{1} << 20);

  const core::TokenBatch prompts = testing::make_prompts(3, 5, spec.vocab_size, 1);
  const core::TokenBatch tokens = rollout.generate(*shard, prompts, 6);
  ASSERT_EQ(tokens.rows, 3);
  ASSERT_EQ(tokens.cols, 6);
  EXPECT_EQ(tokens.tokens, reference.generate(prompts, 6).tokens);

  const CheckResult check = reference.check(prompts, tokens, rollout.last_token_logits());
  EXPECT_TRUE(check.ok) << check.detail;
  EXPECT_EQ(check.tokens_checked, 18);
  EXPECT_LT(check.max_logit_diff, 1e-3) << check.detail;
}

INSTANTIATE_TEST_SUITE_P(Models, RolloutSingleRankTest,
                         ::testing::Values(Case{"llama_gqa_untied_bf16", testing::small_llama()},
                                           Case{"qwen2_bias_tied_fp16", testing::small_qwen2_tied()}),
                         [](const auto& test) { return test.param.name; });

TEST(RolloutTest, weights_of_the_previous_iteration_fail_the_check) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, kSeedVersion);
  core::InferenceLayout layout;
  auto stale = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                        core::BufferKind::kInferenceParams, *device);
  reference.step(0);
  auto fresh = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                        core::BufferKind::kInferenceParams, *device);
  Rollout rollout(spec, layout, 0, nullptr, *device, nullptr, 0, std::int64_t{1} << 20);
  const core::TokenBatch prompts = testing::make_prompts(4, 6, spec.vocab_size, 2);

  const core::TokenBatch from_fresh = rollout.generate(*fresh, prompts, 5);
  const CheckResult fresh_check = reference.check(prompts, from_fresh, rollout.last_token_logits());
  EXPECT_TRUE(fresh_check.ok) << fresh_check.detail;

  const core::TokenBatch from_stale = rollout.generate(*stale, prompts, 5);
  const CheckResult stale_check = reference.check(prompts, from_stale, rollout.last_token_logits());
  EXPECT_FALSE(stale_check.ok) << stale_check.detail;
  EXPECT_GT(stale_check.tokens_wrong, 0);
  EXPECT_NE(stale_check.detail.find("disagree"), std::string::npos) << stale_check.detail;

  // Even from the tokens alone (no rollout logits) the stale weights show.
  const CheckResult tokens_only = reference.check(prompts, from_stale);
  EXPECT_FALSE(tokens_only.ok) << tokens_only.detail;
}

TEST(RolloutTest, one_corrupted_tensor_fails_the_check) {
  const core::ModelSpec spec = testing::small_qwen2_tied();
  auto device = core::make_cpu_device(kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, kSeedVersion);
  core::InferenceLayout layout;
  const core::BufferLayout shard_layout = core::inference_param_buffer(spec, layout, 0);
  auto shard = testing::shard_from_full(spec, reference, shard_layout, core::BufferKind::kInferenceParams, *device);
  // Swap the two halves of layer 1's down_proj (a wrong reorder, as a broken transition would make).
  const core::LocalTensor down = testing::find_tensor(shard_layout, "model.layers.1.mlp.down_proj.weight");
  auto* base = static_cast<unsigned char*>(shard->data()) + down.offset_bytes;
  const std::size_t half = static_cast<std::size_t>(down.numel() / 2) * core::dtype_size(spec.dtype);
  std::vector<unsigned char> scratch(base, base + half);
  std::memmove(base, base + half, half);
  std::memcpy(base + half, scratch.data(), half);

  Rollout rollout(spec, layout, 0, nullptr, *device, nullptr, 0, std::int64_t{1} << 20);
  const core::TokenBatch prompts = testing::make_prompts(4, 6, spec.vocab_size, 3);
  const core::TokenBatch tokens = rollout.generate(*shard, prompts, 5);
  const CheckResult check = reference.check(prompts, tokens, rollout.last_token_logits());
  EXPECT_FALSE(check.ok) << check.detail;
  EXPECT_GT(check.max_logit_diff, 1e-2) << check.detail;
}

TEST(RolloutTest, a_batch_larger_than_the_kv_cache_fails_clearly) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, kSeedVersion);
  core::InferenceLayout layout;
  auto shard = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                        core::BufferKind::kInferenceParams, *device);
  const std::int64_t per_token = kv_cache_bytes_per_token(spec, layout);
  EXPECT_EQ(per_token, spec.num_hidden_layers * 2 * spec.num_key_value_heads * spec.resolved_head_dim() * 4);
  // 2 rows x (4 + 4) positions = 16 token positions; the cache holds 15.
  Rollout rollout(spec, layout, 0, nullptr, *device, nullptr, 0, 15 * per_token + per_token / 2);
  EXPECT_EQ(rollout.kv_cache_token_capacity(), 15);
  EXPECT_EQ(rollout.kv_cache().bytes(), 15 * per_token);
  const core::TokenBatch prompts = testing::make_prompts(2, 4, spec.vocab_size, 4);
  try {
    rollout.generate(*shard, prompts, 4);
    FAIL() << "generate should not fit the KV cache";
  } catch (const core::OutOfMemoryError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("16 KV cache token positions"), std::string::npos) << what;
    EXPECT_NE(what.find("holds 15"), std::string::npos) << what;
  }
  // One position fewer fits.
  EXPECT_EQ(rollout.generate(*shard, prompts, 3).tokens.size(), 6u);
  EXPECT_THROW(Rollout(spec, layout, 0, nullptr, *device, nullptr, 0, per_token - 1), core::ConfigError);
}

TEST(RolloutTest, the_kv_cache_is_a_tracked_buffer_allocated_by_generate_and_released_on_request) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, kSeedVersion);
  core::InferenceLayout layout;
  auto shard = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                        core::BufferKind::kInferenceParams, *device);
  core::RecordingEventSink events;
  Rollout rollout(spec, layout, 0, nullptr, *device, &events, 3, std::int64_t{1} << 20);
  EXPECT_EQ(rollout.kv_cache().residency(), core::Residency::kNone);
  const std::int64_t before = device->bytes_in_use(core::Residency::kGpu);
  rollout.set_iteration(2);
  rollout.generate(*shard, testing::make_prompts(1, 3, spec.vocab_size, 5), 2);
  EXPECT_EQ(rollout.kv_cache().residency(), core::Residency::kGpu);
  EXPECT_EQ(device->bytes_in_use(core::Residency::kGpu) - before, rollout.kv_cache().bytes());
  rollout.release_kv_cache();
  EXPECT_EQ(rollout.kv_cache().residency(), core::Residency::kNone);
  EXPECT_EQ(device->bytes_in_use(core::Residency::kGpu), before);

  int created = 0;
  int to_gpu = 0;
  int to_none = 0;
  for (const core::Event& event : events.events()) {
    if (event.buffer != "rollout.kv_cache") continue;
    EXPECT_EQ(event.kind, core::BufferKind::kKvCache);
    EXPECT_EQ(event.rank, 3);
    if (event.type == core::EventType::kBufferCreated) ++created;
    if (event.type == core::EventType::kResidency && event.to == core::Residency::kGpu) {
      ++to_gpu;
      EXPECT_EQ(event.iteration, 2);
    }
    if (event.type == core::EventType::kResidency && event.to == core::Residency::kNone) ++to_none;
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(to_gpu, 1);
  EXPECT_EQ(to_none, 1);
}

TEST(RolloutTest, prompts_outside_the_vocabulary_and_foreign_buffers_are_rejected) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, kSeedVersion);
  core::InferenceLayout layout;
  auto shard = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                        core::BufferKind::kInferenceParams, *device);
  Rollout rollout(spec, layout, 0, nullptr, *device, nullptr, 0, std::int64_t{1} << 20);
  core::TokenBatch prompts = testing::make_prompts(1, 3, spec.vocab_size, 6);
  prompts.tokens[1] = static_cast<std::int32_t>(spec.vocab_size);
  EXPECT_THROW(rollout.generate(*shard, prompts, 2), core::Error);
  // The reference's full buffer is not an inference shard.
  EXPECT_THROW(rollout.generate(reference.params(), testing::make_prompts(1, 3, spec.vocab_size, 6), 2), core::Error);
}

TEST(ReferenceModelTest, check_emits_a_check_event_and_accepts_near_ties_only_within_epsilon) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  core::RecordingEventSink events;
  ReferenceModel reference(spec, *device, &events, 1, AdamOptions{}, kSeedVersion);
  reference.set_iteration(4);
  const core::TokenBatch prompts = testing::make_prompts(2, 4, spec.vocab_size, 7);
  core::TokenBatch tokens = reference.generate(prompts, 3);
  const CheckResult good = reference.check(prompts, tokens);
  EXPECT_TRUE(good.ok) << good.detail;
  EXPECT_GT(good.min_margin, 0.0);
  // Replace row 0's last token (nothing depends on it): it fails unless epsilon covers the margin to it.
  tokens.tokens[2] = (tokens.tokens[2] + 1) % static_cast<std::int32_t>(spec.vocab_size);
  const CheckResult bad = reference.check(prompts, tokens);
  EXPECT_FALSE(bad.ok) << bad.detail;
  EXPECT_EQ(bad.tokens_wrong, 1);
  EXPECT_NE(bad.detail.find("row 0, new token 2"), std::string::npos) << bad.detail;
  CheckOptions lenient;
  lenient.margin_epsilon = 1e9f;
  const CheckResult tie = reference.check(prompts, tokens, {}, lenient);
  EXPECT_TRUE(tie.ok) << tie.detail;
  EXPECT_EQ(tie.near_ties, 1);

  std::vector<core::Event> checks;
  for (const core::Event& event : events.events()) {
    if (event.type == core::EventType::kCheck) checks.push_back(event);
  }
  ASSERT_EQ(checks.size(), 3u);
  EXPECT_TRUE(checks[0].ok);
  EXPECT_FALSE(checks[1].ok);
  EXPECT_EQ(checks[1].operation, "rollout_reference");
  EXPECT_EQ(checks[1].rank, 1);
  EXPECT_EQ(checks[1].iteration, 4);
  EXPECT_EQ(checks[1].detail, bad.detail);
}

}  // namespace
}  // namespace hybridshard::service::workloads
