// The weight transition between the train layout and the inference layout on one rank: enter (train -> rollout)
// and exit (rollout -> train), by one of two strategies.
//
//  - kHybridshard: runs the RankPlan. Allocates the inference buffer and zero-fills its padding. Peers whose train
//    buffers this rank's device can read (Transport, Communicator::share_memory: same host, peer access) are landed
//    directly: one landing pass reads every piece from where it lives (own train buffer or a peer's) and writes it
//    once into its final place, with no bucket, pack or unpack. With the other peers, per round it packs sends into
//    a staging bucket, exchanges, and scatters receives into place (one kernel each), the local pieces overlapping
//    the exchange. No host copies, no per-tensor temporaries, tp' > tp works.
//  - kSeed: verl's first hybrid engine, step by step, as the baseline: keeps every other pipeline stage's parameter
//    buffers (offloaded to pinned host memory between phases), on enter loads them host -> device, broadcasts each
//    stage's buffers in the pipeline group, all-gathers every tensor-parallel tensor in the micro data-parallel group
//    (tp / tp' consecutive ranks) into per-tensor temporaries and concatenates them (splitting fused QKV group by
//    group and gate/up in two), then copies the result into the inference buffer (vLLM's sync_model_weights); on exit
//    offloads the other stages to the host again. Applies only when tp % tp' == 0.
//
// Every allocation goes through FlatBuffer (events for residency) and every copy emits a kTransfer event.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/reshard_plan.h"

namespace hybridshard::core {

enum class Strategy : std::uint8_t { kHybridshard, kSeed };

// How kHybridshard moves the bytes of other ranks. kAuto: read directly from every peer this rank's device can
// address (the peer path), send/recv with the rest; kPeer: the same, and a peer that cannot be read directly is a
// fallback worth a log line and an event (never silent); kSendRecv: send/recv with every peer (the cross-host path,
// forced). The seed ignores it.
enum class Transport : std::uint8_t { kAuto, kPeer, kSendRecv };
std::string_view transport_name(Transport transport);  // "auto", "peer", "sendrecv"
std::optional<Transport> parse_transport(std::string_view name);

struct TransitionOptions {
  Transport transport = Transport::kAuto;
};
std::string_view strategy_name(Strategy strategy);  // "hybridshard", "seed"
bool strategy_applies(Strategy strategy, const TrainLayout& train, const InferenceLayout& inference);
// The same, knowing the model: kSeed also needs every inference shard's vocabulary rows inside the rows its micro
// data-parallel group holds (the seed hands whole gathered shards to vLLM, so Megatron's padding to
// make_vocab_size_divisible_by * tp and vLLM's to pad_vocab_to must agree on where shards start, or tp' == 1), and
// does not apply to models with experts (the seed has no MoE path; MoE layouts run kHybridshard only).
bool strategy_applies(Strategy strategy, const ModelSpec& spec, const TrainLayout& train,
                      const InferenceLayout& inference);

// The inference tensor-parallel rank whose shard `rank` holds after enter. kHybridshard: the inference layout's
// (rank % tp'). kSeed: verl builds vLLM's tensor-parallel groups strided inside each train tp group (micro
// data-parallel rank fastest), so `rank` holds shard (train tp rank) / (tp / tp'). Both agree when tp' == tp or
// tp' == 1. The seed's inference buffer has RankPlan::inference_buffer's offsets and bytes (every shard does).
int inference_tp_rank_of(Strategy strategy, const TrainLayout& train, const InferenceLayout& inference, int rank);

// free: drop the inference shards (and, for the seed, nothing else is kept); offload: keep them in pinned host memory.
// The next enter never copies an offloaded shard back: a train step ran in between, so it is stale. enter allocates
// the device copy afresh, frees the host copy and overwrites every byte (tensors, vocabulary padding, alignment gaps).
enum class ExitPolicy : std::uint8_t { kFree, kOffload };
std::string_view exit_policy_name(ExitPolicy policy);

struct TransitionStats {
  double seconds = 0;
  // Received counts every byte of another rank, sent or read directly (peer path); sent, what this rank sent.
  std::int64_t bytes_network_received = 0;
  std::int64_t bytes_network_sent = 0;
  std::int64_t bytes_host_to_device = 0;
  std::int64_t bytes_device_to_host = 0;
  std::int64_t bytes_device_to_device = 0;
  std::int64_t peak_extra_device_bytes = 0;  // measured through Device::bytes_in_use(kGpu) above the start
};

class Transition {
 public:
  virtual ~Transition() = default;

  // `train_params` are this rank's parameter buffers in RankPlan::train_buffers order, resident on the device.
  // Returns the inference shard (RankPlan::inference_buffer layout), resident on the device.
  virtual FlatBuffer& enter(const std::vector<FlatBuffer*>& train_params) = 0;
  virtual void exit(ExitPolicy policy) = 0;

  virtual FlatBuffer* inference_params() = 0;  // nullptr before the first enter
  virtual const TransitionStats& last_enter() const = 0;
  virtual const TransitionStats& last_exit() const = 0;
  virtual const RankPlan& plan() const = 0;

  void set_iteration(int iteration) { iteration_ = iteration; }

 protected:
  int iteration_ = -1;
};

// Collective for kSeed (it creates the pipeline and micro data-parallel groups with world.subgroup()).
std::unique_ptr<Transition> make_transition(Strategy strategy, RankPlan plan, Communicator& world, Device& device,
                                            EventSink* events, TransitionOptions options = {});

// For the loopback communicator: what each peer of `rank` would send it during one enter of `strategy`, when every
// train rank's parameters are weight_value(..., version). Knows the strategy's operation order. `options` should be
// those `plan` was made with (peers' plans are made from them); otherwise the bucket size is recovered from
// plan.chunk_bytes, and a peer plan whose chunks still differ throws ConfigError.
PeerDataProvider make_peer_data(Strategy strategy, const RankPlan& plan, Device& device, std::uint32_t version,
                                const PlanOptions& options = {});

// For the loopback communicator's peer path: every peer's train parameter buffers at `version` (RankPlan::
// train_buffers of the peer's plan), made with Device::generate.
PeerBufferSource make_peer_buffers(const RankPlan& plan, Device& device, std::uint32_t version);

}  // namespace hybridshard::core
