// Loopback: one device plays one rank of a larger job. What peers would send comes from a PeerDataProvider once and
// is kept in device memory; every later run of the same operation sequence replays it with device-to-device copies of
// the same sizes, and every send is copied into a scratch buffer of the same size, so that the rank-local work and
// the bytes a NIC would move are both there, without a network.
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "detail/self_transfers.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

// Shared by a loopback communicator and every subgroup made from it: one sequence numbering, one cache, one scratch,
// so that the provider sees a single operation order in world ranks.
struct LoopbackState {
  LoopbackState(int world_rank, int world_size, Device& dev, PeerDataProvider provider, PeerBufferSource buffers)
      : rank(world_rank),
        size(world_size),
        device(dev),
        peer_data(std::move(provider)),
        peer_buffer_source(std::move(buffers)) {}
  ~LoopbackState() {
    for (auto& [key, entry] : cache) device.deallocate(Residency::kGpu, entry.data, entry.bytes);
    for (auto& [key, entry] : peer_buffers) device.deallocate(Residency::kGpu, entry.data, entry.bytes);
    if (scratch != nullptr) device.deallocate(Residency::kGpu, scratch, scratch_bytes);
  }
  LoopbackState(const LoopbackState&) = delete;
  LoopbackState& operator=(const LoopbackState&) = delete;

  struct Entry {
    void* data = nullptr;
    std::int64_t bytes = 0;
  };

  int rank;
  int size;
  Device& device;
  PeerDataProvider peer_data;
  PeerBufferSource peer_buffer_source;
  std::mutex mutex;
  std::uint64_t sequence = 0;
  std::atomic<bool> aborted{false};
  std::map<std::pair<std::uint64_t, int>, Entry> cache;  // (sequence, world peer) -> what the peer sent
  void* scratch = nullptr;
  std::int64_t scratch_bytes = 0;
  std::map<std::pair<int, int>, Entry> peer_buffers;  // (world peer, buffer index) -> the peer's shared buffer
  // world peer -> its buffers' sizes, asked of the source once: working out a peer's layout is the stand-in's work,
  // not enter's (Qwen3-30B-A3B's took milliseconds, inside every enter's time)
  std::map<int, std::vector<std::int64_t>> peer_sizes;
};

class Loopback final : public LoopbackCommunicator {
 public:
  // `members[i]` is the world rank of this communicator's rank i.
  Loopback(std::shared_ptr<LoopbackState> state, std::vector<int> members, int rank)
      : state_(std::move(state)), members_(std::move(members)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_.size()); }
  Backend backend() const override { return Backend::kLoopback; }
  std::chrono::milliseconds timeout() const override { return std::chrono::milliseconds(300000); }

  void all_gather(const void* send, void* recv, std::size_t bytes_per_rank) override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    const std::uint64_t sequence = begin("all_gather");
    if (bytes_per_rank == 0) return;
    auto* out = static_cast<std::byte*>(recv);
    send_to_scratch(send, bytes_per_rank);
    for (int i = 0; i < size(); ++i) {
      std::byte* slot = out + static_cast<std::size_t>(i) * bytes_per_rank;
      if (i == rank_) {
        if (slot != send) copy_local(slot, send, bytes_per_rank);
      } else {
        receive(sequence, members_[static_cast<std::size_t>(i)], slot, bytes_per_rank, "all_gather");
      }
    }
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    const std::uint64_t sequence = begin("broadcast");
    check_peer(root, "broadcast");
    if (bytes == 0) return;
    if (root == rank_) {
      send_to_scratch(data, bytes);
    } else {
      receive(sequence, members_[static_cast<std::size_t>(root)], data, bytes, "broadcast");
    }
  }

  // The provider is asked for the reduced result itself, with peer -1: a sum needs every rank's data, which a
  // stand-in for the network cannot compute from this rank's alone.
  void all_reduce_sum(float* data, std::size_t count) override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    const std::uint64_t sequence = begin("all_reduce_sum");
    if (count == 0) return;
    send_to_scratch(data, count * sizeof(float));
    receive(sequence, -1, data, count * sizeof(float), "all_reduce_sum");
  }

  void exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    const std::uint64_t sequence = begin("exchange");
    for (const SendSpec& send : sends) check_peer(send.peer, "exchange");
    for (const RecvSpec& recv : recvs) check_peer(recv.peer, "exchange");
    const detail::SelfTransfers self = detail::self_transfers(rank_, sends, recvs);
    if (!self.problem.empty()) fail("exchange", sequence, self.problem);
    for (const SendSpec& send : sends) {
      if (send.peer != rank_) send_to_scratch(send.data, send.bytes);
    }
    // Several receives from one peer (a message cut into wires) are that peer's one message, in order: the provider
    // is asked for it whole, keyed by (sequence, peer), and it is split over the receives.
    std::map<int, std::vector<std::pair<void*, std::size_t>>> from_peer;
    for (const RecvSpec& recv : recvs) {
      if (recv.peer != rank_) from_peer[recv.peer].emplace_back(recv.data, recv.bytes);
    }
    for (const auto& [peer, parts] : from_peer) {
      receive(sequence, members_[static_cast<std::size_t>(peer)], parts, "exchange");
    }
    for (const auto& [send, recv] : self.pairs) {
      if (send->bytes > 0) copy_local(recv->data, send->data, send->bytes);
    }
  }

  void barrier() override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    begin("barrier");
  }

  // The peers' buffers stand in device memory, made once by the source; reading them is the peer path's traffic.
  PeerMemory share_memory(std::span<void* const> buffers, std::span<const std::int64_t> bytes,
                          std::span<const int> wanted) override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (buffers.size() != bytes.size()) fail("share_memory", state_->sequence, "got buffers and sizes of two lengths");
    PeerMemory memory;
    const auto n = static_cast<std::size_t>(size());
    memory.reads.resize(n);
    memory.read_by.assign(n, false);
    memory.why.resize(n);
    const PeerBufferSource& source = state_->peer_buffer_source;
    if (!source.sizes || !source.fill) {
      for (int peer : wanted) {
        check_peer(peer, "share_memory");
        if (peer != rank_) memory.why[static_cast<std::size_t>(peer)] = "the loopback has no peer buffer source";
      }
      return memory;
    }
    for (std::size_t peer = 0; peer < n; ++peer) memory.read_by[peer] = static_cast<int>(peer) != rank_;
    memory.any_direct = n > 1;
    for (int peer : wanted) {
      check_peer(peer, "share_memory");
      if (peer == rank_) continue;
      const int world_peer = members_[static_cast<std::size_t>(peer)];
      auto known = state_->peer_sizes.find(world_peer);
      if (known == state_->peer_sizes.end())
        known = state_->peer_sizes.emplace(world_peer, source.sizes(world_peer)).first;
      const std::vector<std::int64_t>& sizes = known->second;
      std::vector<const void*>& reads = memory.reads[static_cast<std::size_t>(peer)];
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        const auto key = std::make_pair(world_peer, static_cast<int>(i));
        auto found = state_->peer_buffers.find(key);
        if (found == state_->peer_buffers.end()) {
          LoopbackState::Entry entry;
          entry.bytes = sizes[i];
          entry.data = state_->device.allocate(Residency::kGpu, sizes[i]);
          try {
            source.fill(world_peer, static_cast<int>(i), entry.data, static_cast<std::size_t>(sizes[i]));
          } catch (...) {
            state_->device.deallocate(Residency::kGpu, entry.data, entry.bytes);
            throw;
          }
          found = state_->peer_buffers.emplace(key, entry).first;
        }
        reads.push_back(found->second.data);
      }
    }
    state_->device.synchronize();
    return memory;
  }

  std::unique_ptr<Communicator> subgroup(const std::vector<int>& ranks) override {
    std::set<int> distinct(ranks.begin(), ranks.end());
    if (ranks.empty() || distinct.size() != ranks.size()) {
      HS_THROW(CommError, "loopback rank " + std::to_string(state_->rank) + ": subgroup ranks must be distinct");
    }
    std::vector<int> members;
    int my_index = -1;
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      check_peer(ranks[i], "subgroup");
      members.push_back(members_[static_cast<std::size_t>(ranks[i])]);
      if (ranks[i] == rank_) my_index = static_cast<int>(i);
    }
    if (my_index < 0) return nullptr;
    return std::make_unique<Loopback>(state_, std::move(members), my_index);
  }

  void abort() override { state_->aborted = true; }

  void reset_sequence() override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->sequence = 0;
  }

 private:
  std::uint64_t begin(const char* operation) {
    const std::uint64_t sequence = state_->sequence++;
    if (state_->aborted) fail(operation, sequence, "called after abort()");
    return sequence;
  }

  [[noreturn]] void fail(const char* operation, std::uint64_t sequence, const std::string& what) const {
    throw CommError("loopback rank " + std::to_string(members_[static_cast<std::size_t>(rank_)]) + "/" +
                        std::to_string(state_->size) + ": " + operation + " #" + std::to_string(sequence) + " " + what,
                    __FILE__, __LINE__, std::string("LoopbackCommunicator::") + operation);
  }

  void check_peer(int peer, const char* operation) const {
    if (peer < 0 || peer >= size()) {
      fail(operation, state_->sequence,
           "names rank " + std::to_string(peer) + " outside [0, " + std::to_string(size()) + ")");
    }
  }

  void copy_local(void* dst, const void* src, std::size_t bytes) {
    state_->device.copy(dst, Residency::kGpu, src, Residency::kGpu, static_cast<std::int64_t>(bytes));
  }

  // The bytes a NIC would read: copied into scratch of the same size.
  void send_to_scratch(const void* data, std::size_t bytes) {
    if (bytes == 0) return;
    const auto size_bytes = static_cast<std::int64_t>(bytes);
    if (size_bytes > state_->scratch_bytes) {
      if (state_->scratch != nullptr) {
        state_->device.synchronize();  // earlier copies into it may still be in flight
        state_->device.deallocate(Residency::kGpu, state_->scratch, state_->scratch_bytes);
        state_->scratch = nullptr;
        state_->scratch_bytes = 0;
      }
      state_->scratch = state_->device.allocate(Residency::kGpu, size_bytes);
      state_->scratch_bytes = size_bytes;
    }
    copy_local(state_->scratch, data, bytes);
  }

  // First run: asks the provider into a cached device buffer; every run then copies the cache into place.
  void receive(std::uint64_t sequence, int world_peer, void* dst, std::size_t bytes, const char* operation) {
    receive(sequence, world_peer, {{dst, bytes}}, operation);
  }

  // The same for one message received in parts: the cache holds it whole, each part gets its slice in order.
  void receive(std::uint64_t sequence, int world_peer, const std::vector<std::pair<void*, std::size_t>>& parts,
               const char* operation) {
    std::size_t bytes = 0;
    for (const auto& part : parts) bytes += part.second;
    if (bytes == 0) return;
    const auto size_bytes = static_cast<std::int64_t>(bytes);
    const auto key = std::make_pair(sequence, world_peer);
    auto found = state_->cache.find(key);
    if (found == state_->cache.end()) {
      LoopbackState::Entry entry;
      entry.data = state_->device.allocate(Residency::kGpu, size_bytes);
      entry.bytes = size_bytes;
      try {
        state_->peer_data(world_peer, sequence, entry.data, bytes);
      } catch (...) {
        state_->device.deallocate(Residency::kGpu, entry.data, entry.bytes);
        throw;
      }
      found = state_->cache.emplace(key, entry).first;
    } else if (found->second.bytes != size_bytes) {
      fail(operation, sequence,
           "from world rank " + std::to_string(world_peer) + " wants " + std::to_string(bytes) +
               " bytes but its first run had " + std::to_string(found->second.bytes) +
               " (operation order changed without reset_sequence()?)");
    }
    std::size_t offset = 0;
    for (const auto& [dst, part_bytes] : parts) {
      if (part_bytes > 0) copy_local(dst, static_cast<const char*>(found->second.data) + offset, part_bytes);
      offset += part_bytes;
    }
  }

  std::shared_ptr<LoopbackState> state_;
  std::vector<int> members_;
  int rank_;
};

}  // namespace

std::unique_ptr<LoopbackCommunicator> make_loopback_communicator(int rank, int world_size, Device& device,
                                                                 PeerDataProvider peer_data,
                                                                 PeerBufferSource peer_buffers) {
  if (world_size <= 0 || rank < 0 || rank >= world_size) {
    HS_THROW(ConfigError,
             "loopback: rank " + std::to_string(rank) + " is not in a world of " + std::to_string(world_size));
  }
  if (!peer_data) HS_THROW(ConfigError, "loopback: a peer data provider is required");
  std::vector<int> members(static_cast<std::size_t>(world_size));
  for (int i = 0; i < world_size; ++i) members[static_cast<std::size_t>(i)] = i;
  auto state = std::make_shared<LoopbackState>(rank, world_size, device, std::move(peer_data), std::move(peer_buffers));
  return std::make_unique<Loopback>(std::move(state), std::move(members), rank);
}

}  // namespace hybridshard::core
