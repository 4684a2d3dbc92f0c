// Batch re-distribution: every message goes straight from the rank holding the rows to the rank needing them, in one
// exchange per direction (the seed's broadcast + chunk and its two all-gathers, fused and generalised).
#include "hybridshard/core/batch.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

struct RowRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t rows() const { return end - begin; }
};

RowRange intersect(RowRange a, RowRange b) {
  RowRange range{std::max(a.begin, b.begin), std::min(a.end, b.end)};
  if (range.end < range.begin) range.end = range.begin;
  return range;
}

// Rows of the global batch (`total` rows) that inference data-parallel group `group` of `groups` works on.
RowRange group_rows(std::int64_t group, std::int64_t groups, std::int64_t total) {
  return {group * total / groups, (group + 1) * total / groups};
}

constexpr std::int64_t kTokenBytes = sizeof(std::int32_t);

// Device memory for staging, freed on destruction.
class Staging {
 public:
  Staging(Device& device, std::int64_t bytes)
      : device_(device), bytes_(bytes), data_(bytes > 0 ? device.allocate(Residency::kGpu, bytes) : nullptr) {}
  ~Staging() {
    if (data_ != nullptr) device_.deallocate(Residency::kGpu, data_, bytes_);
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  char* data() const { return static_cast<char*>(data_); }

 private:
  Device& device_;
  std::int64_t bytes_;
  void* data_;
};

// One exchange of host-memory messages; through device staging when the communicator works on device memory.
void exchange_host(Communicator& world, Device* device, std::vector<SendSpec> sends, std::vector<RecvSpec> recvs) {
  if (world.backend() == Backend::kGloo) {
    world.exchange(sends, recvs);
    return;
  }
  if (device == nullptr) {
    HS_THROW(ConfigError, "batch re-distribution on rank " + std::to_string(world.rank()) + ": the " +
                              std::string(backend_name(world.backend())) +
                              " communicator works on device memory; construct BatchRedistribution with a Device");
  }
  std::int64_t send_bytes = 0;
  std::int64_t recv_bytes = 0;
  for (const SendSpec& send : sends) send_bytes += static_cast<std::int64_t>(send.bytes);
  for (const RecvSpec& recv : recvs) recv_bytes += static_cast<std::int64_t>(recv.bytes);
  const Staging send_staging(*device, send_bytes);
  const Staging recv_staging(*device, recv_bytes);
  std::vector<SendSpec> device_sends = sends;
  std::vector<RecvSpec> device_recvs = recvs;
  std::int64_t offset = 0;
  for (SendSpec& send : device_sends) {
    char* const staged = send_staging.data() + offset;
    if (send.bytes > 0) {
      device->copy(staged, Residency::kGpu, send.data, Residency::kCpu, static_cast<std::int64_t>(send.bytes));
    }
    send.data = staged;
    offset += static_cast<std::int64_t>(send.bytes);
  }
  offset = 0;
  for (RecvSpec& recv : device_recvs) {
    recv.data = recv_staging.data() + offset;
    offset += static_cast<std::int64_t>(recv.bytes);
  }
  device->synchronize();
  world.exchange(device_sends, device_recvs);
  for (std::size_t i = 0; i < recvs.size(); ++i) {
    if (recvs[i].bytes > 0) {
      device->copy(recvs[i].data, Residency::kCpu, device_recvs[i].data, Residency::kGpu,
                   static_cast<std::int64_t>(recvs[i].bytes));
    }
  }
  device->synchronize();
}

void check_batch(const TokenBatch& batch, std::int64_t rows, std::int64_t cols, int rank, const char* what) {
  if (batch.rows != rows || batch.cols != cols || static_cast<std::int64_t>(batch.tokens.size()) != rows * cols) {
    HS_THROW(Error, std::string(what) + " on rank " + std::to_string(rank) + ": expected " + std::to_string(rows) +
                        " x " + std::to_string(cols) + " tokens, got " + std::to_string(batch.rows) + " x " +
                        std::to_string(batch.cols) + " with " + std::to_string(batch.tokens.size()) + " tokens");
  }
}

}  // namespace

BatchRedistribution::BatchRedistribution(TrainLayout train, InferenceLayout inference, Communicator& world)
    : train_(std::move(train)), inference_(std::move(inference)), world_(world) {
  if (train_.world_size() != inference_.world_size || world_.size() != train_.world_size() || inference_.tp <= 0 ||
      inference_.world_size % inference_.tp != 0) {
    HS_THROW(ConfigError, "batch re-distribution: train world " + std::to_string(train_.world_size()) +
                              ", inference world " + std::to_string(inference_.world_size) + " (tp " +
                              std::to_string(inference_.tp) + ") and communicator size " +
                              std::to_string(world_.size()) + " must agree");
  }
}

BatchRedistribution::BatchRedistribution(TrainLayout train, InferenceLayout inference, Communicator& world,
                                         Device& device)
    : BatchRedistribution(std::move(train), std::move(inference), world) {
  device_ = &device;
}

TokenBatch BatchRedistribution::preprocess(const TokenBatch& replica_batch, std::int64_t rows_per_replica,
                                           std::int64_t cols) {
  const int rank = world_.rank();
  if (rows_per_replica < 0 || cols < 0) {
    HS_THROW(Error, "batch preprocess on rank " + std::to_string(rank) + ": negative rows or cols");
  }
  const int world = world_.size();
  const std::int64_t total = train_.dp * rows_per_replica;
  const std::int64_t groups = inference_.dp();
  const std::int64_t row_bytes = cols * kTokenBytes;
  const RowRange mine = group_rows(inference_.coord(rank).dp_rank, groups, total);

  TokenBatch result;
  result.rows = mine.rows();
  result.cols = cols;
  result.tokens.assign(static_cast<std::size_t>(result.rows * cols), 0);

  // Rows come from the source rank (tp rank 0, stage 0) of each replica that holds some of them.
  std::vector<RecvSpec> recvs;
  for (int replica = 0; replica < train_.dp; ++replica) {
    const RowRange part = intersect(mine, {replica * rows_per_replica, (replica + 1) * rows_per_replica});
    if (part.rows() <= 0 || row_bytes == 0) continue;
    recvs.push_back({train_.rank_of({0, replica, 0}), result.tokens.data() + (part.begin - mine.begin) * cols,
                     static_cast<std::size_t>(part.rows() * row_bytes)});
  }
  std::vector<SendSpec> sends;
  const TrainLayout::Coord coord = train_.coord(rank);
  if (coord.tp_rank == 0 && coord.pp_rank == 0) {
    check_batch(replica_batch, rows_per_replica, cols, rank, "batch preprocess (train source rank)");
    const RowRange held{coord.dp_rank * rows_per_replica, (coord.dp_rank + 1) * rows_per_replica};
    for (int peer = 0; peer < world; ++peer) {
      const RowRange part = intersect(held, group_rows(inference_.coord(peer).dp_rank, groups, total));
      if (part.rows() <= 0 || row_bytes == 0) continue;
      sends.push_back({peer, replica_batch.tokens.data() + (part.begin - held.begin) * cols,
                       static_cast<std::size_t>(part.rows() * row_bytes)});
    }
  }
  exchange_host(world_, device_, std::move(sends), std::move(recvs));
  return result;
}

TokenBatch BatchRedistribution::postprocess(const TokenBatch& outputs, std::int64_t rows_per_replica) {
  const int rank = world_.rank();
  const int world = world_.size();
  const std::int64_t total = train_.dp * rows_per_replica;
  const std::int64_t groups = inference_.dp();
  const RowRange mine = group_rows(inference_.coord(rank).dp_rank, groups, total);
  const std::int64_t cols = outputs.cols;
  check_batch(outputs, mine.rows(), cols, rank, "batch postprocess (inference group outputs)");
  const std::int64_t row_bytes = cols * kTokenBytes;

  const int replica = train_.coord(rank).dp_rank;
  const RowRange wanted{replica * rows_per_replica, (replica + 1) * rows_per_replica};
  TokenBatch result;
  result.rows = rows_per_replica;
  result.cols = cols;
  result.tokens.assign(static_cast<std::size_t>(rows_per_replica * cols), 0);

  // Each inference group's tp-rank-0 member sends every rank of a replica the replica's rows it produced.
  std::vector<RecvSpec> recvs;
  for (std::int64_t group = 0; group < groups; ++group) {
    const RowRange part = intersect(wanted, group_rows(group, groups, total));
    if (part.rows() <= 0 || row_bytes == 0) continue;
    recvs.push_back({inference_.rank_of({0, static_cast<int>(group)}),
                     result.tokens.data() + (part.begin - wanted.begin) * cols,
                     static_cast<std::size_t>(part.rows() * row_bytes)});
  }
  std::vector<SendSpec> sends;
  if (inference_.coord(rank).tp_rank == 0) {
    for (int peer = 0; peer < world; ++peer) {
      const int peer_replica = train_.coord(peer).dp_rank;
      const RowRange part = intersect(mine, {peer_replica * rows_per_replica, (peer_replica + 1) * rows_per_replica});
      if (part.rows() <= 0 || row_bytes == 0) continue;
      sends.push_back({peer, outputs.tokens.data() + (part.begin - mine.begin) * cols,
                       static_cast<std::size_t>(part.rows() * row_bytes)});
    }
  }
  exchange_host(world_, device_, std::move(sends), std::move(recvs));
  return result;
}

}  // namespace hybridshard::core
