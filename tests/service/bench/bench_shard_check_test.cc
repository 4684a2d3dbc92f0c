#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "detail/shard_check.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::service::bench::detail {
namespace {

struct Shard {
  core::ModelSpec spec;
  core::BufferLayout layout;
};

Shard tiny_shard() {
  Shard shard;
  shard.spec = core::ModelSpec{};  // 4 layers, hidden 64, vocab 500: small enough for the CPU device
  core::InferenceLayout inference;
  inference.tp = 1;
  inference.world_size = 1;
  shard.layout = core::inference_param_buffer(shard.spec, inference, 0);
  return shard;
}

TEST(ShardCheckerTest, a_shard_generated_at_the_same_version_has_no_wrong_elements) {
  const Shard shard = tiny_shard();
  const auto device = core::make_cpu_device(std::int64_t{1} << 30);
  DeviceMemory actual(*device, core::Residency::kGpu, shard.layout.bytes);
  device->generate(shard.layout, 7, actual.data());
  ShardChecker checker(*device, shard.layout, 7, 4096);
  EXPECT_GT(checker.num_chunks(), 1u);  // a small scratch limit: the check goes a few tensors at a time
  EXPECT_EQ(checker.count_wrong(actual.data()), 0);
}

TEST(ShardCheckerTest, one_changed_element_counts_once) {
  const Shard shard = tiny_shard();
  const auto device = core::make_cpu_device(std::int64_t{1} << 30);
  DeviceMemory actual(*device, core::Residency::kGpu, shard.layout.bytes);
  device->generate(shard.layout, 7, actual.data());
  // Flip a bit of the first element of the last tensor (CPU device: "device" memory is host memory).
  const core::LocalTensor& last = shard.layout.tensors.back();
  actual.data()[last.offset_bytes] ^= std::byte{0x01};
  ShardChecker checker(*device, shard.layout, 7, 4096);
  EXPECT_EQ(checker.count_wrong(actual.data()), 1);
}

TEST(ShardCheckerTest, a_shard_of_another_version_is_wrong_almost_everywhere) {
  const Shard shard = tiny_shard();
  const auto device = core::make_cpu_device(std::int64_t{1} << 30);
  DeviceMemory actual(*device, core::Residency::kGpu, shard.layout.bytes);
  device->generate(shard.layout, 8, actual.data());
  ShardChecker checker(*device, shard.layout, 7, std::int64_t{1} << 30);
  EXPECT_EQ(checker.num_chunks(), 1u);
  std::int64_t elements = 0;
  for (const core::LocalTensor& tensor : shard.layout.tensors) elements += tensor.numel();
  // Values are k/128 for 256 values of k: about 1 in 256 agrees by chance; padding rows (zeros) always agree.
  EXPECT_GT(checker.count_wrong(actual.data()), elements / 2);
}

}  // namespace
}  // namespace hybridshard::service::bench::detail
