// memory.release_on_exit on a real transition (issue 18): one rank of a tp1 -> tp1 job on the loopback
// communicator enters and exits (free) twice. After an exit with `cache`, the freed inference shard is in the device's
// cache (cached kind) and the driver's used memory has not dropped; after an exit with `driver`, nothing is cached and
// the driver's used memory has dropped by exactly what was cached, within the allocator's granularity (CUDA: 2 MiB
// blocks; CPU device: none). Built twice: on the CPU device (label unit) and, with HYBRIDSHARD_TEST_CUDA, on CUDA
// device 0 with a 230 MB shard (label gpu; exit 77 without a GPU).
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/transition.h"
#include "transition_support.h"

namespace hybridshard::core {
namespace {

#ifdef HYBRIDSHARD_TEST_CUDA
std::unique_ptr<Device> make_test_device() { return make_cuda_device(0); }
constexpr std::int64_t kGranularity = std::int64_t{8} << 20;  // a few 2 MiB blocks: the driver's pages
// 117 M parameters in bf16: a 234 MB shard, so that the granularity is small beside it.
ModelSpec test_spec() {
  ModelSpec spec = testing::tiny_spec(Architecture::kLlama, DType::kBFloat16, 4);
  spec.hidden_size = 1024;
  spec.num_attention_heads = 8;
  spec.num_key_value_heads = 8;
  spec.intermediate_size = 2816;
  spec.vocab_size = 32000;
  return spec;
}
#else
std::unique_ptr<Device> make_test_device() { return make_cpu_device(std::int64_t{1} << 30); }
constexpr std::int64_t kGranularity = 0;
ModelSpec test_spec() { return testing::tiny_spec(Architecture::kQwen2, DType::kBFloat16, 2); }
#endif

PeerDataProvider no_peers() {
  return [](int peer, std::uint64_t sequence, void*, std::size_t) {
    ADD_FAILURE() << "no peer should be asked (peer " << peer << ", sequence " << sequence << ")";
  };
}

TEST(ReleaseOnExitTest, cache_keeps_the_freed_shard_and_driver_hands_it_back_to_the_driver) {
  constexpr std::uint32_t kVersion = 5;
  const ModelSpec spec = test_spec();
  const TrainLayout train = testing::train_layout(1, 1, 1, 1);
  InferenceLayout inference;
  inference.tp = 1;
  inference.world_size = 1;
  auto device = make_test_device();
  const RankPlan plan = make_rank_plan(spec, train, inference, 0);
  const std::int64_t shard = plan.inference_buffer.bytes;
  auto world = make_loopback_communicator(0, 1, *device, no_peers());
  testing::TrainBuffers buffers(plan, *device, nullptr);
  buffers.generate(plan, *device, kVersion);
  auto transition = make_transition(Strategy::kHybridshard, plan, *world, *device, nullptr);

  // cache: exit frees the shard into the cache; the driver still sees it used.
  transition->enter(buffers.pointers);
  device->synchronize();
  const DeviceMemory entered = device->memory();
  transition->exit(ExitPolicy::kFree);
  release_after_exit(*device, ReleaseOnExit::kCache);
  const DeviceMemory kept = device->memory();
  EXPECT_LE(kept.tracked, entered.tracked - shard);
  EXPECT_GE(kept.cached, shard);
  EXPECT_LE(std::llabs(kept.used - entered.used), kGranularity) << "exit with cache gave memory back to the driver";
  EXPECT_EQ(kept.used, kept.tracked + kept.cached + kept.untracked());

  // The next enter takes the cached block (no new device memory), and lands the right bytes in it.
  FlatBuffer& again = transition->enter(buffers.pointers);
  device->synchronize();
  const DeviceMemory reentered = device->memory();
  EXPECT_LE(reentered.cached, kept.cached - shard);
  EXPECT_LE(std::llabs(reentered.used - kept.used), kGranularity) << "enter after cache allocated from the driver";
#ifndef HYBRIDSHARD_TEST_CUDA
  EXPECT_EQ(testing::compare_with_reference(spec, inference, 0, kVersion, *device, again), "");
#else
  (void)again;
#endif

  // driver: exit frees the shard, and the release hands every cached device block back.
  transition->exit(ExitPolicy::kFree);
  device->synchronize();
  const DeviceMemory exited = device->memory();
  EXPECT_GE(exited.cached, shard);
  release_after_exit(*device, ReleaseOnExit::kDriver);
  const DeviceMemory released = device->memory();
  // What stays cached is the rounding of the blocks still in use (a CUDA block is a multiple of 2 MiB: its slack
  // is held but not tracked): within the granularity, 0 on the CPU device.
  EXPECT_LE(released.cached, kGranularity);
  EXPECT_EQ(released.tracked, exited.tracked);
  // The driver's free memory grew by what was cached.
  EXPECT_LE(std::llabs((exited.used - released.used) - exited.cached), kGranularity)
      << "driver used " << exited.used << " -> " << released.used << ", cached " << exited.cached;
  std::printf(
      "release_on_exit: shard %lld B; after exit(free) with cache: cached %lld B, driver used %lld B; "
      "with driver: cached %lld B, driver used %lld B (%lld B back to the driver)\n",
      static_cast<long long>(shard), static_cast<long long>(kept.cached), static_cast<long long>(kept.used),
      static_cast<long long>(released.cached), static_cast<long long>(released.used),
      static_cast<long long>(exited.used - released.used));

  // Enter after a driver release allocates from the driver again.
  transition->enter(buffers.pointers);
  device->synchronize();
  EXPECT_GE(device->memory().used - released.used, shard - kGranularity);
  transition->exit(ExitPolicy::kFree);
}

}  // namespace
}  // namespace hybridshard::core
