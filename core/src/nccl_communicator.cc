// The NCCL communicator. Communicators are non-blocking (ncclConfig_t::blocking = 0) so that no NCCL call can block
// past the timeout: every wait polls ncclCommGetAsyncError and a CUDA event, and a deadline, an error or abort()
// ends in ncclCommAbort and an exception naming the rank, the operation and its sequence number.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "detail/cuda_check.h"
#include "detail/peer_links.h"
#include "detail/polling.h"
#include "detail/self_transfers.h"
#include "detail/shared_records.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"

namespace hybridshard::core {
namespace {

using Clock = std::chrono::steady_clock;

// Ranks of one process (threads, as in the bench and the tests) leave a communicator's teardown together. NCCL lets
// the last local rank to destroy a communicator free every local rank's resources, on every local GPU, and cudaFree
// waits for that GPU: a rank that had already gone on to queue work for a peer still tearing down would deadlock
// with it (seen on 2 H100s: a world all-gather after the seed's groups were destroyed). Each local member joins a
// communicator's key before it exists and waits, after destroying it, until every local member has (bounded).
class LocalTeardown {
 public:
  static LocalTeardown& instance() {
    static LocalTeardown teardown;
    return teardown;
  }

  void join(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++members_[key].joined;
  }

  // After this rank destroyed (or aborted) the communicator of `key`: waits until every local member has, or until
  // `deadline`.
  void leave_together(const std::string& key, Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    Members& members = members_[key];
    ++members.left;
    changed_.notify_all();
    changed_.wait_until(lock, deadline, [&] { return members.left >= members.joined; });
    if (++members.released == members.joined) members_.erase(key);  // the last one out forgets the key
  }

 private:
  struct Members {
    int joined = 0;
    int left = 0;
    int released = 0;
  };
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Members> members_;
};

// NCCL's state shared by a communicator and the subgroups split from it: the device, the stream, whether the stream
// is the caller's.
struct NcclContext {
  int device_index = 0;
  cudaStream_t stream = nullptr;
  bool owns_stream = false;
  ~NcclContext() {
    if (owns_stream && stream != nullptr) {
      cudaSetDevice(device_index);
      cudaStreamDestroy(stream);
    }
  }
};

class NcclCommunicator final : public Communicator {
 public:
  // `key`: the same on every member, joined in LocalTeardown before the communicator was made.
  NcclCommunicator(std::shared_ptr<NcclContext> context, ncclComm_t comm, int rank, int size,
                   std::chrono::milliseconds timeout, std::string key)
      : context_(std::move(context)),
        comm_(comm),
        rank_(rank),
        size_(size),
        timeout_(timeout),
        key_(std::move(key)),
        links_(context_->device_index),
        records_(rank, size) {
    HS_CUDA_CHECK(cudaSetDevice(context_->device_index));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    HS_CUDA_CHECK(cudaEventCreateWithFlags(&after_, cudaEventDisableTiming));
    HS_CUDA_CHECK(cudaMalloc(&barrier_scratch_, sizeof(float)));
    HS_CUDA_CHECK(cudaMemsetAsync(barrier_scratch_, 0, sizeof(float), context_->stream));
  }

  ~NcclCommunicator() override {
    cudaSetDevice(context_->device_index);
    if (comm_ != nullptr) {
      if (broken_) {
        ncclCommAbort(comm_);
      } else {
        // Finalize flushes outstanding work; bounded by the timeout, else abort.
        bool finalized = ncclCommFinalize(comm_) != ncclSuccess ? false : true;
        const auto deadline = Clock::now() + timeout_;
        ncclResult_t state = ncclInProgress;
        while (finalized && Clock::now() < deadline) {
          if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || state != ncclInProgress) break;
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        if (!finalized || state != ncclSuccess) {
          ncclCommAbort(comm_);
        } else {
          ncclCommDestroy(comm_);
        }
      }
    }
    LocalTeardown::instance().leave_together(key_, Clock::now() + timeout_);
    if (barrier_scratch_ != nullptr) cudaFree(barrier_scratch_);
    if (share_scratch_ != nullptr) cudaFree(share_scratch_);
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (after_ != nullptr) cudaEventDestroy(after_);
    for (cudaEvent_t event : timing_events_) cudaEventDestroy(event);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Backend backend() const override { return Backend::kNccl; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

  void all_gather(const void* send, void* recv, std::size_t bytes_per_rank) override {
    const Operation op = begin("all_gather", bytes_per_rank);
    if (bytes_per_rank == 0) return;
    enqueue(op, [&] { return ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm_, context_->stream); });
    finish(op);
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    const Operation op = begin("broadcast", bytes);
    check_peer(op, root);
    if (bytes == 0) return;
    enqueue(op, [&] { return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, context_->stream); });
    finish(op);
  }

  void all_reduce_sum(float* data, std::size_t count) override {
    const Operation op = begin("all_reduce_sum", count * sizeof(float));
    if (count == 0) return;
    enqueue(op, [&] { return ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, context_->stream); });
    finish(op);
  }

  void exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) override {
    const Operation op = begin("exchange", detail::exchange_bytes(sends, recvs));
    post_exchange(op, sends, recvs);
    finish(op);
  }

  bool queues_exchanges() const override { return true; }

  // The round goes on the communicator's stream between two timing events, after `after`'s work so far; `then`
  // waits for the second event.
  void queue_exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs, void* after,
                      void* then) override {
    const Operation op = begin("exchange", detail::exchange_bytes(sends, recvs));
    QueuedRound round{op, take_timing_event(), take_timing_event()};
    queued_.push_back(round);
    if (after != nullptr) {
      HS_CUDA_CHECK(cudaEventRecord(after_, static_cast<cudaStream_t>(after)));
      HS_CUDA_CHECK(cudaStreamWaitEvent(context_->stream, after_, 0));
    }
    HS_CUDA_CHECK(cudaEventRecord(round.start, context_->stream));
    post_exchange(op, sends, recvs);
    HS_CUDA_CHECK(cudaEventRecord(round.end, context_->stream));
    if (then != nullptr) HS_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(then), round.end, 0));
  }

  std::vector<double> finish_queued() override {
    std::vector<QueuedRound> rounds = std::exchange(queued_, {});
    // The events go back to the pool whether the rounds ended or failed (a failure aborts the communicator).
    struct GiveBack {
      std::vector<QueuedRound>& rounds;
      std::vector<cudaEvent_t>& pool;
      ~GiveBack() {
        for (const QueuedRound& round : rounds) {
          pool.push_back(round.start);
          pool.push_back(round.end);
        }
      }
    } give_back{rounds, timing_pool_};
    std::vector<double> seconds;
    Clock::time_point ready = rounds.empty() ? Clock::now() : rounds.front().op.start;
    for (QueuedRound& round : rounds) {
      round.op.deadline = std::max(ready, round.op.start) + timeout_;
      wait_for(round.op, round.end);
      ready = Clock::now();
      float milliseconds = 0;
      HS_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, round.start, round.end));
      seconds.push_back(static_cast<double>(milliseconds) / 1e3);
    }
    return seconds;
  }

  void barrier() override {
    const Operation op = begin("barrier", 0);
    auto* scratch = static_cast<float*>(barrier_scratch_);
    enqueue(op, [&] { return ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, comm_, context_->stream); });
    finish(op);
  }

  // A meeting in shared host memory once share_memory found every rank on one host (the peer path's closing
  // barrier: the caller synchronized its device); a collective otherwise.
  void host_barrier() override {
    if (records_.meeting_ready()) {
      meet(records_.meeting(), "host_barrier", 0);
      return;
    }
    barrier();
  }

  // The records (pointers, IPC handles, host, process, device, the peers a rank wants) go through
  // detail::SharedRecords: NCCL all-gathers, or a meeting in shared host memory when every rank is on one host.
  PeerMemory share_memory(std::span<void* const> buffers, std::span<const std::int64_t> bytes,
                          std::span<const int> wanted) override {
    detail::PeerRecord mine = links_.describe(buffers, bytes);
    mine.wanted = detail::wanted_key(wanted);
    PeerMemory memory = records_.share(
        mine, wanted, [this](const void* data, std::size_t size) { return gather_bytes(data, size); },
        [this](const detail::PeerRecord& self, const detail::PeerRecord& peer, std::string& why) {
          return links_.open(self, peer, why);
        },
        [this](detail::HostMeeting& meeting, std::uint64_t flags) { return meet(meeting, "share_memory", flags); });
    if (!records_.refusal().empty() && !refusal_said_) {
      refusal_said_ = true;
      std::cerr << "hybridshard: nccl rank " << rank_ << "/" << size_ << ": the peer path lines up through NCCL "
                << "collectives, not in shared host memory: " << records_.refusal() << '\n';
    }
    return memory;
  }

  std::unique_ptr<Communicator> subgroup(const std::vector<int>& ranks) override {
    const Operation op = begin("subgroup", 0);
    std::set<int> distinct(ranks.begin(), ranks.end());
    if (ranks.empty() || distinct.size() != ranks.size()) {
      fail<CommError>(op, -1, "subgroup ranks must be distinct and non-empty", {}, false);
    }
    for (int member : ranks) check_peer(op, member);
    const auto found = std::find(ranks.begin(), ranks.end(), rank_);
    const bool member = found != ranks.end();
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t split = nullptr;
    // Every member issues its splits in the same order: the parent's key and this operation's number name it.
    const std::string split_key = key_ + "/" + std::to_string(op.sequence);
    if (member) LocalTeardown::instance().join(split_key);
    try {
      enqueue(op, [&] {
        return ncclCommSplit(comm_, member ? 0 : NCCL_SPLIT_NOCOLOR,
                             member ? static_cast<int>(found - ranks.begin()) : 0, &split, &config);
      });
      if (!member) return nullptr;
      if (split == nullptr) fail<CommError>(op, -1, "ncclCommSplit gave no communicator to a member");
      wait_ready(op, split);
    } catch (...) {
      if (member) LocalTeardown::instance().leave_together(split_key, Clock::now());  // no wait: it never existed
      throw;
    }
    return std::make_unique<NcclCommunicator>(context_, split, static_cast<int>(found - ranks.begin()),
                                              static_cast<int>(ranks.size()), timeout_, split_key);
  }

  void abort() override { aborted_ = true; }

 private:
  struct Operation {
    const char* name;
    std::uint64_t sequence;
    std::size_t bytes;
    Clock::time_point start;
    Clock::time_point deadline;
  };

  Operation begin(const char* name, std::size_t bytes) {
    Operation op{name, sequence_++, bytes, Clock::now(), Clock::now() + timeout_};
    if (aborted_ || broken_)
      fail<CommError>(op, -1, broken_ ? "called on a broken communicator" : "called after abort()");
    HS_CUDA_CHECK(cudaSetDevice(context_->device_index));
    return op;
  }

  // Queues one round on the communicator's stream (copies to itself, then one NCCL group); waits only until NCCL has
  // taken the group.
  void post_exchange(const Operation& op, std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) {
    for (const SendSpec& send : sends) check_peer(op, send.peer);
    for (const RecvSpec& recv : recvs) check_peer(op, recv.peer);
    const detail::SelfTransfers self = detail::self_transfers(rank_, sends, recvs);
    if (!self.problem.empty()) fail<CommError>(op, self.peer, self.problem, {}, false);
    for (const auto& [send, recv] : self.pairs) {
      if (send->bytes > 0) {
        HS_CUDA_CHECK(cudaMemcpyAsync(recv->data, send->data, send->bytes, cudaMemcpyDeviceToDevice, context_->stream));
      }
    }
    bool any = false;
    for (const SendSpec& send : sends) any = any || (send.peer != rank_ && send.bytes > 0);
    for (const RecvSpec& recv : recvs) any = any || (recv.peer != rank_ && recv.bytes > 0);
    if (any) {
      // One group: NCCL posts every send and receive together, so no ordering between pairs can deadlock.
      enqueue(op, [&] {
        ncclResult_t result = ncclGroupStart();
        if (result != ncclSuccess) return result;
        for (const RecvSpec& recv : recvs) {
          if (recv.peer == rank_ || recv.bytes == 0) continue;
          result = ncclRecv(recv.data, recv.bytes, ncclUint8, recv.peer, comm_, context_->stream);
          if (result != ncclSuccess && result != ncclInProgress) break;
        }
        for (const SendSpec& send : sends) {
          if (result != ncclSuccess && result != ncclInProgress) break;
          if (send.peer == rank_ || send.bytes == 0) continue;
          result = ncclSend(send.data, send.bytes, ncclUint8, send.peer, comm_, context_->stream);
        }
        const ncclResult_t end = ncclGroupEnd();
        return result != ncclSuccess && result != ncclInProgress ? result : end;
      });
    }
  }

  cudaEvent_t take_timing_event() {
    if (!timing_pool_.empty()) {
      const cudaEvent_t event = timing_pool_.back();
      timing_pool_.pop_back();
      return event;
    }
    cudaEvent_t event = nullptr;
    HS_CUDA_CHECK(cudaEventCreate(&event));
    timing_events_.push_back(event);
    return event;
  }

  void check_peer(const Operation& op, int peer) {
    if (peer < 0 || peer >= size_) {
      fail<CommError>(op, peer, "names rank " + std::to_string(peer) + " outside [0, " + std::to_string(size_) + ")",
                      {}, false);
    }
  }

  // Aborts the communicator (unless the failure left it usable) and throws.
  template <typename ErrorType>
  [[noreturn]] void fail(const Operation& op, int peer, const std::string& what, const std::string& library = {},
                         bool breaks = true) {
    if (breaks && !broken_ && comm_ != nullptr) {
      broken_ = true;
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    // The others' meetings end at once instead of at their timeout.
    if (breaks && records_.meeting_ready()) records_.meeting().abandon(rank_);
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - op.start);
    std::string message = "nccl rank " + std::to_string(rank_) + "/" + std::to_string(size_) + " (process rank " +
                          std::to_string(error_rank()) + ", cuda:" + std::to_string(context_->device_index) +
                          "): " + op.name + " #" + std::to_string(op.sequence) + " (" + std::to_string(op.bytes) +
                          " bytes";
    if (peer >= 0) message += ", peer " + std::to_string(peer);
    message += ") " + what + " after " + std::to_string(waited.count()) + " ms (timeout " +
               std::to_string(timeout_.count()) + " ms)";
    throw ErrorType(message, __FILE__, __LINE__, std::string("nccl ") + op.name, library);
  }

  // Issues NCCL calls, then waits until NCCL has queued them (non-blocking communicators may return ncclInProgress).
  template <typename Issue>
  void enqueue(const Operation& op, Issue&& issue) {
    const ncclResult_t result = issue();
    if (result != ncclSuccess && result != ncclInProgress) {
      fail<CommError>(op, -1, "failed to start", ncclGetErrorString(result));
    }
    wait_ready(op, comm_);
  }

  void wait_ready(const Operation& op, ncclComm_t comm) {
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
      if (query != ncclSuccess) fail<CommError>(op, -1, "could not query its state", ncclGetErrorString(query));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail<CommError>(op, -1, "failed", ncclGetErrorString(state));
      poll_deadline(op);
    }
  }

  void poll_deadline(const Operation& op) {
    if (aborted_) fail<CommError>(op, -1, "aborted");
    const Clock::time_point now = Clock::now();
    if (now >= op.deadline) fail<TimeoutError>(op, -1, "timed out");
    // The first 200 us of an operation only yield: a small collective (the barrier, share_memory's all-gathers) is
    // done in 80-200 us on 2 x H200 (most of it NCCL's own enqueue).
    detail::pause_between_checks(now, op.start, std::chrono::microseconds(200));
  }

  // This rank's next meeting; returns every rank's flags OR-ed. A rank that does not come within the timeout, one
  // that gave up, or abort() end it with the communicator's usual error.
  std::uint64_t meet(detail::HostMeeting& meeting, const char* name, std::uint64_t flags) {
    const Operation op = begin(name, 0);
    const detail::HostMeeting::Outcome outcome =
        meeting.meet(rank_, flags, op.deadline, [this] { return aborted_.load(); });
    using State = detail::HostMeeting::Outcome::State;
    switch (outcome.state) {
      case State::kMet:
        break;
      case State::kTimedOut: {
        std::string missing;
        for (int other : outcome.missing) missing += (missing.empty() ? "" : ", ") + std::to_string(other);
        fail<TimeoutError>(op, outcome.missing.empty() ? -1 : outcome.missing.front(),
                           "timed out in the host meeting waiting for rank(s) " + missing);
      }
      case State::kAbandoned:
        fail<CommError>(
            op, outcome.abandoned_by,
            "ended: rank " + std::to_string(outcome.abandoned_by) + " gave up (an operation of its failed)");
      case State::kAborted:
        fail<CommError>(op, -1, "aborted");
    }
    return outcome.flags;
  }

  // All-gathers `bytes` host bytes of every rank through device scratch (kept for the next call).
  std::vector<std::uint8_t> gather_bytes(const void* mine, std::size_t bytes) {
    const std::size_t needed = bytes * static_cast<std::size_t>(size_ + 1);
    HS_CUDA_CHECK(cudaSetDevice(context_->device_index));
    if (needed > share_scratch_bytes_) {
      if (share_scratch_ != nullptr) {
        HS_CUDA_CHECK(cudaStreamSynchronize(context_->stream));
        HS_CUDA_CHECK(cudaFree(share_scratch_));
        share_scratch_ = nullptr;
      }
      HS_CUDA_CHECK(cudaMalloc(&share_scratch_, needed));
      share_scratch_bytes_ = needed;
    }
    auto* scratch = static_cast<std::uint8_t*>(share_scratch_);
    HS_CUDA_CHECK(cudaMemcpyAsync(scratch, mine, bytes, cudaMemcpyHostToDevice, context_->stream));
    all_gather(scratch, scratch + bytes, bytes);
    std::vector<std::uint8_t> all(bytes * static_cast<std::size_t>(size_));
    HS_CUDA_CHECK(cudaMemcpyAsync(all.data(), scratch + bytes, all.size(), cudaMemcpyDeviceToHost, context_->stream));
    HS_CUDA_CHECK(cudaStreamSynchronize(context_->stream));
    return all;
  }

  // Waits until everything queued for `op` ran on the GPU, watching NCCL's error state, the deadline and abort().
  void finish(const Operation& op) {
    HS_CUDA_CHECK(cudaEventRecord(done_, context_->stream));
    wait_for(op, done_);
  }

  // Waits until `event` (recorded on the communicator's stream) has happened, watching the same.
  void wait_for(const Operation& op, cudaEvent_t event) {
    for (;;) {
      const cudaError_t status = cudaEventQuery(event);
      if (status == cudaSuccess) return;
      if (status != cudaErrorNotReady) {
        fail<CommError>(op, -1, "failed on the GPU", cudaGetErrorString(status));
      }
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess && state != ncclInProgress) {
        fail<CommError>(op, -1, "failed", ncclGetErrorString(state));
      }
      poll_deadline(op);
    }
  }

  std::shared_ptr<NcclContext> context_;
  ncclComm_t comm_;
  int rank_;
  int size_;
  std::chrono::milliseconds timeout_;
  // One round posted by queue_exchange and not yet waited for: timing events around it on the stream.
  struct QueuedRound {
    Operation op;
    cudaEvent_t start;
    cudaEvent_t end;
  };

  cudaEvent_t done_ = nullptr;
  cudaEvent_t after_ = nullptr;             // marks the caller's stream for a queued round to wait on
  std::vector<QueuedRound> queued_;         // since the last finish_queued(), in order
  std::vector<cudaEvent_t> timing_events_;  // every timing event made (destroyed with the communicator)
  std::vector<cudaEvent_t> timing_pool_;    // the ones free now
  void* barrier_scratch_ = nullptr;
  void* share_scratch_ = nullptr;
  std::size_t share_scratch_bytes_ = 0;
  std::string key_;
  detail::PeerLinks links_;
  detail::SharedRecords<detail::PeerRecord> records_;  // share_memory's protocol
  bool refusal_said_ = false;                          // its refusal() went to the log
  std::atomic<bool> aborted_{false};
  bool broken_ = false;
  std::uint64_t sequence_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Store& store, int rank, int world_size, int device_index,
                                                     std::chrono::milliseconds timeout, void* stream) {
  if (world_size <= 0 || rank < 0 || rank >= world_size) {
    HS_THROW(ConfigError, "nccl: rank " + std::to_string(rank) + " is not in a world of " + std::to_string(world_size));
  }
  // NVLink SHARP multicast needs resources several jobs on one host cannot share (GPU.md): off unless asked for.
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  HS_CUDA_CHECK(cudaSetDevice(device_index));

  auto context = std::make_shared<NcclContext>();
  context->device_index = device_index;
  if (stream != nullptr) {
    context->stream = static_cast<cudaStream_t>(stream);
  } else {
    // Own stream: first wait for everything already queued on the device (see communicator.h).
    HS_CUDA_CHECK(cudaDeviceSynchronize());
    HS_CUDA_CHECK(cudaStreamCreateWithFlags(&context->stream, cudaStreamNonBlocking));
    context->owns_stream = true;
  }

  // Rank 0 makes the unique id and publishes it; the others read it, within the store's timeout.
  auto scope = store.scoped("nccl");
  ncclUniqueId id;
  if (rank == 0) {
    HS_NCCL_CHECK(ncclGetUniqueId(&id));
    scope->set("unique_id", std::string(reinterpret_cast<const char*>(&id), sizeof id));
  } else {
    const std::string value = scope->get("unique_id");
    if (value.size() != sizeof id) {
      HS_THROW(CommError, "nccl rank " + std::to_string(rank) + ": the unique id in the store has " +
                              std::to_string(value.size()) + " bytes, expected " + std::to_string(sizeof id));
    }
    std::memcpy(&id, value.data(), sizeof id);
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  std::string key = "world:";
  for (std::size_t i = 0; i < sizeof id; ++i) {
    static const char* hex = "0123456789abcdef";
    const auto byte = static_cast<unsigned char>(id.internal[i]);
    key += hex[byte >> 4];
    key += hex[byte & 15];
  }
  LocalTeardown::instance().join(key);
  const auto never_made = [&key] { LocalTeardown::instance().leave_together(key, Clock::now()); };
  const ncclResult_t started = ncclCommInitRankConfig(&comm, world_size, id, rank, &config);
  if (started != ncclSuccess && started != ncclInProgress) {
    never_made();
    HS_NCCL_CHECK(started);
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
    if (query != ncclSuccess) state = query;
    if (state == ncclSuccess) break;
    if (state != ncclInProgress || Clock::now() >= deadline) {
      ncclCommAbort(comm);
      never_made();
      const std::string message =
          "nccl rank " + std::to_string(rank) + "/" + std::to_string(world_size) +
          " (cuda:" + std::to_string(device_index) + "): ncclCommInitRank " +
          (state == ncclInProgress ? "timed out after " + std::to_string(timeout.count()) + " ms"
                                   : std::string("failed: ") + ncclGetErrorString(state));
      if (state == ncclInProgress) throw TimeoutError(message, __FILE__, __LINE__, "ncclCommInitRankConfig");
      throw CommError(message, __FILE__, __LINE__, "ncclCommInitRankConfig", ncclGetErrorString(state));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return std::make_unique<NcclCommunicator>(std::move(context), comm, rank, world_size, timeout, key);
}

}  // namespace hybridshard::core
