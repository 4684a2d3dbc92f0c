// What one rank lists to itself in an exchange: sends and receives paired in order and copied locally, never sent.
// Shared by the communicators (NCCL, Gloo, loopback), so that all of them check and word it alike.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/communicator.h"

namespace hybridshard::core::detail {

struct SelfTransfers {
  std::vector<std::pair<const SendSpec*, const RecvSpec*>> pairs;  // (send, receive), in the order listed
  std::string problem;  // non-empty when the lists do not pair up: what the error says
  int peer = -1;        // the peer the problem names: this rank for a size mismatch, -1 for the counts
};

inline SelfTransfers self_transfers(int rank, std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) {
  SelfTransfers self;
  std::vector<const SendSpec*> to_self;
  std::vector<const RecvSpec*> from_self;
  for (const SendSpec& send : sends) {
    if (send.peer == rank) to_self.push_back(&send);
  }
  for (const RecvSpec& recv : recvs) {
    if (recv.peer == rank) from_self.push_back(&recv);
  }
  if (to_self.size() != from_self.size()) {
    self.problem = "lists " + std::to_string(to_self.size()) + " sends to itself but " +
                   std::to_string(from_self.size()) + " receives from itself";
    return self;
  }
  for (std::size_t i = 0; i < to_self.size(); ++i) {
    if (to_self[i]->bytes != from_self[i]->bytes) {
      self.problem = "sends itself " + std::to_string(to_self[i]->bytes) + " bytes but expects " +
                     std::to_string(from_self[i]->bytes);
      self.peer = rank;
      self.pairs.clear();
      return self;
    }
    self.pairs.emplace_back(to_self[i], from_self[i]);
  }
  return self;
}

// The bytes an exchange moves, both directions (what its errors and events name).
inline std::size_t exchange_bytes(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) {
  std::size_t total = 0;
  for (const SendSpec& send : sends) total += send.bytes;
  for (const RecvSpec& recv : recvs) total += recv.bytes;
  return total;
}

}  // namespace hybridshard::core::detail
