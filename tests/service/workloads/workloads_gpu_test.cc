// The workloads on a CUDA device (libtorch's CUDA tensors over device memory): the sharded Adam step equals the full
// model's bit for bit, and the rollout generates the reference's tokens. Exit 77 (skipped) without a GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "hybridshard/core/device.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/service/workloads/reference_model.h"
#include "hybridshard/service/workloads/rollout.h"
#include "hybridshard/service/workloads/train_step.h"
#include "test_models.h"

namespace hybridshard::service::workloads {
namespace {

TEST(WorkloadsGpuTest, sharded_adam_on_the_gpu_equals_the_full_models_bit_for_bit) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cuda_device(0);
  ReferenceModel full(spec, *device, nullptr, 0, AdamOptions{}, testing::kSeedVersion);
  for (int iteration = 0; iteration < 2; ++iteration) full.step(iteration);
  core::TrainLayout train;
  train.tp = 2;
  train.pp = 2;
  std::int64_t compared = 0;
  for (int pp_rank = 0; pp_rank < train.pp; ++pp_rank) {
    for (int tp_rank = 0; tp_rank < train.tp; ++tp_rank) {
      const std::vector<core::BufferLayout> layouts = core::train_param_buffers(spec, train, tp_rank, pp_rank);
      core::FlatBuffer params(layouts[0], core::BufferKind::kParams, *device, nullptr, 0);
      params.move_to(core::Residency::kGpu, false);
      device->fill_zero(params.data(), params.bytes());
      device->generate(layouts[0], testing::kSeedVersion, params.data());
      TrainStep step(layouts, {&params}, *device, nullptr, 0, AdamOptions{});
      for (int iteration = 0; iteration < 2; ++iteration) step.step(iteration);
      core::FlatBuffer expected(step.fp32_layout(0), core::BufferKind::kMasterParams, *device, nullptr, 0);
      expected.move_to(core::Residency::kGpu, false);
      copy_from_full(spec, full.train_step().fp32_layout(0), full.train_step().master(0), step.fp32_layout(0), expected,
                     *device);
      EXPECT_EQ(device->count_mismatches(step.master(0).data(), expected.data(), expected.bytes(), 4), 0)
          << "tp rank " << tp_rank << ", pp rank " << pp_rank;
      compared += expected.bytes();
    }
  }
  EXPECT_GT(compared, 0);
}

TEST(WorkloadsGpuTest, rollout_on_the_gpu_generates_the_references_tokens) {
  for (const core::ModelSpec& spec : {testing::small_llama(), testing::small_qwen2_tied()}) {
    auto device = core::make_cuda_device(0);
    ReferenceModel reference(spec, *device, nullptr, 0, AdamOptions{}, testing::kSeedVersion);
    reference.step(0);
    core::InferenceLayout layout;
    auto shard = testing::shard_from_full(spec, reference, core::inference_param_buffer(spec, layout, 0),
                                          core::BufferKind::kInferenceParams, *device);
    Rollout rollout(spec, layout, 0, nullptr, *device, nullptr, 0, std::int64_t{1} << 20);
    const core::TokenBatch prompts = testing::make_prompts(3, 5, spec.vocab_size, 21);
    const core::TokenBatch tokens = rollout.generate(*shard, prompts, 6);
    EXPECT_EQ(tokens.tokens, reference.generate(prompts, 6).tokens);
    const CheckResult check = reference.check(prompts, tokens, rollout.last_token_logits());
    EXPECT_TRUE(check.ok) << check.detail;
    EXPECT_EQ(rollout.kv_cache().residency(), core::Residency::kGpu);
  }
}

}  // namespace
}  // namespace hybridshard::service::workloads

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!hybridshard::core::cuda_available()) {
    std::printf("no CUDA device (or built without CUDA): skipping\n");
    return 77;
  }
  return RUN_ALL_TESTS();
}
