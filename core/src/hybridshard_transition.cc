// The kHybridshard strategy: runs a RankPlan. Every byte the rank needs lands in its final place: local pieces straight
// from the train buffers, remote pieces packed by their owners into one staging bucket per round and scattered from
// the receive bucket. Nothing goes through the host, no per-tensor temporaries, and the device holds at most the
// inference buffer plus one round's send and receive staging above what the train phase held. The local pieces are
// copied in slices, one per round, launched just before that round's exchange: on a GPU the copy kernel runs on the
// device's stream while NCCL moves the round on its own, so the local bytes cost no time of their own.
//
// After exit(kOffload) the inference shard waits in pinned host memory (for inspection, or for a rollout engine that
// reads it from there); the next enter never copies it back: a train step ran in between, so every byte of it is
// stale. enter allocates the device copy afresh, frees the host copy, and overwrites every byte (tensors, vocabulary
// padding and alignment gaps).
#include <algorithm>
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
  std::vector<Piece> pack;     // train buffers -> send staging
  std::vector<Piece> unpack;   // receive staging -> inference buffer
  std::vector<Message> sends;  // peer and bytes; `pieces` empty, offset in `send_offsets`
  std::vector<Message> recvs;
  std::vector<std::int64_t> send_offsets;
  std::vector<std::int64_t> recv_offsets;
};

class HybridshardTransition final : public Transition {
 public:
  HybridshardTransition(RankPlan plan, Communicator& world, Device& device, EventSink* events)
      : plan_(std::move(plan)), world_(world), device_(device), events_(events), zero_(zero_ranges(plan_)) {
    for (const Round& round : plan_.rounds) {
      PreparedRound prepared;
      std::int64_t offset = 0;
      for (const Message& message : round.sends) {
        for (Piece piece : message.pieces) {
          piece.dst_offset += offset;
          prepared.pack.push_back(piece);
        }
        prepared.sends.push_back({message.peer, message.bytes, {}});
        prepared.send_offsets.push_back(offset);
        offset += message.bytes;
      }
      offset = 0;
      for (const Message& message : round.recvs) {
        for (Piece piece : message.pieces) {
          piece.src_buffer = -1;
          piece.src_offset += offset;
          prepared.unpack.push_back(piece);
        }
        prepared.recvs.push_back({message.peer, message.bytes, {}});
        prepared.recv_offsets.push_back(offset);
        offset += message.bytes;
      }
      rounds_.push_back(std::move(prepared));
    }
    // The local pieces in one slice per round (at least one), of about equal bytes, in plan order.
    const std::size_t slices = std::max<std::size_t>(1, rounds_.size());
    local_slices_.resize(slices);
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

  FlatBuffer& enter(const std::vector<FlatBuffer*>& train_params) override {
    const Stopwatch clock;
    TransitionStats stats;
    const int rank = world_.rank();
    check_train_params(plan_, train_params);
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

    std::unique_ptr<FlatBuffer> send_staging = make_staging("enter.staging.send", plan_.max_round_send_bytes());
    std::unique_ptr<FlatBuffer> recv_staging = make_staging("enter.staging.recv", plan_.max_round_recv_bytes());
    peak.sample();
    char* const send_base = send_staging ? static_cast<char*>(send_staging->data()) : nullptr;
    char* const recv_base = recv_staging ? static_cast<char*>(recv_staging->data()) : nullptr;

    void* const inference_base = inference_->data();
    auto* const inference_bytes = static_cast<char*>(inference_base);
    for (const ByteRange& range : zero_) device_.fill_zero(inference_bytes + range.offset, range.bytes);

    std::vector<void*> sources;
    for (FlatBuffer* buffer : train_params) sources.push_back(buffer->data());

    // One slice of the local pieces; with rounds it is not waited for here (the round's unpack waits for it).
    auto copy_local_slice = [&](std::size_t k) {
      const std::vector<Piece>& slice = local_slices_[k];
      if (slice.empty()) return;
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
        const std::int64_t bytes = plan_.rounds[k].send_bytes();
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
        const std::int64_t bytes = plan_.rounds[k].recv_bytes();
        stats.bytes_device_to_device += bytes;
        emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, bytes, unpack_clock.seconds(), rank,
                      name + ".unpack");
      }
    }
    device_.synchronize();
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
  std::unique_ptr<FlatBuffer> make_staging(const std::string& name, std::int64_t bytes) {
    if (bytes <= 0) return nullptr;
    FlatBufferInfo info;
    info.name = name;
    info.kind = BufferKind::kStaging;
    info.dtype = plan_.inference_buffer.dtype;
    info.bytes = bytes;
    info.shape = std::to_string(plan_.rounds.size()) + " rounds";
    auto buffer = std::make_unique<FlatBuffer>(std::move(info), device_, events_, world_.rank());
    buffer->set_iteration(iteration_);
    buffer->move_to(Residency::kGpu, /*keep_contents=*/false);
    return buffer;
  }

  RankPlan plan_;
  Communicator& world_;
  Device& device_;
  EventSink* events_;
  std::vector<ByteRange> zero_;
  std::vector<PreparedRound> rounds_;
  std::vector<std::vector<Piece>> local_slices_;  // plan_.local_pieces, one slice per round
  std::unique_ptr<FlatBuffer> inference_;
  TransitionStats last_enter_;
  TransitionStats last_exit_;
};

}  // namespace

std::unique_ptr<Transition> make_hybridshard_transition(RankPlan plan, Communicator& world, Device& device,
                                                        EventSink* events) {
  return std::make_unique<HybridshardTransition>(std::move(plan), world, device, events);
}

}  // namespace hybridshard::core::transition_detail
