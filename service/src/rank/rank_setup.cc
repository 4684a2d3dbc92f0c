#include "hybridshard/service/rank/rank_setup.h"

#include <algorithm>
#include <utility>

#include "hybridshard/core/error.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/config/job_config.h"
#include "hybridshard/service/config/memory_plan.h"

namespace hybridshard::service {
namespace {

// Fills `buffer` (resident on the device) with `layout` from the checkpoint: straight into it on a CPU device,
// through a host copy on a GPU.
void read_checkpoint_into(const HfCheckpoint& checkpoint, const core::ModelSpec& spec, const core::BufferLayout& layout,
                          core::Device& device, core::FlatBuffer& buffer) {
  if (device.type() == core::DeviceType::kCpu) {
    checkpoint.read_buffer(spec, layout, buffer.data());
    return;
  }
  std::vector<std::uint8_t> host(static_cast<std::size_t>(layout.bytes));
  checkpoint.read_buffer(spec, layout, host.data());
  device.copy(buffer.data(), core::Residency::kGpu, host.data(), core::Residency::kCpu, layout.bytes);
  device.synchronize();  // `host` goes out of scope
}

}  // namespace

void require_plan_fits(const JobConfig& job, int rank, const std::string& host, core::Device& device) {
  const MemoryPlan memory = make_rank_memory_plan(
      job, rank, job.runtime.device_memory > 0 ? job.runtime.device_memory : device.total_memory());
  const RankMemoryPlan& mine = memory.ranks.front();
  if (mine.fits) return;
  std::string why;
  for (const std::string& note : mine.notes) why += "\n  " + note;
  HS_THROW(core::OutOfMemoryError, "rank " + std::to_string(rank) + " on " + host +
                                       ": the job does not fit this device (" + device.description() + "):" + why +
                                       "\n" + format_memory_plan(memory));
}

std::unique_ptr<core::Device> open_device(const DeviceChoice& choice) {
  if (choice.type == core::DeviceType::kCuda) return core::make_cuda_device(choice.cuda_index);
  return core::make_cpu_device(choice.cpu_device_memory);
}

std::unique_ptr<core::Store> open_store(const StoreAddress& address, int world_size,
                                        std::chrono::milliseconds timeout) {
  core::StoreOptions options;
  options.host = address.host;
  options.port = address.port;
  options.is_server = address.host_it;
  options.world_size = world_size;
  options.timeout = timeout;
  options.prefix = address.prefix;
  options.file = address.file;
  return core::Store::open(options);
}

std::unique_ptr<core::Communicator> open_world(core::Store& store, const DeviceChoice& device, int rank, int world_size,
                                               std::chrono::milliseconds timeout) {
  if (device.type == core::DeviceType::kCuda) {
    return core::make_nccl_communicator(store, rank, world_size, device.cuda_index, timeout);
  }
  return core::make_gloo_communicator(store, rank, world_size, timeout);
}

std::vector<int> rollout_group_of(core::Strategy strategy, const core::TrainLayout& train,
                                  const core::InferenceLayout& rollout, int rank) {
  std::vector<int> members;
  const int tp = rollout.tp;
  if (strategy == core::Strategy::kSeed && train.tp % tp == 0) {
    // verl's vLLM groups: strided inside the train tp group, micro data-parallel rank fastest.
    const int micro = train.tp / tp;
    const int train_tp_rank = train.coord(rank).tp_rank;
    const int base = rank - train_tp_rank;
    for (int shard = 0; shard < tp; ++shard) members.push_back(base + shard * micro + train_tp_rank % micro);
  } else {
    const int group = rank / tp;
    for (int shard = 0; shard < tp; ++shard) members.push_back(group * tp + shard);
  }
  return members;
}

std::unique_ptr<core::Communicator> open_rollout_group(core::Communicator& world, core::Strategy strategy,
                                                       const core::TrainLayout& train,
                                                       const core::InferenceLayout& rollout) {
  if (rollout.tp <= 1) return nullptr;
  std::vector<std::vector<int>> groups;
  for (int member = 0; member < world.size(); ++member) {
    std::vector<int> group = rollout_group_of(strategy, train, rollout, member);
    if (std::find(groups.begin(), groups.end(), group) == groups.end()) groups.push_back(std::move(group));
  }
  std::unique_ptr<core::Communicator> mine;
  for (const std::vector<int>& group : groups) {
    std::unique_ptr<core::Communicator> created = world.subgroup(group);
    if (created) mine = std::move(created);
  }
  return mine;
}

TrainWeights::TrainWeights(const core::ModelSpec& spec, const std::vector<core::BufferLayout>& layouts,
                           core::Device& device, core::EventSink* events, int rank, const WeightSource& source) {
  for (const core::BufferLayout& layout : layouts) {
    auto buffer = std::make_unique<core::FlatBuffer>(layout, core::BufferKind::kParams, device, events, rank);
    buffer->move_to(core::Residency::kGpu, /*keep_contents=*/false);
    if (source.checkpoint != nullptr) {
      read_checkpoint_into(*source.checkpoint, spec, layout, device, *buffer);
    } else {
      device.generate(layout, source.seed, buffer->data());
    }
    pointers_.push_back(buffer.get());
    buffers_.push_back(std::move(buffer));
  }
  device.synchronize();
}

void TrainWeights::set_iteration(int iteration) {
  for (auto& buffer : buffers_) buffer->set_iteration(iteration);
}

RankSetupOptions rank_setup_options(const JobConfig& job, int rank, int local_rank, const StoreAddress& store) {
  RankSetupOptions options;
  options.spec = job.model.spec;
  options.train = job.train;
  options.rollout = job.rollout;
  options.strategy = job.runtime.strategy;
  options.transport = job.runtime.transport;
  options.rank = rank;
  options.world_size = job.runtime.world_size;
  options.store = store;
  const bool cuda = job.runtime.backend == BackendChoice::kNccl ||
                    (job.runtime.backend == BackendChoice::kAuto && core::cuda_available());
  options.device.type = cuda ? core::DeviceType::kCuda : core::DeviceType::kCpu;
  options.device.cuda_index =
      job.runtime.devices.empty()
          ? local_rank
          : job.runtime.devices[static_cast<std::size_t>(local_rank) % job.runtime.devices.size()];
  options.device.cpu_device_memory = job.runtime.cpu_device_memory;
  options.timeout = job.runtime.timeout;
  options.bucket_bytes = job.memory.bucket_bytes;
  options.checkpoint = job.model.checkpoint;
  options.seed = job.model.seed;
  return options;
}

RankSetup::RankSetup(const RankSetupOptions& options, const RankSetupHooks& hooks) : options_(options) {
  const int rank = options_.rank;
  device_ = open_device(options_.device);
  if (hooks.device_open) hooks.device_open(*device_);

  store_ = open_store(options_.store, options_.world_size, options_.timeout);
  world_store_ = store_->scoped("world");
  world_ = open_world(*world_store_, options_.device, rank, options_.world_size, options_.timeout);
  rollout_group_ = open_rollout_group(*world_, options_.strategy, options_.train, options_.rollout);

  core::PlanOptions plan_options;
  plan_options.bucket_bytes = options_.bucket_bytes;
  plan_ = core::make_rank_plan(options_.spec, options_.train, options_.rollout, rank, plan_options);
  inference_tp_rank_ = core::inference_tp_rank_of(options_.strategy, options_.train, options_.rollout, rank);

  if (!options_.checkpoint.empty())
    checkpoint_ = std::make_unique<HfCheckpoint>(HfCheckpoint::open(options_.checkpoint));
  const auto load = [&] {
    weights_ = std::make_unique<TrainWeights>(options_.spec, plan_.train_buffers, *device_, options_.events, rank,
                                              WeightSource{checkpoint_.get(), options_.seed});
  };
  if (hooks.around_weights) {
    hooks.around_weights(load);
  } else {
    load();
  }
  HS_CHECK(weights_ != nullptr, "RankSetup: the around_weights hook did not run the load");
  transition_ =
      core::make_transition(options_.strategy, plan_, *world_, *device_, options_.events, {options_.transport});
}

RankSetup::~RankSetup() = default;

}  // namespace hybridshard::service
