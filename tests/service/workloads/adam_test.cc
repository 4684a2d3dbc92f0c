// TrainStep's update against libtorch's own torch::optim::Adam on the same tensors (fp32 model, so parameters and
// master weights coincide).
#include <gtest/gtest.h>
#include <torch/optim/adam.h>

#include <cstring>
#include <vector>

#include "hybridshard/core/train_layout.h"
#include "hybridshard/service/workloads/train_step.h"
#include "test_models.h"

namespace hybridshard::service::workloads {
namespace {

at::Tensor copy_of(core::FlatBuffer& buffer) {
  return at::from_blob(buffer.data(), {buffer.bytes() / 4}, at::TensorOptions().dtype(at::kFloat)).clone();
}

TEST(AdamTest, train_step_equals_torch_optim_adam_on_the_same_tensors) {
  core::ModelSpec spec = testing::small_llama();
  spec.dtype = core::DType::kFloat32;
  auto device = core::make_cpu_device(testing::kDeviceBytes);
  core::TrainLayout train;
  train.tp = 2;
  const std::vector<core::BufferLayout> layouts = core::train_param_buffers(spec, train, 1, 0);
  core::FlatBuffer params(layouts[0], core::BufferKind::kParams, *device, nullptr, 0);
  params.move_to(core::Residency::kGpu, false);
  device->fill_zero(params.data(), params.bytes());
  device->generate(layouts[0], testing::kSeedVersion, params.data());

  AdamOptions adam;
  adam.learning_rate = 5e-3;
  adam.beta1 = 0.8;
  adam.beta2 = 0.99;
  adam.eps = 1e-6;
  TrainStep step(layouts, {&params}, *device, nullptr, 0, adam);
  // fp32 parameters: the master layout is the parameter layout, so the flat tensors line up element for element.
  ASSERT_EQ(step.fp32_layout(0).bytes, layouts[0].bytes);

  const at::Tensor initial = copy_of(params);
  at::Tensor weights = copy_of(params).requires_grad_(true);
  torch::optim::Adam optimizer(
      {weights},
      torch::optim::AdamOptions(adam.learning_rate).betas({adam.beta1, adam.beta2}).eps(adam.eps).weight_decay(0));
  for (int iteration = 0; iteration < 4; ++iteration) {
    step.step(iteration);
    weights.mutable_grad() = copy_of(step.grads(0));  // the pseudo-gradient TrainStep used
    optimizer.step();
    const at::Tensor ours = copy_of(step.master(0));
    const at::Tensor theirs = weights.detach();
    EXPECT_TRUE(at::allclose(ours, theirs, /*rtol=*/1e-6, /*atol=*/1e-7))
        << "iteration " << iteration << ": max |diff| " << (ours - theirs).abs().max().item<float>();
    EXPECT_TRUE(at::equal(copy_of(params), ours)) << "fp32 parameters must equal the master weights";
  }
  // Adam's first steps move each weight with a non-zero gradient by about the learning rate per step.
  const double moved = (copy_of(step.master(0)) - initial).abs().max().item<double>();
  EXPECT_GT(moved, 2 * adam.learning_rate);
}

}  // namespace
}  // namespace hybridshard::service::workloads
