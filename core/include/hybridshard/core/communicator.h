// One interface over NCCL (GPU), Gloo (CPU) and loopback (one GPU standing in for one rank of a large job).
//
// Every operation blocks until it completes or throws: TimeoutError after timeout() naming the rank, the operation,
// its sequence number and how long it waited; CommError for any other failure. Pointers are device pointers for
// NCCL and loopback, host pointers for Gloo. A communicator is RAII; abort() makes every pending and future
// operation fail at once (used when another rank is known dead).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace hybridshard::core {

class Device;

enum class Backend : std::uint8_t { kGloo, kNccl, kLoopback };
std::string_view backend_name(Backend backend);  // "gloo", "nccl", "loopback"

struct SendSpec {
  int peer = 0;
  const void* data = nullptr;
  std::size_t bytes = 0;
};

struct RecvSpec {
  int peer = 0;
  void* data = nullptr;
  std::size_t bytes = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Backend backend() const = 0;
  virtual std::chrono::milliseconds timeout() const = 0;

  // recv holds size() * bytes_per_rank bytes, rank i's contribution at i * bytes_per_rank.
  virtual void all_gather(const void* send, void* recv, std::size_t bytes_per_rank) = 0;
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void all_reduce_sum(float* data, std::size_t count) = 0;
  // All sends and receives of one round, posted together (an NCCL group; Gloo unbound buffers). A rank may list
  // itself as a peer: the bytes are copied locally.
  virtual void exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) = 0;
  virtual void barrier() = 0;

  // Collective over all ranks of this communicator: every rank passes the same `ranks` list; members get a
  // communicator whose rank i is ranks[i], non-members get nullptr.
  virtual std::unique_ptr<Communicator> subgroup(const std::vector<int>& ranks) = 0;

  virtual void abort() = 0;
};

class Store;

// Gloo over TCP (libtorch's ProcessGroupGloo), rendezvous through `store`. Every rank calls it with the same store
// scope. Throws CommError naming the store's host:port when the rendezvous fails within `timeout`.
std::unique_ptr<Communicator> make_gloo_communicator(Store& store, int rank, int world_size,
                                                     std::chrono::milliseconds timeout);

// NCCL on CUDA device `device_index`; rank 0 publishes the unique id through `store`. Throws Error without CUDA.
// With `stream` (a cudaStream_t, e.g. Device::stream()), operations are queued on it, after the work already there;
// without, on a stream of the communicator's own, after everything queued on the device so far.
std::unique_ptr<Communicator> make_nccl_communicator(Store& store, int rank, int world_size, int device_index,
                                                     std::chrono::milliseconds timeout, void* stream = nullptr);

bool gloo_available();  // built with c10d's ProcessGroupGloo

// Loopback: this process plays rank `rank` of `world_size`, alone on `device`. What peers would send is asked of
// `peer_data` the first time an operation runs (keyed by the operation's sequence number and peer) and kept in
// device memory; later runs of the same sequence (bench iterations) replay it with device-to-device copies of the
// same sizes, standing in for the network. reset_sequence() starts the next iteration's numbering at 0.
// Every operation (all_gather, broadcast, all_reduce_sum, exchange, barrier) takes the next sequence number; subgroups
// share their parent's numbering and name peers to the provider by world rank; all_reduce_sum asks for the reduced
// result with peer -1. The cache and the send scratch are device allocations (counted in bytes_in_use) kept until
// the communicator and all its subgroups are gone.
// Sends are copied into a scratch buffer of the same size (the bytes a NIC would read).
using PeerDataProvider = std::function<void(int peer, std::uint64_t sequence, void* device_dst, std::size_t bytes)>;
class LoopbackCommunicator : public Communicator {
 public:
  virtual void reset_sequence() = 0;
};
std::unique_ptr<LoopbackCommunicator> make_loopback_communicator(int rank, int world_size, Device& device,
                                                                  PeerDataProvider peer_data);

}  // namespace hybridshard::core
