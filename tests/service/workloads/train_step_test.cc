// TrainStep: the pseudo-gradient, the sharded update against the full model's (bit for bit), and the memory policy.
#include "hybridshard/service/workloads/train_step.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/core/weight_generator.h"
#include "hybridshard/service/workloads/reference_model.h"
#include "test_models.h"

namespace hybridshard::service::workloads {
namespace {

using testing::kDeviceBytes;
using testing::kSeedVersion;

const float* floats(core::FlatBuffer& buffer) { return static_cast<const float*>(buffer.data()); }

TEST(TrainStepTest, pseudo_gradient_is_weight_value_at_version_1000_plus_iteration) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  core::TrainLayout train;
  train.tp = 2;
  const std::vector<core::BufferLayout> layouts = core::train_param_buffers(spec, train, 1, 0);
  core::FlatBuffer params(layouts[0], core::BufferKind::kParams, *device, nullptr, 0);
  params.move_to(core::Residency::kGpu, false);
  device->generate(layouts[0], kSeedVersion, params.data());
  TrainStep step(layouts, {&params}, *device, nullptr, 0, AdamOptions{});
  step.step(5);
  const core::BufferLayout& fp32 = step.fp32_layout(0);
  const float* grads = floats(step.grads(0));
  std::int64_t checked = 0;
  for (const core::LocalTensor& tensor : fp32.tensors) {
    const float* base = grads + tensor.offset_bytes / 4;
    for (const core::Block& block : tensor.blocks) {
      for (std::int64_t r = 0; r < block.rows; r += 3) {
        for (std::int64_t c = 0; c < block.cols; c += 5) {
          const float expected = core::weight_value(block.hf_tensor, block.hf_row + r, block.hf_col + c, 1005);
          ASSERT_EQ(base[(block.local_row + r) * tensor.cols + block.local_col + c], expected)
              << tensor.name << " (" << r << ", " << c << ")";
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
  EXPECT_EQ(gradient_version(5), 1005u);
}

// Sharded train layouts (tp, pp, vpp) against the full model: after the same iterations, every shard's fp32 master
// weights and model-dtype parameters equal the full model's, bit for bit, and so do the Adam moments.
struct ShardCase {
  std::string name;
  core::ModelSpec spec;
  int tp = 1;
  int pp = 1;
  int vpp = 1;
};

class ShardedTrainStepTest : public ::testing::TestWithParam<ShardCase> {};

TEST_P(ShardedTrainStepTest, sharded_updates_equal_the_full_models_bit_for_bit) {
  const ShardCase& param = GetParam();
  const core::ModelSpec& spec = param.spec;
  auto device = core::make_cpu_device(kDeviceBytes);
  AdamOptions adam;
  adam.learning_rate = 3e-3;
  ReferenceModel full(spec, *device, nullptr, 0, adam, kSeedVersion);
  core::TrainLayout train;
  train.tp = param.tp;
  train.pp = param.pp;
  train.vpp = param.vpp;

  struct Rank {
    std::vector<core::BufferLayout> layouts;
    std::vector<std::unique_ptr<core::FlatBuffer>> params;
    std::unique_ptr<TrainStep> step;
  };
  std::vector<Rank> ranks;
  for (int pp_rank = 0; pp_rank < train.pp; ++pp_rank) {
    for (int tp_rank = 0; tp_rank < train.tp; ++tp_rank) {
      Rank rank;
      rank.layouts = core::train_param_buffers(spec, train, tp_rank, pp_rank);
      std::vector<core::FlatBuffer*> pointers;
      for (const core::BufferLayout& layout : rank.layouts) {
        // Seeded as the lead seeds train shards: the same weight_value version as the reference.
        auto buffer = std::make_unique<core::FlatBuffer>(layout, core::BufferKind::kParams, *device, nullptr, 0);
        buffer->move_to(core::Residency::kGpu, false);
        device->fill_zero(buffer->data(), buffer->bytes());
        device->generate(layout, kSeedVersion, buffer->data());
        pointers.push_back(buffer.get());
        rank.params.push_back(std::move(buffer));
      }
      rank.step = std::make_unique<TrainStep>(rank.layouts, pointers, *device, nullptr, 0, adam);
      ranks.push_back(std::move(rank));
    }
  }
  for (int iteration = 0; iteration < 3; ++iteration) {
    full.step(iteration);
    for (Rank& rank : ranks) rank.step->step(iteration);
  }

  // The full model's state, laid out as each shard: copy_from_full over the fp32 layouts.
  const core::BufferLayout full_fp32 = full.train_step().fp32_layout(0);
  std::int64_t compared = 0;
  for (Rank& rank : ranks) {
    for (std::size_t c = 0; c < rank.layouts.size(); ++c) {
      const core::BufferLayout& shard_fp32 = rank.step->fp32_layout(c);
      for (auto member : {&TrainStep::master, &TrainStep::exp_avg, &TrainStep::exp_avg_sq}) {
        core::FlatBuffer expected(shard_fp32, core::BufferKind::kMasterParams, *device, nullptr, 0);
        expected.move_to(core::Residency::kGpu, false);
        copy_from_full(spec, full_fp32, (full.train_step().*member)(0), shard_fp32, expected, *device);
        core::FlatBuffer& actual = (rank.step.get()->*member)(c);
        ASSERT_EQ(std::memcmp(actual.data(), expected.data(), static_cast<std::size_t>(actual.bytes())), 0)
            << actual.name() << " differs from the full model's";
        compared += actual.bytes();
      }
      core::FlatBuffer expected_params(rank.layouts[c], core::BufferKind::kParams, *device, nullptr, 0);
      expected_params.move_to(core::Residency::kGpu, false);
      copy_from_full(spec, full.layout(), full.params(), rank.layouts[c], expected_params, *device);
      ASSERT_EQ(std::memcmp(rank.params[c]->data(), expected_params.data(),
                            static_cast<std::size_t>(expected_params.bytes())),
                0)
          << rank.layouts[c].name << " differs from the full model's";
    }
  }
  EXPECT_GT(compared, 0);
  // And the update did move the weights away from the seed.
  core::FlatBuffer seed(full.layout(), core::BufferKind::kParams, *device, nullptr, 0);
  seed.move_to(core::Residency::kGpu, false);
  device->fill_zero(seed.data(), seed.bytes());
  device->generate(full.layout(), kSeedVersion, seed.data());
  EXPECT_NE(std::memcmp(seed.data(), full.params().data(), static_cast<std::size_t>(seed.bytes())), 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, ShardedTrainStepTest,
                         ::testing::Values(ShardCase{"llama_tp2", testing::small_llama(), 2, 1, 1},
                                           ShardCase{"llama_tp2_pp2_vpp2", testing::small_llama(), 2, 2, 2},
                                           ShardCase{"qwen2_tied_tp2_pp2", testing::small_qwen2_tied(), 2, 2, 1}),
                         [](const auto& test) { return test.param.name; });

TEST(TrainStepTest, offload_and_restore_move_the_state_and_keep_its_values) {
  const core::ModelSpec spec = testing::small_qwen2_tied();
  auto device = core::make_cpu_device(kDeviceBytes);
  core::RecordingEventSink events;
  core::TrainLayout train;
  const std::vector<core::BufferLayout> layouts = core::train_param_buffers(spec, train, 0, 0);
  core::FlatBuffer params(layouts[0], core::BufferKind::kParams, *device, &events, 2);
  params.move_to(core::Residency::kGpu, false);
  device->generate(layouts[0], kSeedVersion, params.data());
  TrainStep step(layouts, {&params}, *device, &events, 2, AdamOptions{});
  EXPECT_EQ(step.grads(0).name(), "train.grads.pp0.vpp0");
  EXPECT_EQ(step.master(0).name(), "train.master.pp0.vpp0");
  EXPECT_EQ(step.exp_avg(0).name(), "train.exp_avg.pp0.vpp0");
  EXPECT_EQ(step.exp_avg_sq(0).name(), "train.exp_avg_sq.pp0.vpp0");
  EXPECT_EQ(step.grads(0).info().kind, core::BufferKind::kGrads);
  EXPECT_EQ(step.master(0).info().kind, core::BufferKind::kMasterParams);
  EXPECT_EQ(step.exp_avg_sq(0).info().kind, core::BufferKind::kOptimizerState);
  EXPECT_EQ(step.master(0).bytes(), step.fp32_layout(0).bytes);
  step.step(0);

  const auto snapshot = [](core::FlatBuffer& buffer) {
    const auto* bytes = static_cast<const unsigned char*>(buffer.data());
    return std::vector<unsigned char>(bytes, bytes + buffer.bytes());
  };
  const std::vector<unsigned char> master = snapshot(step.master(0));
  const std::vector<unsigned char> moments = snapshot(step.exp_avg_sq(0));
  const std::int64_t on_device = device->bytes_in_use(core::Residency::kGpu);

  step.offload_optimizer();
  step.free_grads();
  EXPECT_EQ(step.master(0).residency(), core::Residency::kCpu);
  EXPECT_EQ(step.exp_avg(0).residency(), core::Residency::kCpu);
  EXPECT_EQ(step.exp_avg_sq(0).residency(), core::Residency::kCpu);
  EXPECT_EQ(step.grads(0).residency(), core::Residency::kNone);
  EXPECT_EQ(device->bytes_in_use(core::Residency::kGpu), on_device - 4 * step.master(0).bytes());
  EXPECT_THROW(step.step(1), core::Error);

  step.restore();
  EXPECT_EQ(step.master(0).residency(), core::Residency::kGpu);
  EXPECT_EQ(step.grads(0).residency(), core::Residency::kGpu);
  EXPECT_EQ(snapshot(step.master(0)), master);
  EXPECT_EQ(snapshot(step.exp_avg_sq(0)), moments);

  step.offload_grads();
  EXPECT_EQ(step.grads(0).residency(), core::Residency::kCpu);
  step.restore();
  step.step(1);
  EXPECT_EQ(step.steps_taken(), 2);

  int master_moves = 0;
  for (const core::Event& event : events.events()) {
    if (event.type == core::EventType::kResidency && event.buffer == "train.master.pp0.vpp0") {
      EXPECT_EQ(event.rank, 2);
      EXPECT_EQ(event.kind, core::BufferKind::kMasterParams);
      ++master_moves;
    }
  }
  EXPECT_EQ(master_moves, 3);  // none -> gpu, gpu -> cpu, cpu -> gpu
}

TEST(TrainStepTest, mismatched_buffers_are_rejected) {
  const core::ModelSpec spec = testing::small_llama();
  auto device = core::make_cpu_device(kDeviceBytes);
  core::TrainLayout train;
  train.tp = 2;
  const std::vector<core::BufferLayout> layouts = core::train_param_buffers(spec, train, 0, 0);
  const std::vector<core::BufferLayout> other = core::train_param_buffers(spec, core::TrainLayout{}, 0, 0);
  core::FlatBuffer params(other[0], core::BufferKind::kParams, *device, nullptr, 0);
  params.move_to(core::Residency::kGpu, false);
  EXPECT_THROW(TrainStep(layouts, {&params}, *device, nullptr, 0, AdamOptions{}), core::Error);
  core::FlatBuffer unallocated(layouts[0], core::BufferKind::kParams, *device, nullptr, 0);
  EXPECT_THROW(TrainStep(layouts, {&unallocated}, *device, nullptr, 0, AdamOptions{}), core::Error);
}

}  // namespace
}  // namespace hybridshard::service::workloads
