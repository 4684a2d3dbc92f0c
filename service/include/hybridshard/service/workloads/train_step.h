// The train workload: a real Adam step on this rank's parameter shards, holding what a Megatron trainer holds.
//
// Per train chunk (one parameter buffer per vpp chunk) it owns four fp32 buffers with the chunk's tensors at the
// offsets of an fp32 copy of the chunk's layout: "<prefix>.grads.pp<P>.vpp<V>" (kGrads),
// "<prefix>.master.pp<P>.vpp<V>" (kMasterParams, initialised from the parameters), "<prefix>.exp_avg..." and
// "<prefix>.exp_avg_sq..." (kOptimizerState). step(iteration) writes the pseudo-gradient core::weight_value(...,
// gradient_version(iteration)) of every element (by its Hugging Face coordinates, so every layout of the same model
// gets the same gradient for the same weight), runs Adam exactly as torch.optim.Adam does (bias-corrected, no weight
// decay) on the flat fp32 buffers, and writes the parameters as the master weights cast to the model dtype.
//
// The update uses only correctly rounded element-wise operations, so the fp32 master weights of a sharded model are
// bit-identical to those of the full model trained the same way (what ReferenceModel relies on).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"

namespace hybridshard::service::workloads {

struct AdamOptions {
  double learning_rate = 1e-2;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// The weight_value version of iteration `iteration`'s pseudo-gradient.
inline constexpr std::uint32_t kGradientVersionBase = 1000;
std::uint32_t gradient_version(int iteration);

// The chunk's layout with fp32 elements (tensors re-placed at aligned fp32 offsets), named `name`.
core::BufferLayout fp32_layout(const core::BufferLayout& layout, std::string name);

class TrainStep {
 public:
  // `layouts` are RankPlan::train_buffers; `params[i]` holds layouts[i] and must be resident on the device.
  // `prefix` names the buffers ("train"; ReferenceModel uses "reference"). Allocates every buffer on the device.
  TrainStep(std::vector<core::BufferLayout> layouts, std::vector<core::FlatBuffer*> params, core::Device& device,
            core::EventSink* events, int rank, AdamOptions adam, std::string prefix = "train");
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // One optimizer step. Every buffer (params included) must be resident on the device: call restore() after an
  // offload. Throws Error naming the buffer otherwise.
  void step(int iteration);

  // For the memory policy during rollout. offload_optimizer: master weights and Adam moments -> pinned host;
  // offload_grads: grads -> pinned host; free_grads: grads dropped (the next step rewrites them anyway).
  void offload_optimizer();
  void offload_grads();
  void free_grads();
  // Everything back on the device (freed grads are re-allocated and zeroed).
  void restore();

  int steps_taken() const { return steps_taken_; }
  const AdamOptions& options() const { return adam_; }
  std::size_t num_chunks() const { return chunks_.size(); }
  const core::BufferLayout& layout(std::size_t chunk) const;       // model dtype (the parameters')
  const core::BufferLayout& fp32_layout(std::size_t chunk) const;  // grads, master and moments
  core::FlatBuffer& params(std::size_t chunk);
  core::FlatBuffer& grads(std::size_t chunk);
  core::FlatBuffer& master(std::size_t chunk);
  core::FlatBuffer& exp_avg(std::size_t chunk);
  core::FlatBuffer& exp_avg_sq(std::size_t chunk);

 private:
  struct Chunk;
  Chunk& chunk_at(std::size_t chunk) const;

  core::Device& device_;
  core::EventSink* events_;
  int rank_;
  AdamOptions adam_;
  std::string prefix_;
  int steps_taken_ = 0;
  std::vector<std::unique_ptr<Chunk>> chunks_;
};

}  // namespace hybridshard::service::workloads
