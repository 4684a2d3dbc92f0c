#include "hybridshard/core/enter_work.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <vector>

#include "detail/piece_table.h"
#include "transition/transition_internal.h"

namespace hybridshard::core {
namespace {

// Stand-in addresses for the tables: distinct buffers far apart, aligned as the device's allocations are (the kernel's
// vector width follows the addresses' alignment).
void* fake_base(std::size_t index) { return reinterpret_cast<void*>((std::uintptr_t{index} + 1) << 40); }

// Adds what one copy_pieces call over `pieces` issues.
void add_call(EnterWork& work, const std::vector<Piece>& pieces, std::size_t src_buffers, std::size_t local_buffers,
              bool peers_remote, const detail::PieceRouting& routing) {
  std::vector<void*> bases;
  std::vector<bool> remote;
  for (std::size_t b = 0; b < src_buffers; ++b) {
    bases.push_back(fake_base(b));
    remote.push_back(peers_remote && b >= local_buffers);
  }
  const detail::PieceTable table =
      detail::make_piece_table(pieces, bases, fake_base(src_buffers), fake_base(src_buffers + 1), remote, routing);
  for (const Piece& piece : pieces) work.pieces.add(piece);
  work.copy_engine_calls += static_cast<std::int64_t>(table.engine_copies.size());
  work.kernel_launches += table.chunks.empty() ? 0 : 1;
  work.kernel_blocks += static_cast<std::int64_t>(table.chunks.size());
  work.table_bytes += table.device_bytes();
}

template <typename Step>
double fastest_seconds(Step step) {
  double best = std::numeric_limits<double>::max();
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// The peer path: one landing pass over the local pieces and every peer's pieces (HybridshardTransition::land).
void add_landing_pass(const RankPlan& plan, bool peers_remote, const detail::PieceRouting& routing, EnterWork& work) {
  const std::size_t own = plan.train_buffers.size();
  const std::vector<Piece> pieces = transition_detail::landing_pieces(plan, {});
  const std::size_t buffers = own * (1 + plan.peer_reads.size());
  add_call(work, pieces, buffers, own, peers_remote, routing);
  std::vector<void*> bases;
  for (std::size_t b = 0; b < buffers; ++b) bases.push_back(fake_base(b));
  std::vector<bool> remote;
  for (std::size_t b = 0; b < buffers; ++b) remote.push_back(peers_remote && b >= own);
  work.build_seconds = fastest_seconds([&] {
    const detail::PieceTable built =
        detail::make_piece_table(pieces, bases, nullptr, fake_base(buffers), remote, routing);
    return built.chunks.size();
  });
  work.per_enter_seconds = fastest_seconds([&] {
    const std::vector<Piece> again = transition_detail::landing_pieces(plan, {});
    return detail::piece_table_shape_key(again, bases, nullptr, fake_base(buffers), remote).size();
  });
}

// The send/recv path: per round the sends' pack and the receives' landing (non-direct wires, through the bucket), and
// one slice of the local pieces per round.
void add_rounds(const RankPlan& plan, const detail::PieceRouting& routing, EnterWork& work) {
  const std::size_t own = plan.train_buffers.size();
  for (const Round& round : plan.rounds) {
    std::vector<Piece> pack;
    std::vector<Piece> land;
    std::int64_t staged = 0;
    for (const Message& message : round.sends) {
      for (const Wire& wire : message.wires) {
        ++work.messages;
        if (wire.direct()) continue;
        for (Piece piece : wire.pieces) {
          piece.dst_offset += staged;
          pack.push_back(piece);
        }
        staged += wire.bytes;
      }
    }
    for (const Message& message : round.recvs) {
      for (const Wire& wire : message.wires) {
        ++work.messages;
        if (wire.direct()) continue;
        for (Piece piece : wire.pieces) {
          piece.src_buffer = -1;
          piece.src_offset += staged;
          land.push_back(piece);
        }
        staged += wire.bytes;
      }
    }
    add_call(work, pack, own, own, false, routing);
    add_call(work, land, own, own, false, routing);
  }
  work.rounds = static_cast<std::int64_t>(plan.rounds.size());
  // The local pieces go in one slice per round (at least one): as many launches as non-empty slices, at most one per
  // piece.
  add_call(work, plan.local_pieces, own, own, false, routing);
  if (!plan.local_pieces.empty()) {
    work.kernel_launches += std::min<std::int64_t>(std::max<std::int64_t>(1, work.rounds),
                                                   static_cast<std::int64_t>(plan.local_pieces.size())) -
                            1;
  }
}

}  // namespace

void PieceSizes::add(const Piece& piece) {
  const std::int64_t piece_bytes = piece.bytes();
  ++count;
  bytes += piece_bytes;
  under_4k += piece_bytes < (4 << 10) ? 1 : 0;
  under_64k += piece_bytes < (64 << 10) ? 1 : 0;
  under_1m += piece_bytes < (1 << 20) ? 1 : 0;
  strided += piece.rows > 1 ? 1 : 0;
}

std::string_view enter_path_name(EnterPath path) {
  switch (path) {
    case EnterPath::kPeerOtherDevices:
      return "peer (other GPUs)";
    case EnterPath::kPeerSameDevice:
      return "peer (one GPU)";
    case EnterPath::kSendRecv:
      return "sendrecv";
  }
  return "?";
}

EnterWork enter_work(const RankPlan& plan, EnterPath path) {
  const detail::PieceRouting routing = detail::PieceRouting::from_environment();
  EnterWork work;
  work.path = path;
  work.fills = static_cast<std::int64_t>(transition_detail::zero_ranges(plan).size());
  if (path == EnterPath::kSendRecv) {
    add_rounds(plan, routing, work);
  } else {
    add_landing_pass(plan, path == EnterPath::kPeerOtherDevices, routing, work);
  }
  return work;
}

}  // namespace hybridshard::core
