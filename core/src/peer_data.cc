// What the peers of one rank would send it during one enter, for the loopback communicator: every train rank's
// parameters are weight_value(..., version), so any peer's message can be made here without that peer.
//
// Sequence numbers count the communicator operations of one enter from 0 (the loopback shares one numbering between
// the world and its subgroups; call reset_sequence() before each enter):
//   kHybridshard: one exchange per plan round; sequence k is round k, and the peer's message is its own RankPlan's
//                 round-k send to this rank, packed from the peer's generated train buffers.
//   kSeed:        with pp > 1, one broadcast per (stage, chunk) in stage-major order; then, with tp / tp' > 1, one
//                 all-gather per tensor-parallel tensor in the seed's model order (seed_schedule()).
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/inference_layout.h"
#include "hybridshard/core/train_layout.h"
#include "hybridshard/core/transition.h"
#include "transition/transition_internal.h"

namespace hybridshard::core {
namespace {

// Device memory owned here; freed on destruction.
class DeviceAllocation {
 public:
  DeviceAllocation(Device& device, std::int64_t bytes)
      : device_(device), bytes_(bytes), data_(bytes > 0 ? device.allocate(Residency::kGpu, bytes) : nullptr) {}
  ~DeviceAllocation() {
    if (data_ != nullptr) device_.deallocate(Residency::kGpu, data_, bytes_);
  }
  DeviceAllocation(const DeviceAllocation&) = delete;
  DeviceAllocation& operator=(const DeviceAllocation&) = delete;
  void* data() const { return data_; }

 private:
  Device& device_;
  std::int64_t bytes_;
  void* data_;
};

[[noreturn]] void fail(const RankPlan& plan, int peer, std::uint64_t sequence, const std::string& what) {
  HS_THROW(CommError, "loopback peer data for rank " + std::to_string(plan.rank) + ": operation #" +
                          std::to_string(sequence) + " from peer " + std::to_string(peer) + ": " + what);
}

class HybridshardPeers {
 public:
  HybridshardPeers(const RankPlan& plan, Device& device, std::uint32_t version, const PlanOptions& options)
      : plan_(plan), device_(device), version_(version), options_(options) {
    for (const Round& round : plan_.rounds) {
      for (const Message& message : round.recvs) {
        if (message.peer != plan_.rank && message.bytes > 0) ++outstanding_;
      }
    }
  }

  void fill(int peer, std::uint64_t sequence, void* dst, std::size_t bytes) {
    if (sequence >= plan_.rounds.size()) {
      fail(plan_, peer, sequence, "the plan has only " + std::to_string(plan_.rounds.size()) + " rounds");
    }
    if (peer < 0 || peer >= plan_.train.world_size() || peer == plan_.rank) {
      fail(plan_, peer, sequence, "not a peer of this rank");
    }
    const RankPlan& sender = plan_of(peer);
    const Message* message = nullptr;
    for (const Message& candidate : sender.rounds[sequence].sends) {
      if (candidate.peer == plan_.rank) message = &candidate;
    }
    if (message == nullptr || static_cast<std::size_t>(message->bytes) != bytes) {
      fail(plan_, peer, sequence,
           "this rank expects " + std::to_string(bytes) + " bytes but the peer's plan sends " +
               (message == nullptr ? std::string("nothing") : std::to_string(message->bytes) + " bytes"));
    }
    std::vector<void*> bases;
    for (const auto& allocation : buffers_of(peer, sender)) bases.push_back(allocation->data());
    device_.copy_pieces(message->pieces, bases, nullptr, dst);
    device_.synchronize();
    if (--outstanding_ <= 0) buffers_.clear();  // every message has been made: give the memory back
  }

 private:
  const RankPlan& plan_of(int peer) {
    auto found = plans_.find(peer);
    if (found == plans_.end()) {
      RankPlan made = make_rank_plan(plan_.spec, plan_.train, plan_.inference, peer, options_);
      if (made.chunk_bytes != plan_.chunk_bytes && made.chunk_bytes > 0) {
        // Other options than the plan's: chunk_bytes is bucket_bytes split over the job's busiest pair count, so
        // that count and then the plan's bucket size follow from the two chunk sizes. Checked again below.
        const std::int64_t pairs = std::max<std::int64_t>(1, options_.bucket_bytes / made.chunk_bytes);
        PlanOptions recovered = options_;
        recovered.bucket_bytes = plan_.chunk_bytes * pairs;
        made = make_rank_plan(plan_.spec, plan_.train, plan_.inference, peer, recovered);
        if (made.chunk_bytes == plan_.chunk_bytes) options_ = recovered;
      }
      if (made.chunk_bytes != plan_.chunk_bytes) {
        HS_THROW(ConfigError, "make_peer_data: rank " + std::to_string(peer) + "'s plan has chunk_bytes " +
                                  std::to_string(made.chunk_bytes) + " but rank " + std::to_string(plan_.rank) +
                                  "'s has " + std::to_string(plan_.chunk_bytes) +
                                  " (pass the PlanOptions the plan was made with)");
      }
      found = plans_.emplace(peer, std::move(made)).first;
    }
    return found->second;
  }

  const std::vector<std::unique_ptr<DeviceAllocation>>& buffers_of(int peer, const RankPlan& sender) {
    auto found = buffers_.find(peer);
    if (found == buffers_.end()) {
      std::vector<std::unique_ptr<DeviceAllocation>> made;
      for (const BufferLayout& layout : sender.train_buffers) {
        made.push_back(std::make_unique<DeviceAllocation>(device_, layout.bytes));
        if (layout.bytes > 0) device_.generate(layout, version_, made.back()->data());
      }
      found = buffers_.emplace(peer, std::move(made)).first;
    }
    return found->second;
  }

  RankPlan plan_;
  Device& device_;
  std::uint32_t version_;
  PlanOptions options_;
  std::int64_t outstanding_ = 0;
  std::map<int, RankPlan> plans_;
  std::map<int, std::vector<std::unique_ptr<DeviceAllocation>>> buffers_;
};

class SeedPeers {
 public:
  SeedPeers(const RankPlan& plan, Device& device, std::uint32_t version)
      : plan_(plan),
        device_(device),
        version_(version),
        topology_(transition_detail::seed_topology(plan.train, plan.inference, plan.rank)) {
    const TrainLayout::Coord coord = plan_.train.coord(plan_.rank);
    const std::vector<std::vector<BufferLayout>>& own = stages_of(coord.tp_rank);
    if (plan_.train.pp > 1) {
      for (int pp_rank = 0; pp_rank < plan_.train.pp; ++pp_rank) {
        for (int chunk = 0; chunk < plan_.train.vpp; ++chunk) operations_.push_back({true, pp_rank, chunk, -1});
      }
    }
    if (topology_.micro_dp_size > 1) {
      const BufferLayout inference = inference_param_buffer(plan_.spec, plan_.inference, topology_.inference_tp_rank);
      for (const transition_detail::SeedTensor& entry :
           transition_detail::seed_schedule(plan_.spec, plan_.train, own, inference)) {
        if (entry.tp_class == transition_detail::TpClass::kReplicated) continue;
        operations_.push_back({false, entry.pp_rank, entry.chunk, entry.tensor});
      }
    }
  }

  void fill(int peer, std::uint64_t sequence, void* dst, std::size_t bytes) {
    if (sequence >= operations_.size()) {
      fail(plan_, peer, sequence, "the seed's enter has only " + std::to_string(operations_.size()) + " operations");
    }
    if (peer < 0 || peer >= plan_.train.world_size() || peer == plan_.rank) {
      fail(plan_, peer, sequence, "not a peer of this rank");
    }
    const Operation& operation = operations_[sequence];
    const TrainLayout::Coord mine = plan_.train.coord(plan_.rank);
    const TrainLayout::Coord theirs = plan_.train.coord(peer);
    if (operation.broadcast) {
      // The root of stage `pp_rank`'s broadcast in this rank's pipeline group.
      if (theirs.tp_rank != mine.tp_rank || theirs.dp_rank != mine.dp_rank || theirs.pp_rank != operation.pp_rank) {
        fail(plan_, peer, sequence,
             "the broadcast of stage " + std::to_string(operation.pp_rank) + " chunk " +
                 std::to_string(operation.chunk) + " does not come from this peer");
      }
      const BufferLayout& layout = stages_of(theirs.tp_rank)[operation.pp_rank][operation.chunk];
      if (static_cast<std::size_t>(layout.bytes) != bytes) {
        fail(plan_, peer, sequence,
             "the broadcast wants " + std::to_string(bytes) + " bytes, the stage has " + std::to_string(layout.bytes));
      }
      device_.generate(layout, version_, dst);
    } else {
      // A member of this rank's micro data-parallel group contributes its shard of the tensor.
      if (theirs.pp_rank != mine.pp_rank || theirs.dp_rank != mine.dp_rank ||
          theirs.tp_rank / topology_.micro_dp_size != mine.tp_rank / topology_.micro_dp_size) {
        fail(plan_, peer, sequence, "the peer is not in this rank's micro data-parallel group");
      }
      const BufferLayout& stage = stages_of(theirs.tp_rank)[operation.pp_rank][operation.chunk];
      BufferLayout single;
      single.name = stage.name;
      single.dtype = stage.dtype;
      single.pp_rank = stage.pp_rank;
      single.vpp_chunk = stage.vpp_chunk;
      LocalTensor tensor = stage.tensors.at(static_cast<std::size_t>(operation.tensor));
      tensor.offset_bytes = 0;
      single.bytes = tensor.numel() * static_cast<std::int64_t>(dtype_size(stage.dtype));
      single.tensors.push_back(std::move(tensor));
      if (static_cast<std::size_t>(single.bytes) != bytes) {
        fail(
            plan_, peer, sequence,
            "the all-gather wants " + std::to_string(bytes) + " bytes, the tensor has " + std::to_string(single.bytes));
      }
      device_.generate(single, version_, dst);
    }
    device_.synchronize();
  }

 private:
  struct Operation {
    bool broadcast = false;
    int pp_rank = 0;
    int chunk = 0;
    int tensor = -1;
  };

  const std::vector<std::vector<BufferLayout>>& stages_of(int tp_rank) {
    auto found = stages_.find(tp_rank);
    if (found == stages_.end()) {
      std::vector<std::vector<BufferLayout>> stages;
      for (int pp_rank = 0; pp_rank < plan_.train.pp; ++pp_rank) {
        stages.push_back(train_param_buffers(plan_.spec, plan_.train, tp_rank, pp_rank));
      }
      found = stages_.emplace(tp_rank, std::move(stages)).first;
    }
    return found->second;
  }

  RankPlan plan_;
  Device& device_;
  std::uint32_t version_;
  transition_detail::SeedTopology topology_;
  std::map<int, std::vector<std::vector<BufferLayout>>> stages_;  // by tp rank: [pp_rank][chunk]
  std::vector<Operation> operations_;
};

}  // namespace

PeerDataProvider make_peer_data(Strategy strategy, const RankPlan& plan, Device& device, std::uint32_t version,
                                const PlanOptions& options) {
  switch (strategy) {
    case Strategy::kHybridshard: {
      auto peers = std::make_shared<HybridshardPeers>(plan, device, version, options);
      return [peers](int peer, std::uint64_t sequence, void* dst, std::size_t bytes) {
        peers->fill(peer, sequence, dst, bytes);
      };
    }
    case Strategy::kSeed: {
      if (!strategy_applies(Strategy::kSeed, plan.spec, plan.train, plan.inference)) {
        HS_THROW(ConfigError, "make_peer_data: the seed strategy does not apply to train tp " +
                                  std::to_string(plan.train.tp) + " -> inference tp " +
                                  std::to_string(plan.inference.tp));
      }
      auto peers = std::make_shared<SeedPeers>(plan, device, version);
      return [peers](int peer, std::uint64_t sequence, void* dst, std::size_t bytes) {
        peers->fill(peer, sequence, dst, bytes);
      };
    }
  }
  HS_THROW(ConfigError, "make_peer_data: unknown strategy");
}

PeerBufferSource make_peer_buffers(const RankPlan& plan, Device& device, std::uint32_t version) {
  const auto layouts = [spec = plan.spec, train = plan.train](int peer) {
    return train_param_buffers(spec, train, train.coord(peer));
  };
  PeerBufferSource source;
  source.sizes = [layouts](int peer) {
    std::vector<std::int64_t> sizes;
    for (const BufferLayout& layout : layouts(peer)) sizes.push_back(layout.bytes);
    return sizes;
  };
  source.fill = [layouts, &device, version](int peer, int buffer, void* dst, std::size_t bytes) {
    const std::vector<BufferLayout> buffers = layouts(peer);
    const BufferLayout& layout = buffers.at(static_cast<std::size_t>(buffer));
    if (static_cast<std::int64_t>(bytes) != layout.bytes) {
      HS_THROW(CommError, "loopback peer buffers: rank " + std::to_string(peer) + "'s buffer " +
                              std::to_string(buffer) + " has " + std::to_string(layout.bytes) + " bytes, asked for " +
                              std::to_string(bytes));
    }
    device.generate(layout, version, dst);
  };
  return source;
}

}  // namespace hybridshard::core
