// The kSeed strategy: verl's first Megatron -> vLLM hybrid engine (AllGatherPPModel + MegatronVLLMShardingManager),
// step by step, as the baseline every benchmark reports against and a second opinion in tests. Its waste is kept on
// purpose, and measured:
//   - every other pipeline stage's parameters live in "seed.params.pp<P>.vpp<V>", in pinned host memory between
//     phases; enter loads them host -> device although the broadcast overwrites them (load_params_to_cuda);
//   - each stage's buffers are broadcast in the pipeline group (allgather_params);
//   - every tensor-parallel tensor is all-gathered in the micro data-parallel group (tp / tp' consecutive ranks) into
//     a per-tensor temporary ("seed.allgather") and concatenated (torch.cat); fused QKV and gate/up go through a
//     second temporary ("seed.split": q, k, v or gate, up, then cat again). The results stay alive until exit, one
//     "seed.gathered.pp<P>.vpp<V>" per chunk (the seed's self.params);
//   - vLLM's sync_model_weights copies every tensor into the inference buffer, one copy per tensor (with the QKV
//     reorder of its Megatron loader when nothing was gathered);
//   - exit offloads the other stages to the host again (offload_params_to_cpu) and drops the gathered tensors.
// The micro data-parallel groups are consecutive ranks, so this rank ends up with inference shard
// (train tp rank) / (tp / tp'), verl's strided vLLM tensor-parallel groups (see inference_tp_rank_of()).
//
// make_transition() is collective for this strategy: it creates the pipeline and micro data-parallel groups.
#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/core/transition.h"
#include "transition/transition_internal.h"

namespace hybridshard::core::transition_detail {
namespace {

std::int64_t align_up(std::int64_t bytes) {
  return (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

class SeedTransition final : public Transition {
 public:
  SeedTransition(RankPlan plan, Communicator& world, Device& device, EventSink* events)
      : plan_(std::move(plan)),
        world_(world),
        device_(device),
        events_(events),
        topology_(seed_topology(plan_.train, plan_.inference, plan_.rank)),
        coord_(plan_.train.coord(plan_.rank)) {
    const ModelSpec& spec = plan_.spec;
    inference_layout_ = inference_param_buffer(spec, plan_.inference, topology_.inference_tp_rank);
    if (inference_layout_.bytes != plan_.inference_buffer.bytes) {
      HS_THROW(Error, "seed strategy on rank " + std::to_string(plan_.rank) + ": inference shard " +
                          std::to_string(topology_.inference_tp_rank) + " has " +
                          std::to_string(inference_layout_.bytes) + " bytes, the plan's has " +
                          std::to_string(plan_.inference_buffer.bytes));
    }
    zero_ = zero_ranges_of(inference_layout_);
    vocab_ = seed_vocab_rows(spec, plan_.train, plan_.inference, topology_.inference_tp_rank);
    for (int pp_rank = 0; pp_rank < plan_.train.pp; ++pp_rank) {
      stage_layouts_.push_back(train_param_buffers(spec, plan_.train, coord_.tp_rank, pp_rank));
    }
    schedule_ = seed_schedule(spec, plan_.train, stage_layouts_, inference_layout_);

    // Where each chunk's gathered tensors sit in its "seed.gathered" buffer.
    const int m = topology_.micro_dp_size;
    const auto element = static_cast<std::int64_t>(dtype_size(spec.dtype));
    gathered_bytes_.assign(static_cast<std::size_t>(plan_.train.pp),
                           std::vector<std::int64_t>(static_cast<std::size_t>(plan_.train.vpp), 0));
    for (const SeedTensor& entry : schedule_) {
      if (m <= 1 || entry.tp_class == TpClass::kReplicated) continue;
      std::int64_t& bytes = gathered_bytes_[entry.pp_rank][entry.chunk];
      gathered_offset_[key(entry)] = bytes;
      bytes += align_up(m * tensor_of(entry).numel() * element);
    }

    // The other stages' buffers: built at init and offloaded, as AllGatherPPModel does. Pinned host memory is host
    // memory, so the initial contents are set with memset rather than a device round trip.
    for (int pp_rank = 0; pp_rank < plan_.train.pp; ++pp_rank) {
      if (pp_rank == coord_.pp_rank) continue;
      for (int chunk = 0; chunk < plan_.train.vpp; ++chunk) {
        const BufferLayout& layout = stage_layouts_[pp_rank][chunk];
        FlatBufferInfo info;
        info.name = "seed.params.pp" + std::to_string(pp_rank) + ".vpp" + std::to_string(chunk);
        info.kind = BufferKind::kParams;
        info.dtype = layout.dtype;
        info.bytes = layout.bytes;
        info.shape = shape_text(layout);
        auto buffer = std::make_unique<FlatBuffer>(std::move(info), device_, events_, plan_.rank);
        buffer->move_to(Residency::kCpu, /*keep_contents=*/false);
        if (buffer->bytes() > 0) std::memset(buffer->data(), 0, static_cast<std::size_t>(buffer->bytes()));
        other_stages_[{pp_rank, chunk}] = std::move(buffer);
      }
    }

    // Groups, created by every rank in the same order (subgroup() is collective over the world).
    if (plan_.train.pp > 1) {
      for (const std::vector<int>& group : topology_.pipeline_groups) {
        std::unique_ptr<Communicator> made = world_.subgroup(group);
        if (made) pipeline_group_ = std::move(made);
      }
    }
    if (m > 1) {
      for (const std::vector<int>& group : topology_.micro_dp_groups) {
        std::unique_ptr<Communicator> made = world_.subgroup(group);
        if (made) micro_dp_group_ = std::move(made);
      }
    }
  }

  FlatBuffer& enter(const std::vector<FlatBuffer*>& train_params) override {
    const Stopwatch clock;
    TransitionStats stats;
    const int rank = plan_.rank;
    check_train_params(plan_, train_params);
    PeakTracker peak(device_);
    for (auto& [where, buffer] : other_stages_) buffer->set_iteration(iteration_);

    // vLLM's weights.
    if (!inference_) {
      FlatBufferInfo info;
      info.name = "rollout.params";
      info.kind = BufferKind::kInferenceParams;
      info.dtype = inference_layout_.dtype;
      info.bytes = inference_layout_.bytes;
      info.shape = shape_text(inference_layout_);
      inference_ = std::make_unique<FlatBuffer>(std::move(info), device_, events_, rank);
    }
    inference_->set_iteration(iteration_);
    if (inference_->residency() != Residency::kGpu) inference_->move_to(Residency::kGpu, /*keep_contents=*/false);
    peak.sample();
    auto* const inference_base = static_cast<char*>(inference_->data());
    for (const ByteRange& range : zero_) device_.fill_zero(inference_base + range.offset, range.bytes);

    // 1. load_params_to_cuda: the stale copies of the other stages, host -> device.
    for (auto& [where, buffer] : other_stages_) {
      if (buffer->residency() == Residency::kGpu) continue;
      buffer->move_to(Residency::kGpu, /*keep_contents=*/true);
      stats.bytes_host_to_device += buffer->bytes();
      peak.sample();
    }

    // 2. allgather_params: each stage's buffers broadcast from that stage in the pipeline group.
    if (pipeline_group_) {
      for (int pp_rank = 0; pp_rank < plan_.train.pp; ++pp_rank) {
        for (int chunk = 0; chunk < plan_.train.vpp; ++chunk) {
          void* data = stage_data(train_params, pp_rank, chunk);
          const std::int64_t bytes = stage_layouts_[pp_rank][chunk].bytes;
          const Stopwatch broadcast_clock;
          pipeline_group_->broadcast(data, static_cast<std::size_t>(bytes), pp_rank);
          const std::string operation = "enter.broadcast.pp" + std::to_string(pp_rank) + ".vpp" + std::to_string(chunk);
          if (pp_rank == coord_.pp_rank) {
            stats.bytes_network_sent += bytes;
            emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, bytes, broadcast_clock.seconds(), -1,
                          operation);
          } else {
            stats.bytes_network_received += bytes;
            emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, bytes, broadcast_clock.seconds(),
                          topology_.pipeline_groups[topology_.pipeline_group][pp_rank], operation);
          }
        }
      }
    }

    // 3. _post_process_params and 4. sync_model_weights, tensor by tensor in model order.
    const int m = topology_.micro_dp_size;
    const auto element = static_cast<std::int64_t>(dtype_size(plan_.spec.dtype));
    for (const SeedTensor& entry : schedule_) {
      const LocalTensor& tensor = tensor_of(entry);
      const std::int64_t shard_bytes = tensor.numel() * element;
      const char* source =
          static_cast<const char*>(stage_data(train_params, entry.pp_rank, entry.chunk)) + tensor.offset_bytes;
      const bool gathered = m > 1 && entry.tp_class != TpClass::kReplicated;
      if (gathered) {
        source = gather_and_concatenate(entry, tensor, source, shard_bytes, stats, peak);
      }
      if (entry.inference_tensor < 0) continue;  // tied output layer: vLLM has no lm_head
      const LocalTensor& target = inference_layout_.tensors[static_cast<std::size_t>(entry.inference_tensor)];
      char* destination = inference_base + target.offset_bytes;
      const Stopwatch sync_clock;
      std::int64_t bytes = 0;
      if (entry.tp_class == TpClass::kVocabRows) {
        bytes = vocab_.rows * tensor.cols * element;
        if (bytes > 0) {
          device_.copy(destination + vocab_.dst_row * target.cols * element, Residency::kGpu,
                       source + vocab_.src_row * tensor.cols * element, Residency::kGpu, bytes);
        }
      } else if (!gathered && entry.tp_class == TpClass::kQkv) {
        // Megatron's per-group interleaving -> vLLM's [q; k; v] (the loader's reorder, nothing gathered).
        const std::vector<Piece> pieces = seed_concat_pieces(plan_.spec, tensor, entry.tp_class, 1);
        const std::vector<void*> bases = {const_cast<char*>(source)};
        device_.copy_pieces(pieces, bases, nullptr, destination);
        bytes = shard_bytes;
      } else {
        bytes = (gathered ? m : 1) * shard_bytes;
        if (bytes != target.numel() * element) {
          HS_THROW(Error, "seed strategy on rank " + std::to_string(rank) + ": '" + tensor.name + "' gives " +
                              std::to_string(bytes) + " bytes but vLLM's '" + target.name + "' has " +
                              std::to_string(target.numel() * element));
        }
        if (bytes > 0) device_.copy(destination, Residency::kGpu, source, Residency::kGpu, bytes);
      }
      device_.synchronize();
      stats.bytes_device_to_device += bytes;
      emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, bytes, sync_clock.seconds(), rank,
                    "enter.sync." + target.name);
    }
    device_.synchronize();
    stats.peak_extra_device_bytes = peak.peak_extra();
    stats.seconds = clock.seconds();
    last_enter_ = stats;
    return *inference_;
  }

  void exit(ExitPolicy policy) override {
    const Stopwatch clock;
    TransitionStats stats;
    // offload_params_to_cpu: the other stages go back to the host, contents and all.
    for (auto& [where, buffer] : other_stages_) {
      buffer->set_iteration(iteration_);
      if (buffer->residency() != Residency::kGpu) continue;
      buffer->move_to(Residency::kCpu, /*keep_contents=*/true);
      stats.bytes_device_to_host += buffer->bytes();
    }
    // The gathered tensors are dropped (params rebound to the originals).
    for (auto& [where, buffer] : gathered_) {
      buffer->set_iteration(iteration_);
      buffer->release();
    }
    gathered_.clear();
    if (inference_) {
      inference_->set_iteration(iteration_);
      if (policy == ExitPolicy::kFree) {
        inference_->release();
      } else if (inference_->residency() == Residency::kGpu) {
        inference_->move_to(Residency::kCpu, /*keep_contents=*/true);
        stats.bytes_device_to_host += inference_->bytes();
      }
    }
    device_.synchronize();
    stats.seconds = clock.seconds();
    last_exit_ = stats;
  }

  FlatBuffer* inference_params() override { return inference_.get(); }
  const TransitionStats& last_enter() const override { return last_enter_; }
  const TransitionStats& last_exit() const override { return last_exit_; }
  const RankPlan& plan() const override { return plan_; }

 private:
  static std::tuple<int, int, int> key(const SeedTensor& entry) { return {entry.pp_rank, entry.chunk, entry.tensor}; }

  const LocalTensor& tensor_of(const SeedTensor& entry) const {
    return stage_layouts_[entry.pp_rank][entry.chunk].tensors[static_cast<std::size_t>(entry.tensor)];
  }

  void* stage_data(const std::vector<FlatBuffer*>& train_params, int pp_rank, int chunk) {
    if (pp_rank == coord_.pp_rank) return train_params[static_cast<std::size_t>(chunk)]->data();
    return other_stages_.at({pp_rank, chunk})->data();
  }

  std::unique_ptr<FlatBuffer> make_temporary(const std::string& name, std::int64_t bytes) {
    FlatBufferInfo info;
    info.name = name;
    info.kind = BufferKind::kStaging;
    info.dtype = plan_.spec.dtype;
    info.bytes = bytes;
    info.shape = std::to_string(bytes) + " bytes";
    auto buffer = std::make_unique<FlatBuffer>(std::move(info), device_, events_, plan_.rank);
    buffer->set_iteration(iteration_);
    buffer->move_to(Residency::kGpu, /*keep_contents=*/false);
    return buffer;
  }

  // All-gathers one tensor-parallel tensor over the micro data-parallel group and concatenates it into its place in
  // the chunk's "seed.gathered" buffer, in vLLM's form. Returns where it now is.
  const char* gather_and_concatenate(const SeedTensor& entry, const LocalTensor& tensor, const char* shard,
                                     std::int64_t shard_bytes, TransitionStats& stats, PeakTracker& peak) {
    const int rank = plan_.rank;
    const int m = topology_.micro_dp_size;
    const std::pair<int, int> chunk_key{entry.pp_rank, entry.chunk};
    auto found = gathered_.find(chunk_key);
    if (found == gathered_.end()) {
      const std::string name =
          "seed.gathered.pp" + std::to_string(entry.pp_rank) + ".vpp" + std::to_string(entry.chunk);
      found = gathered_.emplace(chunk_key, make_temporary(name, gathered_bytes_[entry.pp_rank][entry.chunk])).first;
      peak.sample();
    }
    char* const result = static_cast<char*>(found->second->data()) + gathered_offset_.at(key(entry));

    std::unique_ptr<FlatBuffer> list = make_temporary("seed.allgather", m * shard_bytes);
    peak.sample();
    const Stopwatch gather_clock;
    micro_dp_group_->all_gather(shard, list->data(), static_cast<std::size_t>(shard_bytes));
    const double gather_seconds = gather_clock.seconds();
    const std::int64_t network = (m - 1) * shard_bytes;  // a ring all-gather sends and receives this much
    stats.bytes_network_sent += network;
    stats.bytes_network_received += network;
    emit_transfer(events_, rank, iteration_, TransferPath::kNetwork, network, gather_seconds, -1,
                  "enter.all_gather." + tensor.name);

    const Stopwatch cat_clock;
    const std::vector<Piece> pieces = seed_concat_pieces(plan_.spec, tensor, entry.tp_class, m);
    std::vector<void*> bases = {list->data()};
    std::int64_t copied = m * shard_bytes;
    if (entry.tp_class == TpClass::kQkv || entry.tp_class == TpClass::kGateUp) {
      // q_lst / k_lst / v_lst (or gate / up) concatenated first, then cat((q, k, v)).
      std::unique_ptr<FlatBuffer> split = make_temporary("seed.split", m * shard_bytes);
      peak.sample();
      device_.copy_pieces(pieces, bases, nullptr, split->data());
      device_.copy(result, Residency::kGpu, split->data(), Residency::kGpu, m * shard_bytes);
      device_.synchronize();
      copied *= 2;
    } else {
      device_.copy_pieces(pieces, bases, nullptr, result);
      device_.synchronize();
    }
    stats.bytes_device_to_device += copied;
    emit_transfer(events_, rank, iteration_, TransferPath::kDeviceToDevice, copied, cat_clock.seconds(), rank,
                  "enter.concat." + tensor.name);
    return result;
  }

  static std::vector<ByteRange> zero_ranges_of(const BufferLayout& layout) {
    // Vocabulary padding rows and alignment gaps: what no tensor's blocks cover.
    RankPlan only_layout;
    only_layout.inference_buffer = layout;
    const auto element = static_cast<std::int64_t>(dtype_size(layout.dtype));
    for (const LocalTensor& tensor : layout.tensors) {
      std::int64_t covered_rows = 0;
      for (const Block& block : tensor.blocks) covered_rows = std::max(covered_rows, block.local_row + block.rows);
      if (covered_rows < tensor.rows) {
        only_layout.zero_fill.push_back({tensor.offset_bytes + covered_rows * tensor.cols * element,
                                         (tensor.rows - covered_rows) * tensor.cols * element});
      }
    }
    return zero_ranges(only_layout);
  }

  RankPlan plan_;
  Communicator& world_;
  Device& device_;
  EventSink* events_;
  SeedTopology topology_;
  TrainLayout::Coord coord_;
  BufferLayout inference_layout_;
  std::vector<ByteRange> zero_;
  VocabRowCopy vocab_;
  std::vector<std::vector<BufferLayout>> stage_layouts_;  // [pp_rank][chunk], this rank's tp column
  std::vector<SeedTensor> schedule_;
  std::vector<std::vector<std::int64_t>> gathered_bytes_;
  std::map<std::tuple<int, int, int>, std::int64_t> gathered_offset_;        // (pp_rank, chunk, tensor)
  std::map<std::pair<int, int>, std::unique_ptr<FlatBuffer>> other_stages_;  // (pp_rank, chunk)
  std::map<std::pair<int, int>, std::unique_ptr<FlatBuffer>> gathered_;      // (pp_rank, chunk)
  std::unique_ptr<Communicator> pipeline_group_;
  std::unique_ptr<Communicator> micro_dp_group_;
  std::unique_ptr<FlatBuffer> inference_;
  TransitionStats last_enter_;
  TransitionStats last_exit_;
};

}  // namespace

std::unique_ptr<Transition> make_seed_transition(RankPlan plan, Communicator& world, Device& device,
                                                 EventSink* events) {
  return std::make_unique<SeedTransition>(std::move(plan), world, device, events);
}

}  // namespace hybridshard::core::transition_detail
