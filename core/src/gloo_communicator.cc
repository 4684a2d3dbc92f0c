// The Gloo communicator: c10d's ProcessGroupGloo on host memory. The only translation unit that sees ATen: buffers
// are wrapped as tensors (bytes as at::kByte, all_reduce as at::kFloat) without copying.
#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "detail/self_transfers.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"

namespace hybridshard::core {
namespace {

using Clock = std::chrono::steady_clock;
using Work = c10::intrusive_ptr<c10d::Work>;

// Collectives are waited for in slices so that abort() from another thread is seen within this time.
constexpr std::chrono::milliseconds kWaitSlice{50};
// Every point-to-point message of exchange() travels on this Gloo slot; messages between one pair are matched in the
// order they are posted, which both sides share.
constexpr std::uint32_t kExchangeTag = 0x4853;

at::Tensor byte_view(const void* data, std::size_t bytes) {
  return at::from_blob(const_cast<void*>(data), {static_cast<std::int64_t>(bytes)},
                       at::TensorOptions().dtype(at::kByte).device(at::kCPU));
}

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// Loopback when every rank is on this host (a file store, or a TCP store on a loopback address), else the interface
// GLOO_SOCKET_IFNAME names or the one the host name resolves to.
std::shared_ptr<::gloo::transport::Device> make_transport_device(const StoreOptions& store) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface != nullptr && *interface != '\0') {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  if (!store.file.empty() || is_loopback_host(store.host)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

class GlooCommunicator final : public Communicator {
 public:
  // `store` is where this group's rendezvous keys live; subgroups rendezvous under `store`'s "subgroups/" scope.
  GlooCommunicator(std::unique_ptr<Store> store, int rank, int size, std::chrono::milliseconds timeout)
      : store_(std::move(store)), rank_(rank), size_(size), timeout_(timeout) {
    if (size <= 0 || rank < 0 || rank >= size) {
      HS_THROW(ConfigError, "gloo: rank " + std::to_string(rank) + " is not in a world of " + std::to_string(size));
    }
    if (timeout.count() <= 0) HS_THROW(ConfigError, "gloo: timeout must be positive");
    subgroup_store_ = store_->scoped("subgroups");
    const auto& native = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store_->native_handle());
    const std::string where = store_->where();
    const auto start = Clock::now();
    try {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(make_transport_device(store_->options()));
      process_group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(native, rank, size, options);
    } catch (const std::exception& e) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      const std::string message = "gloo rank " + std::to_string(rank) + "/" + std::to_string(size) +
                                  ": rendezvous through store " + where + " (prefix '" + store_->options().prefix +
                                  "/') failed after " + std::to_string(waited.count()) + " ms (timeout " +
                                  std::to_string(timeout.count()) + " ms)";
      if (waited + std::chrono::milliseconds(50) >= timeout) {
        throw TimeoutError(message, __FILE__, __LINE__, "c10d::ProcessGroupGloo", e.what());
      }
      throw CommError(message, __FILE__, __LINE__, "c10d::ProcessGroupGloo", e.what());
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Backend backend() const override { return Backend::kGloo; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

  void all_gather(const void* send, void* recv, std::size_t bytes_per_rank) override {
    const Operation op = begin("all_gather", bytes_per_rank);
    if (bytes_per_rank == 0) return;
    std::vector<at::Tensor> inputs{byte_view(send, bytes_per_rank)};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int i = 0; i < size_; ++i) {
      outputs[0].push_back(
          byte_view(static_cast<std::byte*>(recv) + static_cast<std::size_t>(i) * bytes_per_rank, bytes_per_rank));
    }
    run_collective(op, [&] { return process_group_->allgather(outputs, inputs); });
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    const Operation op = begin("broadcast", bytes);
    check_peer(op, root);
    if (bytes == 0) return;
    std::vector<at::Tensor> tensors{byte_view(data, bytes)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    run_collective(op, [&] { return process_group_->broadcast(tensors, options); });
  }

  void all_reduce_sum(float* data, std::size_t count) override {
    const Operation op = begin("all_reduce_sum", count * sizeof(float));
    if (count == 0) return;
    std::vector<at::Tensor> tensors{at::from_blob(data, {static_cast<std::int64_t>(count)},
                                                  at::TensorOptions().dtype(at::kFloat).device(at::kCPU))};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    run_collective(op, [&] { return process_group_->allreduce(tensors, options); });
  }

  void exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) override {
    const Operation op = begin("exchange", detail::exchange_bytes(sends, recvs));
    for (const SendSpec& send : sends) check_peer(op, send.peer);
    for (const RecvSpec& recv : recvs) check_peer(op, recv.peer);
    const detail::SelfTransfers self = detail::self_transfers(rank_, sends, recvs);
    if (!self.problem.empty()) fail<CommError>(op, self.peer, self.problem);

    // Post every receive, then every send (Gloo completes them in the background), then wait for all.
    std::vector<std::pair<Work, int>> works;
    std::vector<at::Tensor> keep_alive;
    try {
      for (const RecvSpec& recv : recvs) {
        if (recv.peer == rank_ || recv.bytes == 0) continue;
        std::vector<at::Tensor> tensors{byte_view(recv.data, recv.bytes)};
        keep_alive.push_back(tensors[0]);
        works.emplace_back(process_group_->recv(tensors, recv.peer, static_cast<int>(kExchangeTag)), recv.peer);
        track(works.back().first);
      }
      for (const SendSpec& send : sends) {
        if (send.peer == rank_ || send.bytes == 0) continue;
        std::vector<at::Tensor> tensors{byte_view(send.data, send.bytes)};
        keep_alive.push_back(tensors[0]);
        works.emplace_back(process_group_->send(tensors, send.peer, static_cast<int>(kExchangeTag)), send.peer);
        track(works.back().first);
      }
    } catch (const CommError&) {
      untrack_all();
      throw;
    } catch (const std::exception& e) {
      untrack_all();
      fail<CommError>(op, -1, "could not post its sends and receives", e.what());
    }

    // Sends to itself are plain copies, in the order listed.
    for (const auto& [send, recv] : self.pairs) {
      if (send->bytes > 0) std::memcpy(recv->data, send->data, send->bytes);
    }

    // Point-to-point works complete only inside wait(), so each is waited for once with what is left of the deadline;
    // abort() wakes them.
    try {
      for (auto& [work, peer] : works) {
        const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(op.deadline - Clock::now());
        if (aborted_) fail<CommError>(op, peer, "aborted");
        if (remaining.count() <= 0) fail<TimeoutError>(op, peer, "timed out");
        bool completed = false;
        try {
          completed = work->wait(remaining);
        } catch (const std::exception& e) {
          if (aborted_) fail<CommError>(op, peer, "aborted", e.what());
          if (Clock::now() + std::chrono::milliseconds(20) >= op.deadline) {
            fail<TimeoutError>(op, peer, "timed out", e.what());
          }
          fail<CommError>(op, peer, "failed", e.what());
        }
        if (!completed) fail<CommError>(op, peer, "aborted");
      }
    } catch (...) {
      untrack_all();
      throw;
    }
    untrack_all();
  }

  void barrier() override {
    const Operation op = begin("barrier", 0);
    run_collective(op, [&] { return process_group_->barrier(); });
  }

  std::unique_ptr<Communicator> subgroup(const std::vector<int>& ranks) override {
    const Operation op = begin("subgroup", 0);
    std::set<int> distinct(ranks.begin(), ranks.end());
    if (ranks.empty() || distinct.size() != ranks.size()) {
      fail<CommError>(op, -1, "subgroup ranks must be distinct and non-empty");
    }
    std::string name = "group" + std::to_string(subgroup_count_++);
    for (int member : ranks) {
      check_peer(op, member);
      name += "." + std::to_string(member);
    }
    const auto found = std::find(ranks.begin(), ranks.end(), rank_);
    if (found == ranks.end()) return nullptr;
    return std::make_unique<GlooCommunicator>(subgroup_store_->scoped(name), static_cast<int>(found - ranks.begin()),
                                              static_cast<int>(ranks.size()), timeout_);
  }

  void abort() override {
    aborted_ = true;
    std::lock_guard<std::mutex> lock(pending_mutex_);
    for (Work& work : pending_) {
      try {
        work->abort();
      } catch (...) {
        // Collectives cannot be aborted inside Gloo; their waits see aborted_ within one slice.
      }
    }
  }

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
    if (aborted_) fail<CommError>(op, -1, "called after abort()");
    return op;
  }

  void check_peer(const Operation& op, int peer) {
    if (peer < 0 || peer >= size_) {
      fail<CommError>(op, peer, "names rank " + std::to_string(peer) + " outside [0, " + std::to_string(size_) + ")");
    }
  }

  template <typename ErrorType>
  [[noreturn]] void fail(const Operation& op, int peer, const std::string& what, const std::string& library = {}) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - op.start);
    std::string message = "gloo rank " + std::to_string(rank_) + "/" + std::to_string(size_) + ": " + op.name + " #" +
                          std::to_string(op.sequence) + " (" + std::to_string(op.bytes) + " bytes";
    if (peer >= 0) message += ", peer " + std::to_string(peer);
    message += ") " + what + " after " + std::to_string(waited.count()) + " ms (timeout " +
               std::to_string(timeout_.count()) + " ms)";
    throw ErrorType(message, __FILE__, __LINE__, std::string("c10d::ProcessGroupGloo::") + op.name, library);
  }

  // Runs one collective and waits for it in slices until it completes, fails, times out or is aborted.
  template <typename Start>
  void run_collective(const Operation& op, Start&& start) {
    Work work;
    try {
      work = start();
    } catch (const std::exception& e) {
      fail<CommError>(op, -1, "could not start", e.what());
    }
    for (;;) {
      if (aborted_) fail<CommError>(op, -1, "aborted");
      const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(op.deadline - Clock::now());
      if (remaining.count() <= 0) fail<TimeoutError>(op, -1, "timed out");
      try {
        work->wait(std::min(remaining, kWaitSlice));
        return;
      } catch (const std::exception& e) {
        // A slice that ran out leaves the work incomplete; a failed collective completes with its error. The work
        // may also complete between the slice running out and this check: then it succeeded.
        if (work->isCompleted()) {
          if (!work->exception()) return;
          if (aborted_) fail<CommError>(op, -1, "aborted", e.what());
          fail<CommError>(op, -1, "failed", e.what());
        }
      }
    }
  }

  void track(const Work& work) {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    pending_.push_back(work);
  }
  void untrack_all() {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    pending_.clear();
  }

  std::unique_ptr<Store> store_;
  std::unique_ptr<Store> subgroup_store_;
  int rank_;
  int size_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> process_group_;
  std::atomic<bool> aborted_{false};
  std::uint64_t sequence_ = 0;
  int subgroup_count_ = 0;
  std::mutex pending_mutex_;
  std::vector<Work> pending_;
};

}  // namespace

bool gloo_available() { return true; }

std::unique_ptr<Communicator> make_gloo_communicator(Store& store, int rank, int world_size,
                                                     std::chrono::milliseconds timeout) {
  // The group keeps its own view of the caller's scope, so it does not depend on `store` outliving it.
  return std::make_unique<GlooCommunicator>(store.scoped("gloo"), rank, world_size, timeout);
}

}  // namespace hybridshard::core
