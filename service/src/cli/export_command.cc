#include "export_command.h"

#include <unistd.h>

#include <exception>
#include <mutex>
#include <ostream>
#include <thread>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/store.h"
#include "hybridshard/core/transition.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/checkpoint/safetensors.h"

namespace hybridshard::service {
namespace {

void fill_train_buffer(const JobConfig& job, const HfCheckpoint* checkpoint, const core::BufferLayout& layout,
                       core::Device& device, void* data) {
  if (checkpoint == nullptr) {
    device.generate(layout, job.model.seed, data);
    return;
  }
  checkpoint->read_buffer(job.model.spec, layout, data);  // the export's device is a CPU device: host memory
}

}  // namespace

int export_inference_shards(const JobConfig& job, const std::filesystem::path& out_dir, std::ostream& log) {
  const int world_size = job.runtime.world_size;
  std::optional<HfCheckpoint> checkpoint;
  if (!job.model.checkpoint.empty()) checkpoint = HfCheckpoint::open(job.model.checkpoint);
  std::filesystem::create_directories(out_dir);
  // Files land in a staging folder and move into place only when every rank succeeded: a failed export leaves
  // nothing that looks complete.
  const std::filesystem::path staging = out_dir / (".export-" + std::to_string(::getpid()));
  std::filesystem::remove_all(staging);
  std::filesystem::create_directories(staging);

  core::StoreOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.is_server = true;
  server_options.timeout = job.runtime.timeout;
  server_options.prefix = "export";
  std::unique_ptr<core::Store> server = core::Store::open(server_options);

  std::mutex mutex;
  std::vector<std::string> errors;
  int written = 0;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        core::StoreOptions client_options = server_options;
        client_options.is_server = false;
        client_options.port = server->port();
        std::unique_ptr<core::Store> store = core::Store::open(client_options);
        std::unique_ptr<core::Store> scope = store->scoped("world");
        std::unique_ptr<core::Communicator> world =
            core::make_gloo_communicator(*scope, rank, world_size, job.runtime.timeout);
        // Host memory stands in for the device: room for the train shards, the inference shard and the staging.
        std::unique_ptr<core::Device> device = core::make_cpu_device(std::int64_t{1} << 50);
        core::PlanOptions plan_options;
        plan_options.bucket_bytes = job.memory.bucket_bytes;
        core::RankPlan plan = core::make_rank_plan(job.model.spec, job.train, job.rollout, rank, plan_options);

        std::vector<std::unique_ptr<core::FlatBuffer>> params;
        std::vector<core::FlatBuffer*> pointers;
        for (const core::BufferLayout& layout : plan.train_buffers) {
          auto buffer = std::make_unique<core::FlatBuffer>(layout, core::BufferKind::kParams, *device, nullptr, rank);
          buffer->move_to(core::Residency::kGpu, false);
          fill_train_buffer(job, checkpoint ? &*checkpoint : nullptr, layout, *device, buffer->data());
          pointers.push_back(buffer.get());
          params.push_back(std::move(buffer));
        }
        std::unique_ptr<core::Transition> transition =
            core::make_transition(core::Strategy::kHybridshard, plan, *world, *device, nullptr);
        core::FlatBuffer& shard = transition->enter(pointers);
        device->synchronize();

        if (rank < job.rollout.tp) {
          std::vector<SafetensorsEntry> entries;
          const auto* base = static_cast<const std::uint8_t*>(shard.data());
          for (const core::LocalTensor& tensor : plan.inference_buffer.tensors) {
            entries.push_back({tensor.name, plan.inference_buffer.dtype, tensor.shape, base + tensor.offset_bytes});
          }
          const std::filesystem::path path = staging / ("rank-" + std::to_string(rank) + ".safetensors");
          write_safetensors(path, entries,
                            {{"format", "pt"},
                             {"hybridshard.inference_tp_rank", std::to_string(rank)},
                             {"hybridshard.inference_tp_size", std::to_string(job.rollout.tp)}});
          std::lock_guard lock(mutex);
          log << "rank " << rank << ": " << entries.size() << " tensors, " << shard.bytes() << " bytes\n";
          ++written;
        }
        world->barrier();
      } catch (const std::exception& error) {
        std::lock_guard lock(mutex);
        errors.push_back("rank " + std::to_string(rank) + ": " + error.what());
      }
    });
  }
  for (std::thread& thread : ranks) thread.join();
  if (!errors.empty()) {
    std::filesystem::remove_all(staging);
    std::string message = "export failed:";
    for (const std::string& error : errors) message += "\n  " + error;
    HS_THROW(core::Error, message);
  }
  for (int rank = 0; rank < job.rollout.tp; ++rank) {
    const std::string name = "rank-" + std::to_string(rank) + ".safetensors";
    std::filesystem::rename(staging / name, out_dir / name);
    log << "wrote " << (out_dir / name).string() << "\n";
  }
  std::filesystem::remove_all(staging);
  return written;
}

}  // namespace hybridshard::service
