// What one enter issues for a rank's plan, counted on the host without running it: the pieces (copy regions) and their
// sizes, and what the CUDA device makes of them (its copy_pieces tables, built by the same function the device uses,
// so the counts are the device's): copy-engine calls, kernel launches and thread blocks, the kernel tables' size, the
// send/receive calls. nccl-tests-style figures printed by `hybridshard bench` beside the times; docs/performance.md
// ("Work per enter").
#pragma once

#include <cstdint>
#include <string_view>

#include "hybridshard/core/reshard_plan.h"

namespace hybridshard::core {

struct PieceSizes {
  std::int64_t count = 0;
  std::int64_t bytes = 0;
  std::int64_t under_4k = 0;  // pieces of fewer than 4 KiB
  std::int64_t under_64k = 0;
  std::int64_t under_1m = 0;
  std::int64_t strided = 0;  // more than one row
  void add(const Piece& piece);
  double mean_bytes() const { return count > 0 ? static_cast<double>(bytes) / static_cast<double>(count) : 0.0; }
};

// Which data path the enter takes: the peer path with the peers' train buffers on other GPUs (NCCL ranks of one
// host: their pieces may go to the copy engines), the peer path with them in this device's memory (the one-GPU
// loopback bench: everything through the kernel), or send/recv (pack, exchange, land, round by round).
enum class EnterPath : std::uint8_t { kPeerOtherDevices, kPeerSameDevice, kSendRecv };
std::string_view enter_path_name(EnterPath path);  // "peer (other GPUs)", "peer (one GPU)", "sendrecv"

struct EnterWork {
  EnterPath path = EnterPath::kPeerOtherDevices;
  PieceSizes pieces;                   // every piece enter copies: local and peer pieces, or local, pack and land
  std::int64_t copy_engine_calls = 0;  // cudaMemcpyAsync / cudaMemcpy2DAsync calls
  std::int64_t kernel_launches = 0;    // piece-kernel launches
  std::int64_t kernel_blocks = 0;      // the kernels' thread blocks (64 KiB chunks)
  std::int64_t table_bytes = 0;        // the kernel tables on the device (built and uploaded at the first enter)
  std::int64_t fills = 0;              // zero fills (vocabulary padding, alignment gaps)
  std::int64_t rounds = 0;             // send/recv: rounds (each one exchange)
  std::int64_t messages = 0;           // send/recv: send and receive calls (the wires of every message)
  // Host time, measured here (fastest of a few): building the tables (once per job: the device keeps them) and what
  // every enter builds again (the landing pass's piece list and the key the device finds its kept table by).
  double build_seconds = 0;
  double per_enter_seconds = 0;
};

// Routing as the CUDA devices of this process read it (HYBRIDSHARD_PEER_COPY, HYBRIDSHARD_PEER_COPY_MIN_ROW).
EnterWork enter_work(const RankPlan& plan, EnterPath path);

}  // namespace hybridshard::core
