// The kHybridshard strategy: runs a RankPlan. Every byte the rank needs lands in its final place, written once.
//
// Peer path (peers whose train buffers this rank's device reads directly, Communicator::share_memory): one landing
// pass, a single piece-kernel launch over a table holding the local pieces (own train buffers) and every piece of
// those peers (RankPlan::peer_reads, read straight from the peers' train buffers over NVLink), so each byte is read
// once from where it lives and written once; no bucket, no pack, no unpack. Ordering: enter synchronizes this rank's
// device (its train buffers hold the version), then share_memory's exchange lines every rank up, so no rank reads a
// peer before the peer's buffers hold the version; after the pass (and the device synchronized) a world barrier on
// the host keeps every rank in enter until all readers of its train buffers are done, so nobody changes a train
// buffer while a peer reads it. With every rank on one host both are meetings in shared host memory (NCCL).
//
// Send/recv path (the other peers: another host, no peer access, Transport::kSendRecv): round by round, each
// message as the plan's wires (one send/receive each). A wire whose bytes lie back to back in the train buffer is sent
// straight from it (no pack); one whose bytes lie back to back in the inference buffer is received in place; the
// rest go through the round's bucket: packed by the sender's piece kernel, landed by the receiver's. There are two
// buckets: round k's bucket is landed on the device's second lane (Device::copy_pieces_aside, a second stream with
// events on CUDA) while round k + 1 moves through the other, and round k + 2 waits only for round k's landing. Round
// k + 1's pack and one slice of the local pieces are queued on the device's stream around round k's exchange: on a
// GPU they run while NCCL moves the round on its own stream, so they cost no time of their own. Over NCCL the rounds
// are queued (Communicator::queue_exchange): the host posts every round at once and waits once, at the end; the
// order between packs (main lane), exchanges (NCCL's stream) and landings (aside lane) is kept by CUDA events, so no
// host round trip falls between two rounds. Rounds are cut by the bytes they stage (PlanOptions::bucket_bytes), so
// wires that need no bucket add no rounds. Over Gloo (CPU devices) the same steps run one after the other.
//
// Nothing goes through the host, no per-tensor temporaries, and the device holds at most the inference buffer plus
// two buckets (RankPlan::staging_bytes(); none on the peer path) above what the train phase held.
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

// Where one wire's bytes are on this rank: a train buffer (sends), the inference buffer (receives), or the bucket.
struct PreparedWire {
  int peer = 0;
  std::int64_t bytes = 0;
  int train_buffer = -1;    // >= 0: sent straight from this train buffer at `offset`
  bool in_place = false;    // received straight into the inference buffer at `offset`
  std::int64_t offset = 0;  // in the train buffer, the inference buffer or the bucket
};

// A round's wires and the pieces that pack and land its bucket (offsets relative to the bucket).
struct PreparedRound {
  int bucket = -1;  // which bucket the round uses; -1 when it has no staging
  std::int64_t staging_bytes = 0;
  std::vector<Piece> pack;  // train buffers -> bucket
  std::vector<Piece> land;  // bucket -> inference buffer
  std::vector<PreparedWire> sends;
  std::vector<PreparedWire> recvs;
  std::vector<std::pair<int, std::int64_t>> sent;      // (peer, message bytes), for the events
  std::vector<std::pair<int, std::int64_t>> received;  // (peer, message bytes)
  std::int64_t packed_bytes = 0;
  std::int64_t landed_bytes = 0;
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

    std::vector<std::unique_ptr<FlatBuffer>> buckets;
    for (int b = 0; b < num_buckets_; ++b) {
      buckets.push_back(make_staging("enter.bucket" + std::to_string(b), bucket_bytes_));
    }
    peak.sample();

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

    // One slice of the local pieces; with rounds it is not waited for here.
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

    std::vector<bool> landing_in(buckets.size(), false);  // [bucket]: its round's exchange or landing may still run
    std::optional<Stopwatch> pack_clock;                  // from the first pack's launch
    std::optional<Stopwatch> land_clock;                  // from the first landing's launch
    std::int64_t packed_bytes = 0;
    std::int64_t landed_bytes = 0;
    const auto bucket_of = [&](const PreparedRound& round) {
      return round.bucket >= 0 ? static_cast<char*>(buckets[static_cast<std::size_t>(round.bucket)]->data()) : nullptr;
    };
    // Queues on the main lane what round k's exchange needs first: its bucket free (the aside lane has passed the
    // round before last: its exchange and its landing) and its sends packed. Called for round k + 1 around round k's
    // exchange, so that the pack runs while round k moves.
    const auto prepare = [&](std::size_t k) {
      const PreparedRound& round = rounds_[k];
      if (round.bucket >= 0 && landing_in[static_cast<std::size_t>(round.bucket)]) {
        device_.await_aside(round.bucket);
        landing_in[static_cast<std::size_t>(round.bucket)] = false;
      }
      if (round.pack.empty()) return;
      if (!pack_clock) pack_clock.emplace();
      device_.copy_pieces(round.pack, sources, nullptr, bucket_of(round));
      packed_bytes += round.packed_bytes;
    };
    // The main lane waits for every bucket's last landing on the aside lane.
    const auto await_landings = [&] {
      for (std::size_t b = 0; b < landing_in.size(); ++b) {
        if (landing_in[b]) device_.await_aside(static_cast<int>(b));
      }
    };
    // Queued rounds (NCCL): every round is posted at once, ordered on the device by the lanes' events, and the host
    // waits once, after the last. Otherwise (Gloo, loopback) each round blocks and reads what the device has done.
    const bool queued = world_.queues_exchanges();
    void* const main_lane = queued ? device_.stream() : nullptr;
    void* const aside_lane = queued && !rounds_.empty() ? device_.aside_stream() : nullptr;
    // The rounds read the train buffers (direct sends): they hold the version.
    if (queued && !rounds_.empty()) device_.synchronize();
    if (!rounds_.empty()) prepare(0);
    try {
      for (std::size_t k = 0; k < rounds_.size(); ++k) {
        const PreparedRound& round = rounds_[k];
        char* const bucket = bucket_of(round);
        // The exchange reads the packed bucket and the train buffers (direct sends) and writes the bucket and the
        // shard: it starts after everything queued on the main lane so far. A blocking exchange has the device finish
        // that first, then queues this round's slice of the local pieces and the next round's pack, which run while it
        // moves; a queued one has them queued after it, so that it does not wait for them.
        if (!queued) {
          device_.synchronize();
          copy_local_slice(k);
          if (k + 1 < rounds_.size()) prepare(k + 1);
        }
        std::vector<SendSpec> sends;
        std::vector<RecvSpec> recvs;
        for (const PreparedWire& wire : round.sends) {
          const char* from = wire.train_buffer >= 0 ? static_cast<const char*>(sources[wire.train_buffer]) : bucket;
          sends.push_back({wire.peer, from + wire.offset, static_cast<std::size_t>(wire.bytes)});
        }
        for (const PreparedWire& wire : round.recvs) {
          char* into = wire.in_place ? inference_bytes : bucket;
          recvs.push_back({wire.peer, into + wire.offset, static_cast<std::size_t>(wire.bytes)});
        }
        world_.queue_exchange(sends, recvs, main_lane, aside_lane);
        if (!round.land.empty()) {
          // On the second lane, after the exchange: the next round's exchange does not wait for it.
          if (!land_clock) land_clock.emplace();
          device_.copy_pieces_aside(round.land, {}, bucket, inference_base);
          landed_bytes += round.landed_bytes;
        }
        if (round.bucket >= 0) {
          // The bucket is free again once the aside lane has passed this round (its exchange, then its landing).
          device_.mark_aside(round.bucket);
          landing_in[static_cast<std::size_t>(round.bucket)] = true;
        }
        if (queued) {
          copy_local_slice(k);
          if (k + 1 < rounds_.size()) prepare(k + 1);
        }
      }
    } catch (...) {
      // Rounds queued before the failure may still read and write the buckets and the shard: wait for them (each
      // bounded by the communicator's timeout) before the buckets go back on the way out. The first error is the one
      // reported.
      try {
        world_.finish_queued();
        await_landings();
        device_.synchronize();
      } catch (...) {
      }
      throw;
    }
    const std::vector<double> round_seconds = world_.finish_queued();
    for (std::size_t k = 0; k < rounds_.size() && k < round_seconds.size(); ++k) {
      const std::string name = "enter.round" + std::to_string(k);
      for (const auto& [peer, bytes] : rounds_[k].sent) {
        stats.bytes_network_sent += bytes;
        emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, bytes, round_seconds[k], peer, name + ".send");
      }
      for (const auto& [peer, bytes] : rounds_[k].received) {
        stats.bytes_network_received += bytes;
        emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, bytes, round_seconds[k], peer, name + ".recv");
      }
    }
    await_landings();
    device_.synchronize();
    if (pass && rounds_.empty()) report(*pass, stats);
    // The packs and the landings overlap the rounds: each reported once, from its first launch to the end.
    if (packed_bytes > 0) {
      stats.bytes_device_to_device += packed_bytes;
      emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, packed_bytes, pack_clock->seconds(), rank,
                    "enter.pack");
    }
    if (landed_bytes > 0) {
      stats.bytes_device_to_device += landed_bytes;
      emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, landed_bytes, land_clock->seconds(), rank,
                    "enter.land");
    }
    // Every reader of this rank's train buffers is done before enter returns (and the caller may train again). The
    // device is synchronized: a barrier on the host does (a meeting in shared memory when every rank is on one host).
    if (peers.any_direct) world_.host_barrier();
    for (auto& bucket : buckets) {
      if (bucket) bucket->release();
    }
    buckets.clear();

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
  // bucket offsets resolved (packed sends first, then bucketed receives); none at all when nothing is left to
  // exchange. Rounds with staging take the buckets in turn. The local pieces in one slice per round (at least one),
  // of about equal bytes, in plan order.
  void prepare_rounds() {
    rounds_.clear();
    bucket_bytes_ = 0;
    num_buckets_ = 0;
    bool any = false;
    int staged_rounds = 0;
    for (const Round& round : plan_.rounds) {
      PreparedRound prepared;
      for (const Message& message : round.sends) {
        if (read_by_[static_cast<std::size_t>(message.peer)]) continue;
        prepared.sent.emplace_back(message.peer, message.bytes);
        for (const Wire& wire : message.wires) {
          PreparedWire sent{message.peer, wire.bytes};
          if (wire.direct()) {
            sent.train_buffer = wire.pieces.front().src_buffer;
            sent.offset = wire.pieces.front().src_offset;
          } else {
            sent.offset = prepared.staging_bytes;
            for (Piece piece : wire.pieces) {
              piece.dst_offset += prepared.staging_bytes;
              prepared.pack.push_back(piece);
            }
            prepared.staging_bytes += wire.bytes;
            prepared.packed_bytes += wire.bytes;
          }
          prepared.sends.push_back(sent);
        }
      }
      for (const Message& message : round.recvs) {
        if (direct_[static_cast<std::size_t>(message.peer)]) continue;
        prepared.received.emplace_back(message.peer, message.bytes);
        for (const Wire& wire : message.wires) {
          PreparedWire received{message.peer, wire.bytes};
          if (wire.direct()) {
            received.in_place = true;
            received.offset = wire.pieces.front().dst_offset;
          } else {
            received.offset = prepared.staging_bytes;
            for (Piece piece : wire.pieces) {
              piece.src_buffer = -1;
              piece.src_offset += prepared.staging_bytes;
              prepared.land.push_back(piece);
            }
            prepared.staging_bytes += wire.bytes;
            prepared.landed_bytes += wire.bytes;
          }
          prepared.recvs.push_back(received);
        }
      }
      any = any || !prepared.sends.empty() || !prepared.recvs.empty();
      if (prepared.staging_bytes > 0) {
        prepared.bucket = staged_rounds++ % 2;
        bucket_bytes_ = std::max(bucket_bytes_, prepared.staging_bytes);
      }
      rounds_.push_back(std::move(prepared));
    }
    if (!any) rounds_.clear();
    num_buckets_ = rounds_.empty() ? 0 : std::min(staged_rounds, 2);

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
    for (const Piece& piece : plan_.local_pieces) pass.local_bytes += piece.bytes();
    for (const PeerPieces& reads : plan_.peer_reads) {
      const auto p = static_cast<std::size_t>(reads.peer);
      if (!direct_[p]) continue;
      for (const void* base : peers.reads[p]) bases.push_back(const_cast<void*>(base));
      pass.peer_bytes.emplace_back(reads.peer, reads.bytes());
    }
    device_.copy_pieces(landing_pieces(plan_, direct_), bases, nullptr, inference_base);
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
  std::int64_t bucket_bytes_ = 0;                 // the largest round's staging
  int num_buckets_ = 0;                           // buckets enter holds: min(2, rounds with staging)
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
