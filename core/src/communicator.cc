#include "hybridshard/core/communicator.h"

#include <chrono>
#include <string>
#include <utility>

namespace hybridshard::core {

std::string_view backend_name(Backend backend) {
  switch (backend) {
    case Backend::kGloo:
      return "gloo";
    case Backend::kNccl:
      return "nccl";
    case Backend::kLoopback:
      return "loopback";
  }
  return "unknown";
}

// Every rank of a communicator of this backend answers the same without talking to the others.
PeerMemory Communicator::share_memory(std::span<void* const> /*buffers*/, std::span<const std::int64_t> /*bytes*/,
                                      std::span<const int> wanted) {
  PeerMemory memory;
  const auto n = static_cast<std::size_t>(size());
  memory.reads.resize(n);
  memory.read_by.assign(n, false);
  memory.why.resize(n);
  for (int peer : wanted) {
    if (peer >= 0 && static_cast<std::size_t>(peer) < n && peer != rank()) {
      memory.why[static_cast<std::size_t>(peer)] =
          "the " + std::string(backend_name(backend())) + " communicator shares no device memory";
    }
  }
  return memory;
}

void Communicator::queue_exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs, void* /*after*/,
                                  void* /*then*/) {
  const auto start = std::chrono::steady_clock::now();
  exchange(sends, recvs);
  queued_seconds_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

std::vector<double> Communicator::finish_queued() { return std::exchange(queued_seconds_, {}); }

}  // namespace hybridshard::core
