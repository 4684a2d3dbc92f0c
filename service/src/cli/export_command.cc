#include "export_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <ostream>
#include <thread>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/checkpoint/safetensors.h"
#include "hybridshard/service/files/descriptor_budget.h"
#include "hybridshard/service/files/private_directory.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service {

int export_inference_shards(const JobConfig& job, const std::filesystem::path& out_dir, std::ostream& log) {
  const int world_size = job.runtime.world_size;
  // The ranks are threads of this process, each with a socket to every peer: a world of 64 needs ~4300 descriptors.
  // Checked before anything starts (a c10d SocketError half-way aborted the process and left the staging folder).
  if (const std::string short_of =
          ensure_descriptors(thread_rank_descriptors(world_size, job.rollout.tp),
                             "export of " + std::to_string(world_size) + " ranks as threads of this process");
      !short_of.empty()) {
    HS_THROW(core::Error, short_of);
  }
  // A bad checkpoint fails here, once, before any rank starts (each rank's setup opens its own).
  if (!job.model.checkpoint.empty()) HfCheckpoint::open(job.model.checkpoint);
  std::filesystem::create_directories(out_dir);
  // Files land in a private staging folder (mkdtemp: a fresh name, mode 0700) and move into place only when every
  // rank succeeded: a failed export leaves nothing that looks complete.
  std::string staging_name = (out_dir / ".export-XXXXXX").string();
  if (::mkdtemp(staging_name.data()) == nullptr) {
    HS_THROW(core::Error,
             "export: cannot create a staging folder in " + out_dir.string() + ": " + std::strerror(errno));
  }
  const std::filesystem::path staging = staging_name;

  // The ranks are threads of this process: they meet in a file store in a private directory (no port).
  const PrivateDirectory store_directory("export-store");
  StoreAddress store_address;
  store_address.file = store_directory.store_file();
  store_address.prefix = "export";

  std::mutex mutex;
  std::vector<std::string> errors;
  int written = 0;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        // Host memory stands in for the device: room for the train shards, the inference shard and the staging.
        RankSetupOptions options = rank_setup_options(job, rank, rank, store_address);
        options.strategy = core::Strategy::kHybridshard;
        options.device = DeviceChoice{core::DeviceType::kCpu, 0, std::int64_t{1} << 50};
        RankSetup setup(options);
        const core::RankPlan& plan = setup.plan();
        core::FlatBuffer& shard = setup.transition().enter(setup.train_params());
        setup.device().synchronize();

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
        setup.world().barrier();
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
