// Transitions without a network: names and applicability, the seed's concatenation checked against the reference on
// the host, argument checks, and one rank on the loopback communicator with make_peer_data reproducing the reference
// for both strategies.
#include "hybridshard/core/transition.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"
#include "transition/transition_internal.h"
#include "transition_support.h"

namespace hybridshard::core {
namespace {

using testing::LayoutCase;
namespace detail = transition_detail;

constexpr std::int64_t kCapacity = std::int64_t{1} << 30;

LayoutCase find_case(const std::string& name) {
  for (const LayoutCase& layout : testing::layout_matrix()) {
    if (layout.name == name) return layout;
  }
  ADD_FAILURE() << "no layout " << name;
  return {};
}

TEST(TransitionTest, names_are_the_record_formats) {
  EXPECT_EQ(strategy_name(Strategy::kHybridshard), "hybridshard");
  EXPECT_EQ(strategy_name(Strategy::kSeed), "seed");
  EXPECT_EQ(exit_policy_name(ExitPolicy::kFree), "free");
  EXPECT_EQ(exit_policy_name(ExitPolicy::kOffload), "offload");
}

TEST(TransitionTest, seed_applies_only_when_train_tp_is_a_multiple_of_inference_tp) {
  const LayoutCase down = find_case("tp4_to_tp2");
  const LayoutCase up = find_case("tp1_dp2_to_tp2");
  const LayoutCase three = find_case("qwen2_tp2_pp3_to_tp3");
  EXPECT_TRUE(strategy_applies(Strategy::kSeed, down.train, down.inference()));
  EXPECT_TRUE(strategy_applies(Strategy::kSeed, down.spec, down.train, down.inference()));
  EXPECT_FALSE(strategy_applies(Strategy::kSeed, up.train, up.inference()));
  EXPECT_FALSE(strategy_applies(Strategy::kSeed, three.spec, three.train, three.inference()));
  for (const LayoutCase& layout : {down, up, three}) {
    EXPECT_TRUE(strategy_applies(Strategy::kHybridshard, layout.spec, layout.train, layout.inference()));
  }
  InferenceLayout other_world = down.inference();
  other_world.world_size = 8;
  EXPECT_FALSE(strategy_applies(Strategy::kHybridshard, down.train, other_world));
}

TEST(TransitionTest, seed_needs_matching_vocabulary_shard_boundaries) {
  // vocab 130: Megatron (tp 2) pads to 256 and shards at row 128, vLLM (tp' 2) pads to 192 and shards at row 96.
  const LayoutCase mismatch = find_case("vocab130_tp2_to_tp2");
  EXPECT_TRUE(strategy_applies(Strategy::kSeed, mismatch.train, mismatch.inference()));
  EXPECT_FALSE(strategy_applies(Strategy::kSeed, mismatch.spec, mismatch.train, mismatch.inference()));
  EXPECT_THROW(detail::seed_vocab_rows(mismatch.spec, mismatch.train, mismatch.inference(), 1), ConfigError);
  // With tp' = 1 the group holds the whole vocabulary.
  const LayoutCase whole = find_case("vocab130_tp2_pp2_to_tp1_fp32");
  EXPECT_TRUE(strategy_applies(Strategy::kSeed, whole.spec, whole.train, whole.inference()));
  const detail::VocabRowCopy copy = detail::seed_vocab_rows(whole.spec, whole.train, whole.inference(), 0);
  EXPECT_EQ(copy.src_row, 0);
  EXPECT_EQ(copy.rows, 130);
}

TEST(TransitionTest, seed_holds_the_shard_of_its_strided_vllm_group) {
  const LayoutCase layout = find_case("tp4_to_tp2");
  const InferenceLayout inference = layout.inference();
  const int seed[] = {0, 0, 1, 1};
  const int hybridshard[] = {0, 1, 0, 1};
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(inference_tp_rank_of(Strategy::kSeed, layout.train, inference, rank), seed[rank]) << rank;
    EXPECT_EQ(inference_tp_rank_of(Strategy::kHybridshard, layout.train, inference, rank), hybridshard[rank]) << rank;
  }
  const detail::SeedTopology topology = detail::seed_topology(layout.train, inference, 3);
  EXPECT_EQ(topology.micro_dp_size, 2);
  EXPECT_EQ(topology.micro_dp_groups, (std::vector<std::vector<int>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(topology.micro_dp_group, 1);
  EXPECT_EQ(topology.pipeline_groups.size(), 4u);
}

TEST(TransitionTest, seed_pipeline_groups_share_tp_and_dp_rank) {
  const LayoutCase layout = find_case("qwen2_tp2_pp3_to_tp3");
  const detail::SeedTopology topology = detail::seed_topology(layout.train, InferenceLayout{2, 6, 64}, 3);
  // rank 3 = (tp 1, dp 0, pp 1); its pipeline group is tp rank 1 on every stage.
  EXPECT_EQ(topology.pipeline_groups[static_cast<std::size_t>(topology.pipeline_group)], (std::vector<int>{1, 3, 5}));
}

// The seed's concatenation (and vLLM's copy), done on the host from the reference's train shards, gives the
// reference's inference shard: checks the pieces, the schedule's name mapping and the vocabulary rows without any
// communicator.
void check_seed_concatenation_on_host(const LayoutCase& layout) {
  SCOPED_TRACE(layout.name);
  const ModelSpec& spec = layout.spec;
  const InferenceLayout inference = layout.inference();
  const int m = layout.train.tp / inference.tp;
  const auto element = static_cast<std::int64_t>(dtype_size(spec.dtype));
  constexpr std::uint32_t kVersion = 7;
  for (int shard = 0; shard < inference.tp; ++shard) {
    const BufferLayout target = inference_param_buffer(spec, inference, shard);
    std::vector<std::uint8_t> actual(static_cast<std::size_t>(target.bytes), 0);
    // Train buffers of the group's tp ranks, every stage and chunk: [member][pp][chunk].
    std::vector<std::vector<std::vector<BufferLayout>>> layouts;
    std::vector<std::vector<std::vector<std::vector<std::uint8_t>>>> bytes;
    for (int member = 0; member < m; ++member) {
      const int tp_rank = shard * m + member;
      layouts.emplace_back();
      bytes.emplace_back();
      for (int pp_rank = 0; pp_rank < layout.train.pp; ++pp_rank) {
        layouts.back().push_back(train_param_buffers(spec, layout.train, tp_rank, pp_rank));
        bytes.back().emplace_back();
        for (int chunk = 0; chunk < layout.train.vpp; ++chunk) {
          bytes.back().back().push_back(reference::expected_train_buffer(spec, layout.train, tp_rank, pp_rank, chunk,
                                                                         kVersion, layouts.back().back()[chunk]));
        }
      }
    }
    const detail::VocabRowCopy vocab = detail::seed_vocab_rows(spec, layout.train, inference, shard);
    for (const detail::SeedTensor& entry : detail::seed_schedule(spec, layout.train, layouts[0], target)) {
      if (entry.inference_tensor < 0) continue;
      const LocalTensor& tensor = layouts[0][entry.pp_rank][entry.chunk].tensors[entry.tensor];
      const LocalTensor& out = target.tensors[static_cast<std::size_t>(entry.inference_tensor)];
      const std::int64_t shard_bytes = tensor.numel() * element;
      const bool gather = entry.tp_class != detail::TpClass::kReplicated;
      const int members = gather ? m : 1;
      std::vector<std::uint8_t> stacked;
      for (int member = 0; member < members; ++member) {
        const auto& source = bytes[member][entry.pp_rank][entry.chunk];
        stacked.insert(stacked.end(), source.begin() + tensor.offset_bytes,
                       source.begin() + tensor.offset_bytes + shard_bytes);
      }
      std::vector<std::uint8_t> cat(stacked.size(), 0);
      for (const Piece& piece : detail::seed_concat_pieces(spec, tensor, entry.tp_class, members)) {
        for (std::int64_t row = 0; row < piece.rows; ++row) {
          std::memcpy(&cat[piece.dst_offset + row * piece.dst_stride],
                      &stacked[piece.src_offset + row * piece.src_stride], piece.row_bytes);
        }
      }
      if (entry.tp_class == detail::TpClass::kVocabRows) {
        std::memcpy(&actual[out.offset_bytes + vocab.dst_row * out.cols * element],
                    &cat[vocab.src_row * tensor.cols * element], vocab.rows * tensor.cols * element);
      } else {
        ASSERT_EQ(static_cast<std::int64_t>(cat.size()), out.numel() * element) << out.name;
        std::memcpy(&actual[out.offset_bytes], cat.data(), cat.size());
      }
    }
    const std::vector<std::uint8_t> expected =
        reference::expected_inference_buffer(spec, inference, shard, kVersion, target);
    EXPECT_EQ(reference::first_difference(target, expected, actual.data(), actual.size()), "") << "shard " << shard;
  }
}

TEST(TransitionTest, seed_concatenation_rebuilds_the_reference_shards) {
  for (const LayoutCase& layout : testing::layout_matrix()) {
    if (!strategy_applies(Strategy::kSeed, layout.spec, layout.train, layout.inference())) continue;
    check_seed_concatenation_on_host(layout);
  }
}

TEST(TransitionTest, zero_ranges_cover_alignment_gaps_and_padding) {
  RankPlan plan;
  plan.inference_buffer.dtype = DType::kFloat32;
  LocalTensor a;
  a.rows = 3;
  a.offset_bytes = 0;
  LocalTensor b;
  b.rows = 10;
  b.offset_bytes = 256;
  plan.inference_buffer.tensors = {a, b};
  plan.inference_buffer.bytes = 512;
  plan.zero_fill = {{256 + 32, 8}};  // padding rows 8 and 9 of b
  const std::vector<ByteRange> ranges = detail::zero_ranges(plan);
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0].offset, 12);
  EXPECT_EQ(ranges[0].bytes, 244);
  EXPECT_EQ(ranges[1].offset, 288);
  EXPECT_EQ(ranges[1].bytes, 224);
}

// ---- One rank, loopback ----

PeerDataProvider no_peers() {
  return [](int peer, std::uint64_t sequence, void*, std::size_t) {
    ADD_FAILURE() << "no peer should be asked (peer " << peer << ", sequence " << sequence << ")";
  };
}

TEST(TransitionTest, make_transition_rejects_what_does_not_fit) {
  const LayoutCase layout = find_case("vocab130_tp2_to_tp2");
  auto device = make_cpu_device(kCapacity);
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, layout.inference(), 0);
  auto world = make_loopback_communicator(0, 2, *device, no_peers());
  EXPECT_THROW(make_transition(Strategy::kSeed, plan, *world, *device, nullptr), ConfigError);
  auto wrong_size = make_loopback_communicator(0, 3, *device, no_peers());
  EXPECT_THROW(make_transition(Strategy::kHybridshard, plan, *wrong_size, *device, nullptr), ConfigError);
  auto wrong_rank = make_loopback_communicator(1, 2, *device, no_peers());
  EXPECT_THROW(make_transition(Strategy::kHybridshard, plan, *wrong_rank, *device, nullptr), ConfigError);
}

TEST(TransitionTest, enter_rejects_train_buffers_that_do_not_match_the_plan) {
  LayoutCase layout{"single", testing::tiny_spec(Architecture::kLlama, DType::kBFloat16, 2),
                    testing::train_layout(1, 1, 1, 1), 1};
  auto device = make_cpu_device(kCapacity);
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, layout.inference(), 0);
  auto world = make_loopback_communicator(0, 1, *device, no_peers());
  for (Strategy strategy : {Strategy::kHybridshard, Strategy::kSeed}) {
    auto transition = make_transition(strategy, plan, *world, *device, nullptr);
    EXPECT_THROW(transition->enter({}), Error);
    FlatBuffer offloaded(plan.train_buffers[0], BufferKind::kParams, *device, nullptr, 0);
    offloaded.move_to(Residency::kCpu, false);
    EXPECT_THROW(transition->enter({&offloaded}), Error);
    // Exit before any enter is a no-op.
    transition->exit(ExitPolicy::kFree);
    EXPECT_EQ(transition->inference_params(), nullptr);
  }
}

TEST(TransitionTest, single_rank_enter_copies_locally_and_exit_returns_every_byte) {
  LayoutCase layout{"single", testing::tiny_spec(Architecture::kQwen2, DType::kFloat32, 2),
                    testing::train_layout(1, 1, 1, 1), 1};
  auto device = make_cpu_device(kCapacity);
  RecordingEventSink events;
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, layout.inference(), 0);
  auto world = make_loopback_communicator(0, 1, *device, no_peers());
  {
    testing::TrainBuffers train(plan, *device, &events);
    train.generate(plan, *device, 3);
    auto transition = make_transition(Strategy::kHybridshard, plan, *world, *device, &events);
    FlatBuffer& shard = transition->enter(train.pointers);
    EXPECT_EQ(testing::compare_with_reference(layout.spec, layout.inference(), 0, 3, *device, shard), "");
    EXPECT_EQ(transition->last_enter().bytes_network_received, 0);
    EXPECT_EQ(transition->last_enter().bytes_device_to_device, plan.bytes_local());
    EXPECT_EQ(testing::transfer_bytes(events.events(), TransferPath::kDeviceToDevice, "enter.local"),
              plan.bytes_local());
    transition->exit(ExitPolicy::kFree);
  }
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
  EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 0);
}

// One rank of a larger job on the loopback communicator, peers' messages made by make_peer_data.
void check_loopback(const LayoutCase& layout, Strategy strategy, int rank) {
  SCOPED_TRACE(layout.name + " " + std::string(strategy_name(strategy)) + " rank " + std::to_string(rank));
  constexpr std::uint32_t kVersion = 11;
  const InferenceLayout inference = layout.inference();
  PlanOptions options;
  options.bucket_bytes = 4096;
  auto device = make_cpu_device(kCapacity);
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, inference, rank, options);
  auto world = make_loopback_communicator(rank, layout.train.world_size(), *device,
                                          rank == 0 ? make_peer_data(strategy, plan, *device, kVersion, options)
                                                    // Without the options: recovered from plan.chunk_bytes.
                                                    : make_peer_data(strategy, plan, *device, kVersion));
  testing::TrainBuffers train(plan, *device, nullptr);
  train.generate(plan, *device, kVersion);
  auto transition = make_transition(strategy, plan, *world, *device, nullptr);
  const int shard = inference_tp_rank_of(strategy, layout.train, inference, rank);
  for (int iteration = 0; iteration < 2; ++iteration) {  // the second replays the cached peer data
    world->reset_sequence();
    FlatBuffer& buffer = transition->enter(train.pointers);
    EXPECT_EQ(testing::compare_with_reference(layout.spec, inference, shard, kVersion, *device, buffer), "")
        << "iteration " << iteration;
    transition->exit(ExitPolicy::kFree);
  }
}

TEST(TransitionTest, loopback_rank_with_peer_data_reproduces_the_reference) {
  for (const char* name : {"tp2_to_tp1_bf16", "pp2_vpp2_to_tp2", "kv1_tp1_dp4_to_tp4", "vocab130_tp2_pp2_to_tp1_fp32",
                           "tp4_to_tp2", "qwen2_fp32_tp2_pp2_vpp2_to_tp4", "tied_pp2_to_tp2"}) {
    const LayoutCase layout = find_case(name);
    for (int rank : {0, layout.train.world_size() - 1}) {
      check_loopback(layout, Strategy::kHybridshard, rank);
      if (strategy_applies(Strategy::kSeed, layout.spec, layout.train, layout.inference())) {
        check_loopback(layout, Strategy::kSeed, rank);
      }
    }
  }
}

// A loopback communicator that refuses one round in queue_exchange (as a communicator may refuse a round before
// posting it) and counts finish_queued calls; everything else is the loopback's.
class RefusesARound final : public Communicator {
 public:
  RefusesARound(Communicator& inner, int refused) : inner_(inner), refused_(refused) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  Backend backend() const override { return inner_.backend(); }
  std::chrono::milliseconds timeout() const override { return inner_.timeout(); }
  void all_gather(const void* send, void* recv, std::size_t bytes) override { inner_.all_gather(send, recv, bytes); }
  void broadcast(void* data, std::size_t bytes, int root) override { inner_.broadcast(data, bytes, root); }
  void all_reduce_sum(float* data, std::size_t count) override { inner_.all_reduce_sum(data, count); }
  void exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs) override {
    inner_.exchange(sends, recvs);
  }
  void barrier() override { inner_.barrier(); }
  bool queues_exchanges() const override { return inner_.queues_exchanges(); }
  void queue_exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs, void* after,
                      void* then) override {
    if (queued_++ == refused_) HS_THROW(CommError, "round " + std::to_string(refused_) + " refused");
    inner_.queue_exchange(sends, recvs, after, then);
  }
  std::vector<double> finish_queued() override {
    ++finished_;
    return inner_.finish_queued();
  }
  PeerMemory share_memory(std::span<void* const> buffers, std::span<const std::int64_t> bytes,
                          std::span<const int> wanted) override {
    return inner_.share_memory(buffers, bytes, wanted);
  }
  std::unique_ptr<Communicator> subgroup(const std::vector<int>& ranks) override { return inner_.subgroup(ranks); }
  void abort() override { inner_.abort(); }
  int finished() const { return finished_; }

 private:
  Communicator& inner_;
  int refused_;
  int queued_ = 0;
  int finished_ = 0;
};

// A round refused after others were queued: enter waits for the queued ones (finish_queued) before it gives its
// buckets back and reports the refusal; the same transition enters right afterwards and is bit-exact.
TEST(TransitionTest, a_refused_round_waits_for_the_queued_ones_before_the_error) {
  const LayoutCase layout = find_case("tp2_to_tp1_bf16");
  constexpr std::uint32_t kVersion = 13;
  PlanOptions options;
  options.bucket_bytes = 4096;  // many rounds
  auto device = make_cpu_device(kCapacity);
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, layout.inference(), 0, options);
  ASSERT_GE(plan.rounds.size(), 3u);
  auto loopback = make_loopback_communicator(0, layout.train.world_size(), *device,
                                             make_peer_data(Strategy::kHybridshard, plan, *device, kVersion, options));
  RefusesARound world(*loopback, 2);
  testing::TrainBuffers train(plan, *device, nullptr);
  train.generate(plan, *device, kVersion);
  auto transition = make_transition(Strategy::kHybridshard, plan, world, *device, nullptr, {Transport::kSendRecv});
  try {
    transition->enter(train.pointers);
    FAIL() << "no error";
  } catch (const CommError& error) {
    EXPECT_NE(std::string(error.what()).find("round 2 refused"), std::string::npos) << error.what();
  }
  EXPECT_EQ(world.finished(), 1);
  // Nothing was left half done: the next enter moves every byte.
  loopback->reset_sequence();
  FlatBuffer& shard = transition->enter(train.pointers);
  EXPECT_EQ(testing::compare_with_reference(layout.spec, layout.inference(), layout.inference().coord(0).tp_rank,
                                            kVersion, *device, shard),
            "");
  EXPECT_EQ(world.finished(), 2);
}

// The peer path on the loopback: the peers' train buffers stand in device memory (make_peer_buffers) and enter reads
// them directly, once: nothing is sent, no peer data is asked for, no staging is allocated.
void check_loopback_peer_path(const LayoutCase& layout, int rank) {
  SCOPED_TRACE(layout.name + " rank " + std::to_string(rank));
  constexpr std::uint32_t kVersion = 12;
  const InferenceLayout inference = layout.inference();
  auto device = make_cpu_device(kCapacity);
  RecordingEventSink events;
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, inference, rank);
  auto world = make_loopback_communicator(rank, layout.train.world_size(), *device, no_peers(),
                                          make_peer_buffers(plan, *device, kVersion));
  testing::TrainBuffers train(plan, *device, nullptr);
  train.generate(plan, *device, kVersion);
  auto transition = make_transition(Strategy::kHybridshard, plan, *world, *device, &events, {Transport::kPeer});
  for (int iteration = 0; iteration < 2; ++iteration) {
    world->reset_sequence();
    events.clear();
    FlatBuffer& buffer = transition->enter(train.pointers);
    EXPECT_EQ(testing::compare_with_reference(layout.spec, inference, inference.coord(rank).tp_rank, kVersion, *device,
                                              buffer),
              "")
        << "iteration " << iteration;
    const TransitionStats& stats = transition->last_enter();
    EXPECT_EQ(stats.bytes_network_received, plan.bytes_received());
    EXPECT_EQ(stats.bytes_network_sent, 0);
    EXPECT_EQ(stats.bytes_device_to_device, plan.bytes_local());
    EXPECT_EQ(stats.peak_extra_device_bytes, plan.inference_buffer.bytes);
    EXPECT_EQ(testing::transfer_bytes(events.events(), TransferPath::kNetwork, "enter.peer.recv"),
              plan.bytes_received());
    EXPECT_EQ(testing::transfer_bytes(events.events(), TransferPath::kNetwork, "enter.round"), 0);
    transition->exit(ExitPolicy::kFree);
  }
}

TEST(TransitionTest, loopback_peer_path_reads_the_peers_train_buffers_once) {
  for (const char* name :
       {"tp2_to_tp1_bf16", "pp2_vpp2_to_tp2", "kv1_tp1_dp4_to_tp4", "vocab130_tp2_pp2_to_tp1_fp32", "tp4_to_tp2",
        "qwen2_fp32_tp2_pp2_vpp2_to_tp4", "tied_pp2_to_tp2", "moe_ep2_dp2_to_tp2", "moe_fp32_pp2_ep2_dp2_to_tp1"}) {
    const LayoutCase layout = find_case(name);
    for (int rank : {0, layout.train.world_size() - 1}) check_loopback_peer_path(layout, rank);
  }
}

// Asked for the peer path where no peer can be read directly: send/recv, right bytes, and an event saying so.
TEST(TransitionTest, peer_transport_without_peer_memory_falls_back_to_send_recv_and_says_so) {
  const LayoutCase layout = find_case("tp2_to_tp1_bf16");
  constexpr std::uint32_t kVersion = 13;
  auto device = make_cpu_device(kCapacity);
  RecordingEventSink events;
  const RankPlan plan = make_rank_plan(layout.spec, layout.train, layout.inference(), 0);
  auto world =
      make_loopback_communicator(0, 2, *device, make_peer_data(Strategy::kHybridshard, plan, *device, kVersion));
  testing::TrainBuffers train(plan, *device, nullptr);
  train.generate(plan, *device, kVersion);
  auto transition = make_transition(Strategy::kHybridshard, plan, *world, *device, &events, {Transport::kPeer});
  FlatBuffer& buffer = transition->enter(train.pointers);
  EXPECT_EQ(testing::compare_with_reference(layout.spec, layout.inference(), 0, kVersion, *device, buffer), "");
  EXPECT_EQ(transition->last_enter().bytes_network_sent, plan.bytes_sent());
  int fallbacks = 0;
  for (const Event& event : events.events()) {
    if (event.type != EventType::kCheck || event.operation != "enter.transport") continue;
    ++fallbacks;
    EXPECT_TRUE(event.ok);  // the bytes arrive anyway: not a failed check
    EXPECT_EQ(event.peer, 1);
    EXPECT_NE(event.detail.find("no peer buffer source"), std::string::npos) << event.detail;
  }
  EXPECT_EQ(fallbacks, 1);
}

TEST(TransitionTest, transport_names_round_trip) {
  for (Transport transport : {Transport::kAuto, Transport::kPeer, Transport::kSendRecv}) {
    EXPECT_EQ(parse_transport(transport_name(transport)), transport);
  }
  EXPECT_FALSE(parse_transport("nvlink").has_value());
}

}  // namespace
}  // namespace hybridshard::core
