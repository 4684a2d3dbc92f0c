#include "hybridshard/service/workloads/train_step.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

#include "detail/device_sync.h"
#include "detail/tensors.h"
#include "hybridshard/core/error.h"

namespace hybridshard::service::workloads {
namespace {

std::string chunk_suffix(const core::BufferLayout& layout) {
  return ".pp" + std::to_string(layout.pp_rank) + ".vpp" + std::to_string(layout.vpp_chunk);
}

std::unique_ptr<core::FlatBuffer> make_state_buffer(const core::BufferLayout& fp32, std::string name,
                                                    core::BufferKind kind, core::Device& device,
                                                    core::EventSink* events, int rank) {
  core::BufferLayout named = fp32;
  named.name = std::move(name);
  auto buffer = std::make_unique<core::FlatBuffer>(named, kind, device, events, rank);
  buffer->move_to(core::Residency::kGpu, /*keep_contents=*/false);
  // Alignment gaps stay zero forever: their gradient is zero, so Adam leaves them at zero.
  device.fill_zero(buffer->data(), buffer->bytes());
  return buffer;
}

void require_on_device(const core::FlatBuffer& buffer, std::string_view operation) {
  if (buffer.residency() != core::Residency::kGpu) {
    HS_THROW(core::Error, std::string(operation) + ": buffer " + buffer.name() + " is resident on " +
                              std::string(core::residency_name(buffer.residency())) +
                              ", not on the device (restore() it first)");
  }
}

}  // namespace

std::uint32_t gradient_version(int iteration) {
  HS_CHECK(iteration >= 0, "iteration " + std::to_string(iteration) + " is negative");
  return kGradientVersionBase + static_cast<std::uint32_t>(iteration);
}

core::BufferLayout fp32_layout(const core::BufferLayout& layout, std::string name) {
  core::BufferLayout result;
  result.name = std::move(name);
  result.dtype = core::DType::kFloat32;
  result.pp_rank = layout.pp_rank;
  result.vpp_chunk = layout.vpp_chunk;
  for (const core::LocalTensor& tensor : layout.tensors) core::append_tensor(result, tensor);
  return result;
}

struct TrainStep::Chunk {
  core::BufferLayout layout;
  core::BufferLayout fp32;
  core::FlatBuffer* params = nullptr;
  std::unique_ptr<core::FlatBuffer> grads;
  std::unique_ptr<core::FlatBuffer> master;
  std::unique_ptr<core::FlatBuffer> exp_avg;
  std::unique_ptr<core::FlatBuffer> exp_avg_sq;
};

TrainStep::TrainStep(std::vector<core::BufferLayout> layouts, std::vector<core::FlatBuffer*> params,
                     core::Device& device, core::EventSink* events, int rank, AdamOptions adam, std::string prefix)
    : device_(device), events_(events), rank_(rank), adam_(adam), prefix_(std::move(prefix)) {
  HS_CHECK(layouts.size() == params.size(), "TrainStep: " + std::to_string(layouts.size()) + " layouts but " +
                                                std::to_string(params.size()) + " parameter buffers");
  HS_CHECK(
      adam.learning_rate > 0 && adam.beta1 >= 0 && adam.beta1 < 1 && adam.beta2 >= 0 && adam.beta2 < 1 && adam.eps > 0,
      "TrainStep: Adam needs learning_rate > 0, betas in [0, 1) and eps > 0");
  for (std::size_t i = 0; i < layouts.size(); ++i) {
    core::FlatBuffer* buffer = params[i];
    HS_CHECK(buffer != nullptr, "TrainStep: parameter buffer " + std::to_string(i) + " is null");
    const core::BufferLayout& layout = layouts[i];
    HS_CHECK(buffer->bytes() == layout.bytes && buffer->info().dtype == layout.dtype,
             "TrainStep: buffer " + buffer->name() + " (" + std::to_string(buffer->bytes()) + " bytes, " +
                 std::string(core::dtype_name(buffer->info().dtype)) + ") does not hold layout " + layout.name + " (" +
                 std::to_string(layout.bytes) + " bytes, " + std::string(core::dtype_name(layout.dtype)) + ")");
    require_on_device(*buffer, "TrainStep");

    auto chunk = std::make_unique<Chunk>();
    chunk->layout = layout;
    chunk->params = buffer;
    const std::string suffix = chunk_suffix(layout);
    chunk->fp32 = workloads::fp32_layout(layout, prefix_ + ".fp32" + suffix);
    chunk->grads =
        make_state_buffer(chunk->fp32, prefix_ + ".grads" + suffix, core::BufferKind::kGrads, device, events, rank);
    chunk->master = make_state_buffer(chunk->fp32, prefix_ + ".master" + suffix, core::BufferKind::kMasterParams,
                                      device, events, rank);
    chunk->exp_avg = make_state_buffer(chunk->fp32, prefix_ + ".exp_avg" + suffix, core::BufferKind::kOptimizerState,
                                       device, events, rank);
    chunk->exp_avg_sq = make_state_buffer(chunk->fp32, prefix_ + ".exp_avg_sq" + suffix,
                                          core::BufferKind::kOptimizerState, device, events, rank);
    detail::synchronize_all(device_);

    // Master weights start as the parameters, widened to fp32 (exact).
    const at::Tensor params_flat = detail::flat_view(*buffer, device_);
    const at::Tensor master_flat = detail::flat_view(*chunk->master, device_);
    for (std::size_t t = 0; t < layout.tensors.size(); ++t) {
      detail::tensor_view(master_flat, chunk->fp32.tensors[t])
          .copy_(detail::tensor_view(params_flat, layout.tensors[t]));
    }
    detail::synchronize_all(device_);
    chunks_.push_back(std::move(chunk));
  }
}

TrainStep::~TrainStep() = default;

void TrainStep::step(int iteration) {
  const std::uint32_t version = gradient_version(iteration);
  for (const auto& chunk : chunks_) {
    for (core::FlatBuffer* buffer :
         {chunk->params, chunk->grads.get(), chunk->master.get(), chunk->exp_avg.get(), chunk->exp_avg_sq.get()}) {
      require_on_device(*buffer, "TrainStep::step(" + std::to_string(iteration) + ")");
      buffer->set_iteration(iteration);
    }
  }
  ++steps_taken_;
  // torch.optim.Adam (no weight decay, no amsgrad), step t:
  //   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
  //   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
  // Written with correctly rounded element-wise operations only (no fused multiply-adds with a non-unit factor), so
  // each element's result depends on nothing but its own inputs: shards and the full model agree bit for bit.
  const double t = steps_taken_;
  const double bias_correction1 = 1.0 - std::pow(adam_.beta1, t);
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(adam_.beta2, t));
  const double step_size = adam_.learning_rate / bias_correction1;
  for (const auto& chunk : chunks_) {
    // The pseudo-gradient of every element, by its Hugging Face coordinates (zero on padding rows).
    device_.generate(chunk->fp32, version, chunk->grads->data());
    detail::synchronize_all(device_);
    const at::Tensor grad = detail::flat_view(*chunk->grads, device_);
    at::Tensor exp_avg = detail::flat_view(*chunk->exp_avg, device_);
    at::Tensor exp_avg_sq = detail::flat_view(*chunk->exp_avg_sq, device_);
    at::Tensor master = detail::flat_view(*chunk->master, device_);
    exp_avg.mul_(adam_.beta1).add_(grad * (1.0 - adam_.beta1));
    exp_avg_sq.mul_(adam_.beta2).add_((grad * grad).mul_(1.0 - adam_.beta2));
    const at::Tensor denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(adam_.eps);
    master.sub_((exp_avg / denom).mul_(step_size));

    const at::Tensor params_flat = detail::flat_view(*chunk->params, device_);
    for (std::size_t i = 0; i < chunk->layout.tensors.size(); ++i) {
      detail::tensor_view(params_flat, chunk->layout.tensors[i])
          .copy_(detail::tensor_view(master, chunk->fp32.tensors[i]));
    }
  }
  detail::synchronize_all(device_);
}

void TrainStep::offload_optimizer() {
  detail::synchronize_all(device_);
  for (const auto& chunk : chunks_) {
    for (core::FlatBuffer* buffer : {chunk->master.get(), chunk->exp_avg.get(), chunk->exp_avg_sq.get()}) {
      if (buffer->residency() == core::Residency::kGpu) buffer->move_to(core::Residency::kCpu);
    }
  }
}

void TrainStep::offload_grads() {
  detail::synchronize_all(device_);
  for (const auto& chunk : chunks_) {
    if (chunk->grads->residency() == core::Residency::kGpu) chunk->grads->move_to(core::Residency::kCpu);
  }
}

void TrainStep::free_grads() {
  detail::synchronize_all(device_);
  for (const auto& chunk : chunks_) chunk->grads->release();
}

void TrainStep::restore() {
  for (const auto& chunk : chunks_) {
    for (core::FlatBuffer* buffer : {chunk->master.get(), chunk->exp_avg.get(), chunk->exp_avg_sq.get()}) {
      HS_CHECK(buffer->residency() != core::Residency::kNone,
               "TrainStep::restore: " + buffer->name() + " was freed; optimizer state cannot be rebuilt");
      if (buffer->residency() == core::Residency::kCpu) buffer->move_to(core::Residency::kGpu);
    }
    if (chunk->grads->residency() == core::Residency::kCpu) {
      chunk->grads->move_to(core::Residency::kGpu);
    } else if (chunk->grads->residency() == core::Residency::kNone) {
      chunk->grads->move_to(core::Residency::kGpu, /*keep_contents=*/false);
      device_.fill_zero(chunk->grads->data(), chunk->grads->bytes());
    }
  }
  detail::synchronize_all(device_);
}

TrainStep::Chunk& TrainStep::chunk_at(std::size_t chunk) const {
  HS_CHECK(chunk < chunks_.size(),
           "TrainStep: chunk " + std::to_string(chunk) + " of " + std::to_string(chunks_.size()));
  return *chunks_[chunk];
}

const core::BufferLayout& TrainStep::layout(std::size_t chunk) const { return chunk_at(chunk).layout; }
const core::BufferLayout& TrainStep::fp32_layout(std::size_t chunk) const { return chunk_at(chunk).fp32; }
core::FlatBuffer& TrainStep::params(std::size_t chunk) { return *chunk_at(chunk).params; }
core::FlatBuffer& TrainStep::grads(std::size_t chunk) { return *chunk_at(chunk).grads; }
core::FlatBuffer& TrainStep::master(std::size_t chunk) { return *chunk_at(chunk).master; }
core::FlatBuffer& TrainStep::exp_avg(std::size_t chunk) { return *chunk_at(chunk).exp_avg; }
core::FlatBuffer& TrainStep::exp_avg_sq(std::size_t chunk) { return *chunk_at(chunk).exp_avg_sq; }

}  // namespace hybridshard::service::workloads
