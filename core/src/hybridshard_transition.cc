// The kHybridshard strategy: runs a RankPlan. Every byte the rank needs lands in its final place, written once.
//
// Peer path (peers whose train buffers this rank's device reads directly, Communicator::share_memory): one landing
// pass, a single piece-kernel launch over a table holding the local pieces (own train buffers) and every piece of
// those peers (RankPlan::peer_reads, read straight from the peers' train buffers over NVLink), so each byte is read
// once from where it lives and written once; no bucket, no pack, no unpack. Ordering: enter synchronizes this rank's
// device (its train buffers hold the version), then share_memory's exchange lines every rank up, so no rank reads a
// peer before the peer's buffers hold the version; after the pass a world barrier keeps every rank in enter until
// all readers of its train buffers are done, so nobody changes a train buffer while a peer reads it.
//
// Send/recv path (the other peers: another host, no peer access, Transport::kSendRecv): remote pieces packed by
// their owners into one staging bucket per round and scattered from the receive bucket. The local pieces are copied
// in slices, one per round, launched just before that round's exchange: on a GPU the copy kernel runs on the device's
// stream while NCCL moves the round on its own, so the local bytes cost no time of their own.
//
// Nothing goes through the host, no per-tensor temporaries, and the device holds at most the inference buffer plus
// one round's send and receive staging (none on the peer path) above what the train phase held.
//
// After exit(kOffload) the inference shard waits in pinned host memory (for inspection, or for a rollout engine that
// reads it from there); the next enter never copies it back: a train step ran in between, so every byte of it is
// stale. enter allocates the device copy afresh, frees the host copy, and overwrites every byte (tensors, vocabulary
// padding and alignment gaps).
#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/transition.h"
#include "transition/transition_internal.h"

namespace hybridshard::core::transition_detail {
namespace {

// A round's pieces and messages, offsets already relative to the staging buckets.
struct PreparedRound {
  std::int64_t send_bytes = 0;
  std::int64_t recv_bytes = 0;
  std::vector<Piece> pack;     // train buffers -> send staging
  std::vector<Piece> unpack;   // receive staging -> inference buffer
  std::vector<Message> sends;  // peer and bytes; `pieces` empty, offset in `send_offsets`
  std::vector<Message> recvs;
  std::vector<std::int64_t> send_offsets;
  std::vector<std::int64_t> recv_offsets;
};

// A launched landing pass, reported (events, stats) once the device has finished it.
struct LandingPass {
  Stopwatch clock;
  std::int64_t local_bytes = 0;
  std::vector<std::pair<int, std::int64_t>> peer_bytes;  // (peer, bytes read from it)
};

class HybridshardTransition final : public Transition {
 public:
  HybridshardTransition(RankPlan plan, Communicator& world, Device& device, EventSink* events,
                        TransitionOptions options)
      : plan_(std::move(plan)),
        world_(world),
        device_(device),
        events_(events),
        options_(options),
        zero_(zero_ranges(plan_)) {
    for (const PeerPieces& reads : plan_.peer_reads) wanted_.push_back(reads.peer);
    direct_.assign(static_cast<std::size_t>(world_.size()), false);
    read_by_.assign(static_cast<std::size_t>(world_.size()), false);
    prepare_rounds();
  }

  FlatBuffer& enter(const std::vector<FlatBuffer*>& train_params) override {
    const Stopwatch clock;
    TransitionStats stats;
    const int rank = world_.rank();
    check_train_params(plan_, train_params);
    std::vector<void*> sources;
    for (FlatBuffer* buffer : train_params) sources.push_back(buffer->data());
    const PeerMemory peers = link_peers(sources);  // before the peak is tracked: what a communicator holds is not ours
    PeakTracker peak(device_);

    if (!inference_) {
      FlatBufferInfo info;
      info.name = "rollout.params";
      info.kind = BufferKind::kInferenceParams;
      info.dtype = plan_.inference_buffer.dtype;
      info.bytes = plan_.inference_buffer.bytes;
      info.shape = shape_text(plan_.inference_buffer);
      inference_ = std::make_unique<FlatBuffer>(std::move(info), device_, events_, rank);
    }
    inference_->set_iteration(iteration_);
    // Whatever an offload kept on the host is stale (see the top of this file): allocate, do not copy.
    if (inference_->residency() != Residency::kGpu) inference_->move_to(Residency::kGpu, /*keep_contents=*/false);
    peak.sample();

    std::unique_ptr<FlatBuffer> send_staging = make_staging("enter.staging.send", max_send_bytes_);
    std::unique_ptr<FlatBuffer> recv_staging = make_staging("enter.staging.recv", max_recv_bytes_);
    peak.sample();
    char* const send_base = send_staging ? static_cast<char*>(send_staging->data()) : nullptr;
    char* const recv_base = recv_staging ? static_cast<char*>(recv_staging->data()) : nullptr;

    void* const inference_base = inference_->data();
    auto* const inference_bytes = static_cast<char*>(inference_base);
    for (const ByteRange& range : zero_) device_.fill_zero(inference_bytes + range.offset, range.bytes);

    // The landing pass: local pieces and every directly read peer's pieces in one launch. With send/recv rounds
    // still to come it is waited for first (the rounds synchronize the device anyway).
    const bool landing = std::find(direct_.begin(), direct_.end(), true) != direct_.end();
    std::optional<LandingPass> pass;
    if (landing) {
      pass = land(sources, peers, inference_base);
      if (!rounds_.empty()) {
        device_.synchronize();
        report(*pass, stats);
      }
    }

    // One slice of the local pieces; with rounds it is not waited for here (the round's unpack waits for it).
    auto copy_local_slice = [&](std::size_t k) {
      const std::vector<Piece>& slice = local_slices_[k];
      if (landing || slice.empty()) return;  // the landing pass copied them
      const Stopwatch local_clock;
      device_.copy_pieces(slice, sources, nullptr, inference_base);
      std::int64_t bytes = 0;
      for (const Piece& piece : slice) bytes += piece.bytes();
      stats.bytes_device_to_device += bytes;
      emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, bytes, local_clock.seconds(), rank,
                    "enter.local");
    };
    if (rounds_.empty()) copy_local_slice(0);

    for (std::size_t k = 0; k < rounds_.size(); ++k) {
      const PreparedRound& round = rounds_[k];
      const std::string name = "enter.round" + std::to_string(k);
      if (!round.pack.empty()) {
        const Stopwatch pack_clock;
        device_.copy_pieces(round.pack, sources, nullptr, send_base);
        device_.synchronize();  // the exchange reads the bucket
        const std::int64_t bytes = round.send_bytes;
        stats.bytes_device_to_device += bytes;
        emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, bytes, pack_clock.seconds(), rank,
                      name + ".pack");
      }
      std::vector<SendSpec> sends;
      std::vector<RecvSpec> recvs;
      for (std::size_t i = 0; i < round.sends.size(); ++i) {
        sends.push_back(
            {round.sends[i].peer, send_base + round.send_offsets[i], static_cast<std::size_t>(round.sends[i].bytes)});
      }
      for (std::size_t i = 0; i < round.recvs.size(); ++i) {
        recvs.push_back(
            {round.recvs[i].peer, recv_base + round.recv_offsets[i], static_cast<std::size_t>(round.recvs[i].bytes)});
      }
      copy_local_slice(k);  // after the pack's synchronize: it overlaps the exchange below
      const Stopwatch exchange_clock;
      world_.exchange(sends, recvs);
      const double exchange_seconds = exchange_clock.seconds();
      for (const Message& message : round.sends) {
        const TransferPath path = message.peer == rank ? TransferPath::kDeviceToDevice : TransferPath::kNetwork;
        if (message.peer != rank) stats.bytes_network_sent += message.bytes;
        emit_transfer(events_, rank, iteration_, path, message.bytes, exchange_seconds, message.peer, name + ".send");
      }
      for (const Message& message : round.recvs) {
        if (message.peer == rank) continue;  // the local copy was reported with the send
        stats.bytes_network_received += message.bytes;
        emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, message.bytes, exchange_seconds, message.peer,
                      name + ".recv");
      }
      if (!round.unpack.empty()) {
        const Stopwatch unpack_clock;
        device_.copy_pieces(round.unpack, {}, recv_base, inference_base);
        device_.synchronize();  // the next round overwrites the bucket
        const std::int64_t bytes = round.recv_bytes;
        stats.bytes_device_to_device += bytes;
        emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, bytes, unpack_clock.seconds(), rank,
                      name + ".unpack");
      }
    }
    device_.synchronize();
    if (pass && rounds_.empty()) report(*pass, stats);
    // Every reader of this rank's train buffers is done before enter returns (and the caller may train again).
    if (peers.any_direct) world_.barrier();
    if (send_staging) send_staging->release();
    if (recv_staging) recv_staging->release();
    send_staging.reset();
    recv_staging.reset();

    stats.peak_extra_device_bytes = peak.peak_extra();
    stats.seconds = clock.seconds();
    last_enter_ = stats;
    if (stats.peak_extra_device_bytes > plan_.peak_extra_bytes()) {
      HS_THROW(Error, "enter on rank " + std::to_string(rank) + " held " +
                          std::to_string(stats.peak_extra_device_bytes) +
                          " device bytes above the train phase, more than the plan's peak of " +
                          std::to_string(plan_.peak_extra_bytes()));
    }
    return *inference_;
  }

  void exit(ExitPolicy policy) override {
    const Stopwatch clock;
    TransitionStats stats;
    if (inference_) {
      inference_->set_iteration(iteration_);
      if (policy == ExitPolicy::kFree) {
        inference_->release();
      } else if (inference_->residency() == Residency::kGpu) {
        inference_->move_to(Residency::kCpu, /*keep_contents=*/true);
        device_.synchronize();
        stats.bytes_device_to_host = inference_->bytes();
      }
    }
    stats.seconds = clock.seconds();
    last_exit_ = stats;
  }

  FlatBuffer* inference_params() override { return inference_.get(); }
  const TransitionStats& last_enter() const override { return last_enter_; }
  const TransitionStats& last_exit() const override { return last_exit_; }
  const RankPlan& plan() const override { return plan_; }

 private:
  // The plan's rounds without the peers read directly (receives) and the peers that read this rank directly (sends),
  // offsets relative to the staging buckets; none at all when nothing is left to exchange. The local pieces in one
  // slice per round (at least one), of about equal bytes, in plan order.
  void prepare_rounds() {
    rounds_.clear();
    max_send_bytes_ = 0;
    max_recv_bytes_ = 0;
    bool any = false;
    for (const Round& round : plan_.rounds) {
      PreparedRound prepared;
      for (const Message& message : round.sends) {
        if (read_by_[static_cast<std::size_t>(message.peer)]) continue;
        for (Piece piece : message.pieces) {
          piece.dst_offset += prepared.send_bytes;
          prepared.pack.push_back(piece);
        }
        prepared.sends.push_back({message.peer, message.bytes, {}});
        prepared.send_offsets.push_back(prepared.send_bytes);
        prepared.send_bytes += message.bytes;
      }
      for (const Message& message : round.recvs) {
        if (direct_[static_cast<std::size_t>(message.peer)]) continue;
        for (Piece piece : message.pieces) {
          piece.src_buffer = -1;
          piece.src_offset += prepared.recv_bytes;
          prepared.unpack.push_back(piece);
        }
        prepared.recvs.push_back({message.peer, message.bytes, {}});
        prepared.recv_offsets.push_back(prepared.recv_bytes);
        prepared.recv_bytes += message.bytes;
      }
      any = any || !prepared.sends.empty() || !prepared.recvs.empty();
      max_send_bytes_ = std::max(max_send_bytes_, prepared.send_bytes);
      max_recv_bytes_ = std::max(max_recv_bytes_, prepared.recv_bytes);
      rounds_.push_back(std::move(prepared));
    }
    if (!any) rounds_.clear();

    const std::size_t slices = std::max<std::size_t>(1, rounds_.size());
    local_slices_.assign(slices, {});
    const std::int64_t total = plan_.bytes_local();
    std::int64_t done = 0;
    std::size_t slice = 0;
    for (const Piece& piece : plan_.local_pieces) {
      while (slice + 1 < slices &&
             done >= total * static_cast<std::int64_t>(slice + 1) / static_cast<std::int64_t>(slices)) {
        ++slice;
      }
      local_slices_[slice].push_back(piece);
      done += piece.bytes();
    }
  }

  // Which peers are read directly this enter (collective unless the transport is send/recv). Registration happens
  // once per buffer inside the communicator; the addresses are exchanged every enter because train buffers may move
  // between enters, and the exchange is also the line-up before anyone reads. A peer that is not read directly is
  // said in the log and in an event whenever the set changes.
  PeerMemory link_peers(const std::vector<void*>& sources) {
    PeerMemory peers;
    if (options_.transport == Transport::kSendRecv) return peers;
    std::vector<std::int64_t> bytes;
    for (const BufferLayout& layout : plan_.train_buffers) bytes.push_back(layout.bytes);
    device_.synchronize();  // this rank's train buffers hold the version before anyone reads them
    peers = world_.share_memory(sources, bytes, wanted_);
    const auto n = static_cast<std::size_t>(world_.size());
    std::vector<bool> direct(n, false);
    for (const PeerPieces& reads : plan_.peer_reads) {
      const auto p = static_cast<std::size_t>(reads.peer);
      if (p < peers.reads.size() && peers.reads[p].size() == plan_.train_buffers.size()) direct[p] = true;
    }
    std::vector<bool> read_by = peers.read_by;
    read_by.resize(n, false);
    if (!linked_ || direct != direct_ || read_by != read_by_) {
      linked_ = true;
      direct_ = std::move(direct);
      read_by_ = std::move(read_by);
      prepare_rounds();
      for (const PeerPieces& reads : plan_.peer_reads) {
        const auto p = static_cast<std::size_t>(reads.peer);
        if (direct_[p]) continue;
        std::string why = p < peers.why.size() ? peers.why[p] : std::string();
        if (why.empty()) {
          why = p < peers.reads.size() && !peers.reads[p].empty()
                    ? "it shares " + std::to_string(peers.reads[p].size()) + " buffers, the plan reads " +
                          std::to_string(plan_.train_buffers.size())
                    : "no reason given";
        }
        report_fallback(reads.peer, why);
      }
    }
    return peers;
  }

  void report_fallback(int peer, const std::string& why) {
    // With kAuto only NCCL could have read the peer directly: on Gloo (no device memory to share) and on a loopback
    // without peer buffers send/recv is the expected path, not a fallback.
    if (options_.transport == Transport::kAuto && world_.backend() != Backend::kNccl) return;
    const std::string line = "hybridshard: enter on rank " + std::to_string(world_.rank()) + ": peer " +
                             std::to_string(peer) + " by send/recv, not read directly (transport " +
                             std::string(transport_name(options_.transport)) + "): " + why;
    std::cerr << line << '\n';
    if (events_ == nullptr) return;
    Event event;
    event.type = EventType::kCheck;
    event.time = wall_time_now();
    event.rank = world_.rank();
    event.iteration = iteration_;
    event.peer = peer;
    event.operation = "enter.transport";
    // Not a failed check (the bytes still arrive, bit-exact): the metrics count ok == false as a failed rollout check.
    event.ok = true;
    event.detail = line;
    events_->on_event(event);
  }

  // Launches the landing pass: local pieces from this rank's train buffers and every directly read peer's pieces
  // from that peer's, into the inference buffer, in one copy_pieces call.
  LandingPass land(const std::vector<void*>& sources, const PeerMemory& peers, void* inference_base) {
    LandingPass pass;
    std::vector<void*> bases = sources;
    std::vector<Piece> table;
    for (const Piece& piece : plan_.local_pieces) {
      table.push_back(piece);
      pass.local_bytes += piece.bytes();
    }
    for (const PeerPieces& reads : plan_.peer_reads) {
      const auto p = static_cast<std::size_t>(reads.peer);
      if (!direct_[p]) continue;
      const auto first = static_cast<int>(bases.size());
      for (const void* base : peers.reads[p]) bases.push_back(const_cast<void*>(base));
      for (Piece piece : reads.pieces) {
        piece.src_buffer += first;
        table.push_back(piece);
      }
      pass.peer_bytes.emplace_back(reads.peer, reads.bytes());
    }
    device_.copy_pieces(table, bases, nullptr, inference_base);
    return pass;
  }

  void report(const LandingPass& pass, TransitionStats& stats) {
    const int rank = world_.rank();
    const double seconds = pass.clock.seconds();
    stats.bytes_device_to_device += pass.local_bytes;
    if (pass.local_bytes > 0) {
      emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, pass.local_bytes, seconds, rank,
                    "enter.local");
    }
    for (const auto& [peer, bytes] : pass.peer_bytes) {
      stats.bytes_network_received += bytes;
      // "recv": what the launcher and the metrics count as received over the network.
      emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, bytes, seconds, peer, "enter.peer.recv");
    }
  }

  std::unique_ptr<FlatBuffer> make_staging(const std::string& name, std::int64_t bytes) {
    if (bytes <= 0) return nullptr;
    FlatBufferInfo info;
    info.name = name;
    info.kind = BufferKind::kStaging;
    info.dtype = plan_.inference_buffer.dtype;
    info.bytes = bytes;
    info.shape = std::to_string(rounds_.size()) + " rounds";
    auto buffer = std::make_unique<FlatBuffer>(std::move(info), device_, events_, world_.rank());
    buffer->set_iteration(iteration_);
    buffer->move_to(Residency::kGpu, /*keep_contents=*/false);
    return buffer;
  }

  RankPlan plan_;
  Communicator& world_;
  Device& device_;
  EventSink* events_;
  TransitionOptions options_;
  std::vector<ByteRange> zero_;
  std::vector<int> wanted_;    // the peers of plan_.peer_reads
  std::vector<bool> direct_;   // [peer]: read directly (the last enter's answer)
  std::vector<bool> read_by_;  // [peer]: reads this rank directly
  bool linked_ = false;        // link_peers ran at least once
  std::vector<PreparedRound> rounds_;
  std::int64_t max_send_bytes_ = 0;
  std::int64_t max_recv_bytes_ = 0;
  std::vector<std::vector<Piece>> local_slices_;  // plan_.local_pieces, one slice per round
  std::unique_ptr<FlatBuffer> inference_;
  TransitionStats last_enter_;
  TransitionStats last_exit_;
};

}  // namespace

std::unique_ptr<Transition> make_hybridshard_transition(RankPlan plan, Communicator& world, Device& device,
                                                        EventSink* events, TransitionOptions options) {
  return std::make_unique<HybridshardTransition>(std::move(plan), world, device, events, options);
}

}  // namespace hybridshard::core::transition_detail
