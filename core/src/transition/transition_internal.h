// Private to the transitions: the two strategies' factories, the seed's groups and tensor conversions (shared by
// seed_transition.cc and peer_data.cc, so that the loopback's peer data follows the same operation order), and the
// small helpers every transition uses for events and peak memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/transition.h"

namespace hybridshard::core::transition_detail {

std::unique_ptr<Transition> make_hybridshard_transition(RankPlan plan, Communicator& world, Device& device,
                                                        EventSink* events, TransitionOptions options);
std::unique_ptr<Transition> make_seed_transition(RankPlan plan, Communicator& world, Device& device, EventSink* events);

// Emits one kTransfer event (nothing without a sink).
void emit_transfer(EventSink* events, int rank, int iteration, TransferPath path, std::int64_t bytes, double seconds,
                   int peer, std::string operation);

// Throws Error naming the rank and the buffer unless `train_params` are the plan's train buffers, resident on the
// device.
void check_train_params(const RankPlan& plan, const std::vector<FlatBuffer*>& train_params);

// "12 tensors, 34567 elems", for FlatBufferInfo::shape.
std::string shape_text(const BufferLayout& layout);

// Seconds on a steady clock since construction.
class Stopwatch {
 public:
  Stopwatch();
  double seconds() const;

 private:
  std::int64_t start_ns_;
};

// Highest Device::bytes_in_use(kGpu) seen above the value at construction; sample() after every allocation.
class PeakTracker {
 public:
  explicit PeakTracker(Device& device);
  void sample();
  std::int64_t peak_extra() const { return peak_ - start_; }

 private:
  Device& device_;
  std::int64_t start_;
  std::int64_t peak_;
};

// Byte ranges of the inference buffer that no tensor element covers and no received or local piece writes:
// RankPlan::zero_fill plus the alignment gaps between tensors and after the last one, merged and sorted.
std::vector<ByteRange> zero_ranges(const RankPlan& plan);

// The landing pass's pieces (the peer path's one copy_pieces call; core::enter_work counts the same): the plan's local
// pieces, then those of every peer read directly (`direct[peer]`; every peer of plan.peer_reads when `direct` is
// empty), each peer's source buffers numbered after the ones before: this rank's train buffers 0 .. n-1, the first
// directly read peer's n .. 2n-1, and so on (every rank has n train buffers; a peer is read directly only when it
// shares that many).
std::vector<Piece> landing_pieces(const RankPlan& plan, const std::vector<bool>& direct);

// ---- The seed strategy's groups and conversions ----

// How a train (Megatron-Core) tensor is split over tensor-parallel ranks and put back together for vLLM.
enum class TpClass : std::uint8_t {
  kReplicated,  // layer norms: whole on every tp rank, not gathered
  kQkv,         // fused QKV weight or bias, interleaved per query group
  kGateUp,      // fused [gate; up]
  kColumns,     // linear_proj, linear_fc2: split along columns
  kVocabRows,   // word embeddings, output layer: split along padded vocabulary rows
};
TpClass tp_class_of(const std::string& train_tensor_name);

struct SeedTopology {
  int micro_dp_size = 1;                          // tp / tp'
  int micro_dp_rank = 0;                          // train tp rank % micro_dp_size
  int inference_tp_rank = 0;                      // the shard this rank holds: train tp rank / micro_dp_size
  std::vector<std::vector<int>> pipeline_groups;  // every pipeline group (same tp and dp rank), creation order
  std::vector<std::vector<int>> micro_dp_groups;  // every micro data-parallel group (consecutive ranks)
  int pipeline_group = 0;                         // index of this rank's groups in the lists above
  int micro_dp_group = 0;
};
SeedTopology seed_topology(const TrainLayout& train, const InferenceLayout& inference, int rank);

// Where train rows of a vocabulary-parallel tensor (gathered over the micro data-parallel group) land in the inference
// shard: `rows` rows from `src_row` (of the gathered tensor) to `dst_row` (of the inference tensor).
struct VocabRowCopy {
  std::int64_t src_row = 0;
  std::int64_t dst_row = 0;
  std::int64_t rows = 0;
};
// Throws ConfigError when the inference shard needs vocabulary rows the group does not hold.
VocabRowCopy seed_vocab_rows(const ModelSpec& spec, const TrainLayout& train, const InferenceLayout& inference,
                             int inference_tp_rank);

// One tensor of the seed's schedule: train tensor `tensor` of chunk `chunk` (index into the stage's buffers) of stage
// `pp_rank`, in the order the seed walks the model (layer order: chunk-major, then stage).
struct SeedTensor {
  int pp_rank = 0;
  int chunk = 0;
  int tensor = 0;
  TpClass tp_class = TpClass::kReplicated;
  int inference_tensor = -1;  // index into the inference buffer's tensors; -1 when vLLM has no such tensor (tied
                              // output layer)
};
std::vector<SeedTensor> seed_schedule(const ModelSpec& spec, const TrainLayout& train,
                                      const std::vector<std::vector<BufferLayout>>& stage_buffers,
                                      const BufferLayout& inference_buffer);

// Pieces that turn `micro_dp_size` stacked shards of a train tensor (shard j at j * shard_bytes of source buffer 0)
// into the vLLM form of the gathered tensor (dst offsets from 0): the seed's torch.cat for kQkv (split group by
// group into q, k, v), kGateUp (gate and up), kColumns and kVocabRows; a plain copy for kReplicated.
std::vector<Piece> seed_concat_pieces(const ModelSpec& spec, const LocalTensor& shard, TpClass tp_class,
                                      int micro_dp_size);

}  // namespace hybridshard::core::transition_detail
