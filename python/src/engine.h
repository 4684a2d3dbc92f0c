// One rank of a job inside a trainer's Python process. It joins the job's rendezvous as hybridshard-rank does (c10d
// TCPStore; Gloo on CPU devices, NCCL on CUDA), holds this rank's train parameter buffers (Megatron-Core layout,
// filled from the job's checkpoint or its seeded weights), and moves the weights into the inference layout (vLLM)
// and back with the job's transition. Python reaches the buffers only through TensorViews (no copy); the engine
// refuses to free memory a view still points at.
#pragma once

#include <ATen/dlpack.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dlpack_tensor.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/transition.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/launch/rank_environment.h"

namespace hybridshard::python {

// exit() or close() while views of the inference buffer are alive: they would point into freed memory.
class LiveViewsError : public core::Error {
 public:
  using core::Error::Error;
};

struct EngineSettings {
  service::JobConfig job;
  service::RankEnvironment environment;  // rank, world, local rank, store address, serve address, job name
  // How long to try reaching `serve` (environment.serve_address) before going on without it.
  std::chrono::milliseconds serve_timeout{3000};
};

struct RankState;

class Engine {
 public:
  // Collective: every rank of the job constructs its engine. Throws core::ConfigError (the job and the environment
  // disagree), core::CommError (rendezvous), core::OutOfMemoryError.
  explicit Engine(const EngineSettings& settings);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int inference_tp_rank() const { return inference_tp_rank_; }
  int iteration() const { return iteration_; }
  bool entered() const { return entered_; }
  bool closed() const { return closed_; }
  core::DType dtype() const;
  core::DeviceType device_type() const;
  int device_index() const { return device_index_; }  // CUDA device; 0 on CPU
  std::string device_description() const;
  const core::RankPlan& plan() const { return plan_; }

  // Views of every tensor of train buffer `chunk` (a virtual-pipeline chunk), in the layout's order.
  std::vector<TensorView> train_views(int chunk);
  // Copies the bytes of a tensor handed in into train tensor `name` of `chunk` (checked: dtype, element count,
  // contiguity and device; throws core::ConfigError naming the tensor).
  void load_train_tensor(int chunk, const std::string& name, const DLTensor& source);

  // Collective. The inference shard (RankPlan::inference_buffer: vLLM names, shapes and fused layouts), a view per
  // tensor. Throws core::Error when already entered.
  std::vector<TensorView> enter();
  // More views of the inference shard while entered (the same lease as enter()'s).
  std::vector<TensorView> inference_views();
  // Collective. Throws LiveViewsError (and does nothing) while a view from enter() is alive; core::Error when not
  // entered. `release`: what happens to the device memory exit freed (default: the job's memory.release_on_exit).
  void exit(core::ExitPolicy policy, std::optional<core::ReleaseOnExit> release = std::nullopt);
  // Collective: a barrier, then no more enter(). The communicators, the store and the memory go with the last of
  // the Engine and its views; views of the train buffers stay valid. Throws LiveViewsError while views of the
  // inference buffer are alive.
  void close();

  // Names of the inference tensors whose views are still referenced (empty when none, or not entered).
  std::vector<std::string> live_inference_views() const;
  // Where a tensor lives in the engine's memory (the address a zero-copy view must have); throws core::ConfigError
  // for an unknown name, core::Error for the inference buffer when not entered.
  std::uintptr_t train_address(int chunk, const std::string& name) const;
  std::uintptr_t inference_address(const std::string& name) const;

  // Phase events for the phases the trainer runs itself ("train", "rollout"): begin, and end with its seconds.
  void phase_begin(const std::string& phase);
  void phase_end(const std::string& phase, double seconds);

 private:
  void require_open(const char* operation) const;
  void require_no_inference_views(const char* operation) const;
  void sample_memory();

  int rank_ = 0;
  int world_size_ = 1;
  int inference_tp_rank_ = 0;
  int device_index_ = 0;
  int iteration_ = 0;
  bool entered_ = false;
  bool closed_ = false;
  core::ReleaseOnExit release_on_exit_ = core::ReleaseOnExit::kDriver;  // the job's
  core::RankPlan plan_;
  std::shared_ptr<RankState> state_;
  std::vector<std::shared_ptr<ViewLease>> train_leases_;  // one per chunk
  std::shared_ptr<ViewLease> inference_lease_;            // from enter() to exit()
};

}  // namespace hybridshard::python
