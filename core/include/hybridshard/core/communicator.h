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

// The peer path: which ranks' memory this rank's device reads directly (load/store and copy engines over NVLink or
// PCIe), found by Communicator::share_memory.
struct PeerMemory {
  // reads[p]: rank p's shared buffers as this rank's device addresses them, in the order p passed them; empty when
  // this rank does not read p directly (itself, a peer not asked for, another host, no peer access, a failed
  // registration on either side).
  std::vector<std::vector<const void*>> reads;
  // read_by[p]: rank p reads this rank's buffers directly (so this rank sends p nothing).
  std::vector<bool> read_by;
  // why[p]: for a peer asked for but not read directly, the reason (for the fallback's log line and event).
  std::vector<std::string> why;
  // Some pair of ranks of the communicator reads directly (the same on every rank).
  bool any_direct = false;
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
  // A barrier for a caller that has finished its device work (it synchronized its device): returns on each rank only
  // after every rank has called it, and orders no device work. NCCL, once share_memory found every rank on one host:
  // through shared host memory, in microseconds instead of a collective; otherwise (this default) barrier().
  virtual void host_barrier() { barrier(); }

  // Queued rounds: queue_exchange posts one round as exchange() does and, where the backend can (NCCL: the group on
  // the communicator's stream), returns without waiting for it. The round starts after the work queued so far on
  // the stream `after`, and work queued later on the stream `then` waits for it (cudaStream_t values, e.g.
  // Device::stream() and Device::aside_stream(); null: no such order). The caller keeps every buffer of every queued
  // round alive and unchanged until finish_queued(), which waits for all of them (the deadline, abort() and the
  // library's errors watched as in exchange(); each round has the timeout from when the one before it ended) and
  // returns each round's seconds in queue order (NCCL: device time between CUDA events around the round).
  // queues_exchanges() says whether queue_exchange returns early. When it does not (this default: exchange() at
  // once, timed on the host), the caller must have finished the device work the round reads before calling it.
  virtual bool queues_exchanges() const { return false; }
  virtual void queue_exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs, void* after,
                              void* then);
  virtual std::vector<double> finish_queued();

  // Collective: every rank passes its own buffers (device memory, `bytes[i]` bytes at `buffers[i]`, anywhere inside a
  // cudaMalloc allocation) and the peers whose buffers it wants to read. Returns what this rank reads directly and
  // who reads it. Registration (peer access, IPC handles) happens once per buffer and stays until the
  // communicator is destroyed; the pointers stay valid until then, as long as the owners keep the buffers. The
  // exchange of addresses also lines the ranks up: it returns on each rank only after every rank has called it.
  // (NCCL with every rank on one host: after the first call, a call whose buffers are every rank's last ones is a
  // meeting in shared host memory, not a collective.)
  // This base version reads nothing directly (Gloo: no device memory to share).
  virtual PeerMemory share_memory(std::span<void* const> buffers, std::span<const std::int64_t> bytes,
                                  std::span<const int> wanted);

  // Collective over all ranks of this communicator: every rank passes the same `ranks` list; members get a
  // communicator whose rank i is ranks[i], non-members get nullptr.
  virtual std::unique_ptr<Communicator> subgroup(const std::vector<int>& ranks) = 0;

  virtual void abort() = 0;

 protected:
  std::vector<double> queued_seconds_;  // the default queue_exchange's rounds, timed on the host
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
// Sends are copied into a scratch buffer of the same size (the bytes a NIC would read). Several receives from one peer
// in one exchange are that peer's one message, received in parts in order (the provider is asked for it whole).
using PeerDataProvider = std::function<void(int peer, std::uint64_t sequence, void* device_dst, std::size_t bytes)>;
// The loopback's peer path: what the peers' shared buffers hold. `sizes(peer)` gives peer's buffer sizes and
// `fill(peer, i, dst, bytes)` writes its buffer i into device memory. share_memory() allocates the wanted peers'
// buffers in device memory once (counted in bytes_in_use, kept like the cache), fills them, and reads them directly;
// every peer is taken to read this rank directly too. Without a source no peer is read directly.
struct PeerBufferSource {
  std::function<std::vector<std::int64_t>(int peer)> sizes;
  std::function<void(int peer, int buffer, void* device_dst, std::size_t bytes)> fill;
};
class LoopbackCommunicator : public Communicator {
 public:
  virtual void reset_sequence() = 0;
};
std::unique_ptr<LoopbackCommunicator> make_loopback_communicator(int rank, int world_size, Device& device,
                                                                 PeerDataProvider peer_data,
                                                                 PeerBufferSource peer_buffers = {});

}  // namespace hybridshard::core
