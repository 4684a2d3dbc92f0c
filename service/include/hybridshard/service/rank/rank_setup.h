// Setting up one rank of a job: device -> rendezvous store -> world communicator (and the rollout group) -> reshard
// plan -> train weights -> transition. `hybridshard-rank`, `hybridshard export`, the bench and the Python engine all
// set a rank up through here. No libtorch headers: this library links only core's CPU half and the checkpoint reader.
//
//   RankSetupOptions options = rank_setup_options(job, rank, local_rank, StoreAddress{...});
//   RankSetup setup(options);                 // collective: every rank of the world constructs its own
//   core::FlatBuffer& shard = setup.transition().enter(setup.train_params());
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/store.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/core/transition.h"

namespace hybridshard::service {

struct JobConfig;
class HfCheckpoint;

// Which device a rank works on: a CUDA device (NCCL between ranks) or host memory standing in for one (Gloo).
struct DeviceChoice {
  core::DeviceType type = core::DeviceType::kCpu;
  int cuda_index = 0;                                      // kCuda
  std::int64_t cpu_device_memory = std::int64_t{1} << 30;  // kCpu: what the host "device" reports as its size
};

std::unique_ptr<core::Device> open_device(const DeviceChoice& choice);

// Where the ranks meet: a file store (`file`, the ranks of one host: our launcher, export, bench), or a c10d TCPStore
// at host:port that one process hosts: rank 0 under torchrun-style launchers (`host_it`), or the launcher itself.
struct StoreAddress {
  std::string host = "127.0.0.1";
  int port = 29500;
  bool host_it = false;
  std::string prefix = "hybridshard";  // every key lives under "<prefix>/" (several jobs on one store)
  std::string file;                    // non-empty: core::StoreOptions::file (host, port, host_it unused)
};

std::unique_ptr<core::Store> open_store(const StoreAddress& address, int world_size, std::chrono::milliseconds timeout);

// The world communicator of `device`'s kind: NCCL on a CUDA device, Gloo on the CPU. Collective (every rank).
std::unique_ptr<core::Communicator> open_world(core::Store& store, const DeviceChoice& device, int rank, int world_size,
                                               std::chrono::milliseconds timeout);

// The members of `rank`'s rollout (inference tensor-parallel) group, in inference tp-rank order. The seed strategy
// uses verl's vLLM groups (strided inside the train tp group) when train tp divides by rollout tp.
std::vector<int> rollout_group_of(core::Strategy strategy, const core::TrainLayout& train,
                                  const core::InferenceLayout& rollout, int rank);

// The rollout group of this rank (nullptr when rollout tp is 1). Collective: every rank of `world` takes part in
// creating every group and keeps its own.
std::unique_ptr<core::Communicator> open_rollout_group(core::Communicator& world, core::Strategy strategy,
                                                       const core::TrainLayout& train,
                                                       const core::InferenceLayout& rollout);

// Where train weights come from: a Hugging Face checkpoint, else core's weight generator at `seed`.
struct WeightSource {
  const HfCheckpoint* checkpoint = nullptr;
  std::uint32_t seed = 0;
};

// This rank's train parameters: one flat buffer per plan.train_buffers entry (per vpp chunk), resident on the device
// and filled from `source`.
class TrainWeights {
 public:
  TrainWeights(const core::ModelSpec& spec, const std::vector<core::BufferLayout>& layouts, core::Device& device,
               core::EventSink* events, int rank, const WeightSource& source);

  const std::vector<core::FlatBuffer*>& buffers() const { return pointers_; }
  void set_iteration(int iteration);

 private:
  std::vector<std::unique_ptr<core::FlatBuffer>> buffers_;
  std::vector<core::FlatBuffer*> pointers_;
};

// Everything that sets a rank up, without a job file (the Python engine fills it directly).
struct RankSetupOptions {
  core::ModelSpec spec;
  core::TrainLayout train;
  core::InferenceLayout rollout;
  core::Strategy strategy = core::Strategy::kHybridshard;
  core::Transport transport = core::Transport::kAuto;
  int rank = 0;
  int world_size = 1;
  StoreAddress store;
  DeviceChoice device;
  std::chrono::milliseconds timeout{30000};  // rendezvous and every collective
  std::int64_t bucket_bytes = std::int64_t{256} << 20;
  std::filesystem::path checkpoint;  // a Hugging Face checkpoint directory; empty: generated weights at `seed`
  std::uint32_t seed = 0;
  core::EventSink* events = nullptr;  // buffers and the transition report here (may be nullptr)
};

// From a job: model, layouts, strategy, timeout, bucket size, checkpoint and seed; the device from runtime.backend
// (auto: CUDA when there is one) and runtime.devices (CUDA device of `local_rank`).
RankSetupOptions rank_setup_options(const JobConfig& job, int rank, int local_rank, const StoreAddress& store);

// Steps a caller may hook into, in the order they run.
struct RankSetupHooks {
  // The device is open; no peer has been contacted yet (the rank program checks the memory plan and says it is up).
  std::function<void(core::Device&)> device_open;
  // Runs `load` (the train weights are made and filled); the rank program times it as its "init" phase.
  std::function<void(const std::function<void()>& load)> around_weights;
};

// A rank whose memory plan (computed for this rank alone) does not fit `device` refuses to start: throws
// core::OutOfMemoryError naming the rank, `host` and the device, with the plan's notes and table. The rank program and
// the Python engine run it in RankSetupHooks::device_open, before any peer is contacted or any buffer allocated.
void require_plan_fits(const JobConfig& job, int rank, const std::string& host, core::Device& device);

// One rank, set up. Construction is collective (every rank of the world constructs one, with the same layouts);
// it throws core::Error (core::CommError for the store or a communicator) when a step fails.
class RankSetup {
 public:
  explicit RankSetup(const RankSetupOptions& options, const RankSetupHooks& hooks = {});
  ~RankSetup();
  RankSetup(const RankSetup&) = delete;
  RankSetup& operator=(const RankSetup&) = delete;

  const RankSetupOptions& options() const { return options_; }
  int rank() const { return options_.rank; }
  core::Device& device() { return *device_; }
  core::Store& store() { return *store_; }
  core::Communicator& world() { return *world_; }
  core::Communicator* rollout_group() { return rollout_group_.get(); }  // nullptr when rollout tp is 1
  const core::RankPlan& plan() const { return plan_; }
  int inference_tp_rank() const { return inference_tp_rank_; }  // the inference shard this rank holds
  const HfCheckpoint* checkpoint() const { return checkpoint_.get(); }
  const std::vector<core::FlatBuffer*>& train_params() const { return weights_->buffers(); }
  TrainWeights& train_weights() { return *weights_; }
  core::Transition& transition() { return *transition_; }

 private:
  RankSetupOptions options_;
  std::unique_ptr<HfCheckpoint> checkpoint_;
  std::unique_ptr<core::Device> device_;
  std::unique_ptr<core::Store> store_;
  std::unique_ptr<core::Store> world_store_;
  std::unique_ptr<core::Communicator> world_;
  std::unique_ptr<core::Communicator> rollout_group_;
  core::RankPlan plan_;
  int inference_tp_rank_ = 0;
  std::unique_ptr<TrainWeights> weights_;
  std::unique_ptr<core::Transition> transition_;
};

}  // namespace hybridshard::service
