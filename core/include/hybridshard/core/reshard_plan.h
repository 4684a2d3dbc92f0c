// The reshard plan: a pure function of (model, train layout, inference layout, rank) saying what the rank copies
// locally, what it sends and receives, where every received byte lands, and the memory it needs. No communication
// happens here, so plans are tested on their own: the pieces of all ranks cover every inference tensor exactly once.
//
// Sources: every inference block is taken from the rank itself when its own train shards hold it; else from the
// train rank of the same data-parallel replica that holds it (replicated tensors: the holder in the same tensor-
// parallel column); experts that expert parallelism puts on other data-parallel ranks come from the nearest such rank
// (cyclically after the receiver's own data-parallel rank), so every rank's share of expert traffic is even. What a
// pair of ranks moves is cut into wires (one send/receive each): runs contiguous in the sender's train buffer or the
// receiver's inference buffer go without a bucket on that side, the rest through one (PlanOptions::direct_min_bytes).
// The wires are then cut into chunks that stage at most `chunk_bytes` on either side (a global function of the
// layouts and PlanOptions::bucket_bytes, so sender and receiver agree; a wire that stages more is cut by rows, and a
// single row larger than a chunk travels alone); round k carries chunk k of every pair as one message.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/train_layout.h"

namespace hybridshard::core {

// A 2-D byte copy: `rows` rows of `row_bytes` bytes, source rows `src_stride` bytes apart, destination rows
// `dst_stride` bytes apart. Offsets are in bytes.
struct Piece {
  int src_buffer = -1;  // index into RankPlan::train_buffers for local and send pieces; -1 when the source is a message
  std::int64_t src_offset = 0;
  std::int64_t dst_offset = 0;
  std::int64_t rows = 0;
  std::int64_t row_bytes = 0;
  std::int64_t src_stride = 0;
  std::int64_t dst_stride = 0;
  std::int64_t bytes() const { return rows * row_bytes; }
};

// One send/receive of a message: the message is its wires back to back, in order. Both sides of a pair cut a message
// into the same wires (from the same transfers), so each send matches one receive of the same size. `pieces` copy
// between this side's buffer and the wire (send: train buffer -> wire, dst_offset counted from the wire's start;
// receive: wire, src_offset counted from the wire's start -> inference buffer) and tile the wire in order.
struct Wire {
  std::int64_t bytes = 0;
  std::vector<Piece> pieces;
  // The wire's bytes lie back to back in one buffer on this side (one piece of one row): sent straight from the train
  // buffer, or received in place in the inference buffer. Otherwise they are packed into a bucket (send) or received
  // into one and landed from it by the piece kernel (receive).
  bool direct() const;
  std::int64_t staged_bytes() const;  // 0 when direct(), else bytes
};

// What goes to (sends) or comes from (recvs) one peer in one round. Send pieces copy train buffer -> message
// (dst_offset within the message); receive pieces copy message (src_offset) -> inference buffer. The pieces of a
// message tile [0, bytes) of the message exactly, in order; `wires` say how the message travels.
struct Message {
  int peer = 0;
  std::int64_t bytes = 0;
  std::vector<Piece> pieces;
  std::vector<Wire> wires;
  std::int64_t staged_bytes() const;  // bytes of the wires that go through a bucket on this side
};

struct Round {
  std::vector<Message> sends;  // by ascending peer
  std::vector<Message> recvs;  // by ascending peer
  std::int64_t send_bytes() const;
  std::int64_t recv_bytes() const;
  std::int64_t staging_bytes() const;  // this side's bucket bytes: packed sends plus bucketed receives
};

// The peer path: everything this rank lands from one peer, read straight from that peer's train buffers
// (Piece::src_buffer indexes the peer's RankPlan::train_buffers) into the inference buffer. The same bytes as the
// peer's messages to this rank over all rounds, without the messages.
struct PeerPieces {
  int peer = 0;
  std::vector<Piece> pieces;
  std::int64_t bytes() const;
};

struct ByteRange {
  std::int64_t offset = 0;
  std::int64_t bytes = 0;
};

struct PlanOptions {
  // One round's staging, both directions together (a rank holds two buckets while entering: one being landed while
  // the next round moves). A message stages at most bucket_bytes / (2 * most peers of any rank) on either side.
  std::int64_t bucket_bytes = std::int64_t{256} << 20;
  // A run of at least this many bytes that is contiguous on one side of a pair (in the sender's train buffer or in
  // the receiver's inference buffer) travels as a wire of its own, sent or received there without a bucket; shorter
  // runs share a wire with their neighbours through a bucket. Measured on 2 x H200 (docs/performance.md, issue 12):
  // each send/receive costs NCCL about 35 us beyond its bytes (the time of ~13 MB at the link's rate), while packing
  // and landing through a bucket run beside the rounds and cost no time of their own; Llama-3-8B tp2 -> 1 forced to
  // send/recv took 33.9 ms with 4 MiB and 28.2 ms with 64 MiB (1 GiB buckets).
  std::int64_t direct_min_bytes = std::int64_t{64} << 20;
  // Pieces that continue one another at one pair of strides (the same rows of adjacent experts, a gate half and its
  // up half) become one 2-D piece: fewer copies per enter for the same bytes. false keeps one piece per transfer
  // (`hybridshard bench --coalesce-rows 0` measures the difference).
  bool coalesce_rows = true;
};

struct RankPlan {
  int rank = 0;
  ModelSpec spec;
  TrainLayout train;
  InferenceLayout inference;
  std::vector<BufferLayout> train_buffers;  // this rank's parameter buffers, one per vpp chunk
  BufferLayout inference_buffer;            // this rank's inference shard
  std::vector<Piece> local_pieces;          // train buffer -> inference buffer, no network
  std::vector<Round> rounds;
  std::vector<PeerPieces> peer_reads;  // by ascending peer: the receives of `rounds`, as direct reads
  std::vector<ByteRange> zero_fill;    // inference-buffer bytes no train tensor covers (vocabulary padding)
  std::int64_t chunk_bytes = 0;

  std::int64_t bytes_local() const;
  std::int64_t bytes_sent() const;
  std::int64_t bytes_received() const;
  std::int64_t max_round_send_bytes() const;
  std::int64_t max_round_recv_bytes() const;
  std::int64_t bytes_packed() const;               // sent bytes that go through a bucket (not direct wires)
  std::int64_t bytes_landed_from_buckets() const;  // received bytes that go through a bucket
  std::int64_t max_round_staging_bytes() const;    // the largest Round::staging_bytes(): one bucket
  int staging_buckets() const;                     // buckets enter holds at once: min(2, rounds with staging)
  std::int64_t staging_bytes() const;              // staging_buckets() * max_round_staging_bytes()
  // Extra device bytes while entering over send/recv: the inference buffer plus staging_bytes().
  std::int64_t peak_extra_bytes() const;
};

// Plans ranks of one job. Construction validates the inputs and computes what every rank's plan shares (the train
// shards, the transfers of each receiver class, the global chunk size); none of it grows with the number of data-
// parallel replicas: a rank's plan costs time and memory in its own messages and peers, not in the world size.
// Construction throws ConfigError naming every problem when the spec or a layout is unusable, or the world sizes
// differ; plan() throws ConfigError for a rank outside the world. Not thread-safe (plan() fills caches).
class ReshardPlanner {
 public:
  ReshardPlanner(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference,
                 const PlanOptions& options = {});
  ReshardPlanner(const ReshardPlanner&) = delete;
  ReshardPlanner& operator=(const ReshardPlanner&) = delete;
  ~ReshardPlanner();

  RankPlan plan(int rank);
  std::int64_t chunk_bytes() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// One rank's plan: ReshardPlanner(spec, train, inference, options).plan(rank).
RankPlan make_rank_plan(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference, int rank,
                        const PlanOptions& options = {});

}  // namespace hybridshard::core
