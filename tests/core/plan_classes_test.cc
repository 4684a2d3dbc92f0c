// Plans at scale: the classes of ranks that share a plan shape, checked on a sample of every class of 16384-rank
// jobs as the layout matrix checks every rank of small ones (every inference byte written exactly once, every send
// matched by the peer's receive), and on every rank of a smaller job (each member's plan is its representative's up
// to the replica index of its peers).
#include "hybridshard/core/plan_classes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "hybridshard/core/reshard_plan.h"
#include "layout_test_support.h"

namespace hybridshard::core {
namespace {

using testing::small_model;

struct ScaleCase {
  std::string name;
  ModelSpec spec;
  TrainLayout train;
  int inference_tp = 1;
  bool expert_parallel = false;
};

void PrintTo(const ScaleCase& c, std::ostream* os) { *os << c.name; }

InferenceLayout inference_of(const ScaleCase& c) {
  return InferenceLayout{
      .tp = c.inference_tp, .world_size = c.train.world_size(), .expert_parallel = c.expert_parallel};
}

ModelSpec moe_model() {
  ModelSpec moe = small_model(Architecture::kQwen3Moe, 4, 8, 2, 300, false, DType::kBFloat16);
  moe.num_experts = 8;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 16;
  moe.decoder_sparse_step = 2;
  return moe;
}

// Plans of one job, made once each.
class PlanCache {
 public:
  explicit PlanCache(const ScaleCase& c) : planner_(c.spec, c.train, inference_of(c), PlanOptions{4096}) {}
  const RankPlan& operator[](int rank) {
    auto found = plans_.find(rank);
    if (found == plans_.end()) found = plans_.emplace(rank, planner_.plan(rank)).first;
    return found->second;
  }

 private:
  ReshardPlanner planner_;
  std::map<int, RankPlan> plans_;
};

void expect_every_byte_written_once(const RankPlan& plan) {
  std::vector<int> written(static_cast<std::size_t>(plan.inference_buffer.bytes), 0);
  const auto mark = [&](std::int64_t offset, std::int64_t rows, std::int64_t row_bytes, std::int64_t stride) {
    for (std::int64_t row = 0; row < rows; ++row) {
      const std::int64_t start = offset + row * stride;
      ASSERT_TRUE(start >= 0 && start + row_bytes <= plan.inference_buffer.bytes) << "rank " << plan.rank;
      for (std::int64_t b = 0; b < row_bytes; ++b) ++written[static_cast<std::size_t>(start + b)];
    }
  };
  for (const ByteRange& range : plan.zero_fill) mark(range.offset, 1, range.bytes, range.bytes);
  for (const Piece& piece : plan.local_pieces) mark(piece.dst_offset, piece.rows, piece.row_bytes, piece.dst_stride);
  for (const Round& round : plan.rounds) {
    for (const Message& message : round.recvs) {
      for (const Piece& piece : message.pieces) mark(piece.dst_offset, piece.rows, piece.row_bytes, piece.dst_stride);
    }
  }
  const auto wrong = std::find_if(written.begin(), written.end(), [](int n) { return n != 1; });
  EXPECT_EQ(wrong, written.end()) << "rank " << plan.rank << ": byte " << (wrong - written.begin()) << " written "
                                  << (wrong == written.end() ? 1 : *wrong) << " times";
  std::int64_t peer_read_bytes = 0;
  for (const PeerPieces& reads : plan.peer_reads) peer_read_bytes += reads.bytes();
  EXPECT_EQ(peer_read_bytes, plan.bytes_received()) << "rank " << plan.rank;
}

// Every message of `plan` has its counterpart, same round and bytes, in the peer's plan.
void expect_messages_matched(const RankPlan& plan, PlanCache& plans) {
  for (std::size_t k = 0; k < plan.rounds.size(); ++k) {
    for (const bool sending : {true, false}) {
      for (const Message& message : sending ? plan.rounds[k].sends : plan.rounds[k].recvs) {
        const RankPlan& peer = plans[message.peer];
        ASSERT_LT(k, peer.rounds.size()) << "rank " << plan.rank << " -> " << message.peer;
        const auto& other = sending ? peer.rounds[k].recvs : peer.rounds[k].sends;
        const auto match =
            std::find_if(other.begin(), other.end(), [&](const Message& m) { return m.peer == plan.rank; });
        ASSERT_NE(match, other.end()) << "rank " << plan.rank << (sending ? " sends to " : " receives from ")
                                      << message.peer << " in round " << k << ", unmatched";
        EXPECT_EQ(match->bytes, message.bytes);
      }
    }
  }
}

// A peer as seen from `rank`: its tp and pp rank and its replica's distance (mod dp) from rank's replica.
std::tuple<int, int, int> relative(const TrainLayout& train, int rank, int peer) {
  const TrainLayout::Coord self = train.coord(rank);
  const TrainLayout::Coord other = train.coord(peer);
  return {other.tp_rank, other.pp_rank, (other.dp_rank - self.dp_rank + train.dp) % train.dp};
}

// `member`'s plan is `representative`'s with every peer moved to the member's replica.
void expect_same_shape(const TrainLayout& train, const RankPlan& representative, const RankPlan& member) {
  SCOPED_TRACE("rank " + std::to_string(member.rank) + " vs representative " + std::to_string(representative.rank));
  EXPECT_EQ(member.inference_buffer.bytes, representative.inference_buffer.bytes);
  EXPECT_EQ(member.bytes_local(), representative.bytes_local());
  EXPECT_EQ(member.local_pieces.size(), representative.local_pieces.size());
  ASSERT_EQ(member.rounds.size(), representative.rounds.size());
  const auto shape = [&train](const RankPlan& plan, const std::vector<Message>& messages) {
    std::vector<std::tuple<int, int, int, std::int64_t, std::size_t>> out;
    for (const Message& m : messages) {
      const auto [t, p, d] = relative(train, plan.rank, m.peer);
      out.emplace_back(t, p, d, m.bytes, m.pieces.size());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  for (std::size_t k = 0; k < member.rounds.size(); ++k) {
    EXPECT_EQ(shape(member, member.rounds[k].sends), shape(representative, representative.rounds[k].sends));
    EXPECT_EQ(shape(member, member.rounds[k].recvs), shape(representative, representative.rounds[k].recvs));
  }
}

void expect_partition(const std::vector<PlanClass>& classes, int world) {
  std::vector<int> seen(static_cast<std::size_t>(world), 0);
  for (const PlanClass& c : classes) {
    ASSERT_FALSE(c.ranks.empty());
    EXPECT_EQ(c.representative, c.ranks.front());
    EXPECT_TRUE(std::is_sorted(c.ranks.begin(), c.ranks.end()));
    for (const int rank : c.ranks) ++seen[static_cast<std::size_t>(rank)];
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; })) << "classes partition the world";
}

std::string case_name(const ::testing::TestParamInfo<ScaleCase>& param) { return param.param.name; }

class PlanAtScaleTest : public ::testing::TestWithParam<ScaleCase> {};

// 16384 ranks: a sample of every class (its first, middle and last member) covers its shard and pairs up with its
// peers, and has the shape of its representative.
TEST_P(PlanAtScaleTest, a_sample_of_every_class_covers_its_shard_and_pairs_up) {
  const ScaleCase& c = GetParam();
  ASSERT_EQ(c.train.world_size(), 16384);
  const std::vector<PlanClass> classes = plan_classes(c.train, inference_of(c));
  expect_partition(classes, c.train.world_size());
  EXPECT_LE(classes.size(), 1024u) << "classes do not grow with the world";
  PlanCache plans(c);
  for (const PlanClass& plan_class : classes) {
    const RankPlan& representative = plans[plan_class.representative];
    for (const int rank :
         {plan_class.ranks.front(), plan_class.ranks[plan_class.ranks.size() / 2], plan_class.ranks.back()}) {
      const RankPlan& plan = plans[rank];
      expect_every_byte_written_once(plan);
      expect_messages_matched(plan, plans);
      expect_same_shape(c.train, representative, plan);
      if (HasFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    World16384, PlanAtScaleTest,
    ::testing::Values(
        ScaleCase{"tiny_tp2_pp4_dp2048_to_tp4", *model_preset("tiny"), {.tp = 2, .pp = 4, .dp = 2048}, 4},
        ScaleCase{"tp2_pp2_dp4096_to_tp8_replica_period_4",
                  small_model(Architecture::kLlama, 4, 8, 4, 1000, false, DType::kBFloat16),
                  {.tp = 2, .pp = 2, .dp = 4096},
                  8},
        ScaleCase{"tied_tp4_pp2_vpp2_dp2048_to_tp1",
                  small_model(Architecture::kQwen2, 4, 8, 4, 300, true, DType::kFloat16),
                  {.tp = 4, .pp = 2, .vpp = 2, .dp = 2048},
                  1},
        ScaleCase{
            "moe_tp1_pp2_dp8192_ep8_to_tp8_vllm_ep", moe_model(), {.tp = 1, .pp = 2, .dp = 8192, .ep = 8}, 8, true},
        ScaleCase{
            "moe_tp2_pp2_dp4096_ep4_etp1_to_tp4", moe_model(), {.tp = 2, .pp = 2, .dp = 4096, .ep = 4, .etp = 1}, 4}),
    case_name);

// Every rank of smaller jobs, including the replicas near the ends whose peers wrap around: each plan has its
// representative's shape.
TEST(PlanClassesTest, every_member_plans_as_its_representative) {
  const std::vector<ScaleCase> cases{
      {"tp2_pp2_dp24_to_tp8",
       small_model(Architecture::kLlama, 4, 8, 4, 1000, false, DType::kBFloat16),
       {.tp = 2, .pp = 2, .dp = 24},
       8},
      {"moe_tp2_pp2_dp12_ep4_etp1_to_tp4", moe_model(), {.tp = 2, .pp = 2, .dp = 12, .ep = 4, .etp = 1}, 4},
      {"moe_tp1_dp24_ep8_to_tp4_vllm_ep", moe_model(), {.tp = 1, .dp = 24, .ep = 8}, 4, true},
  };
  for (const ScaleCase& c : cases) {
    SCOPED_TRACE(c.name);
    const auto classes = plan_classes(c.train, inference_of(c));
    expect_partition(classes, c.train.world_size());
    EXPECT_LT(classes.size(), static_cast<std::size_t>(c.train.world_size()));
    PlanCache plans(c);
    for (const PlanClass& plan_class : classes) {
      for (const int rank : plan_class.ranks) expect_same_shape(c.train, plans[plan_class.representative], plans[rank]);
    }
  }
}

TEST(PlanClassesTest, llama3_70b_tp8_pp4_at_16384_ranks_has_one_class_per_shard) {
  const TrainLayout train{.tp = 8, .pp = 4, .dp = 512};
  const auto classes = plan_classes(train, InferenceLayout{.tp = 4, .world_size = 16384});
  ASSERT_EQ(classes.size(), 32u);
  EXPECT_EQ(rank_ranges(classes.front().ranks), "0-4088 every 8");
  EXPECT_EQ(classes.front().ranks.size(), 512u);
}

TEST(PlanClassesTest, rank_ranges_joins_runs) {
  EXPECT_EQ(rank_ranges({0, 1, 2, 3, 8, 9, 10, 12}), "0-3,8-10,12");
  EXPECT_EQ(rank_ranges({5}), "5");
  EXPECT_EQ(rank_ranges({0, 8, 16, 24, 1000}), "0-24 every 8,1000");
  EXPECT_EQ(rank_ranges({0, 8, 9, 10, 20}), "0,8-10,20");
  EXPECT_EQ(rank_ranges({3, 7}), "3,7");
  EXPECT_EQ(rank_ranges({}), "");
}

TEST(PlanClassesTest, one_rank_plan_does_not_depend_on_the_world) {
  // The same rank's plan in jobs of 64 and 16384 ranks: identical pieces and bytes (the peers stay in the replica).
  const ModelSpec spec = *model_preset("tiny");
  const RankPlan small = make_rank_plan(spec, TrainLayout{.tp = 2, .pp = 4, .dp = 8},
                                        InferenceLayout{.tp = 4, .world_size = 64}, 3, PlanOptions{4096});
  const RankPlan large = make_rank_plan(spec, TrainLayout{.tp = 2, .pp = 4, .dp = 2048},
                                        InferenceLayout{.tp = 4, .world_size = 16384}, 3, PlanOptions{4096});
  EXPECT_EQ(small.chunk_bytes, large.chunk_bytes);
  EXPECT_EQ(small.bytes_received(), large.bytes_received());
  EXPECT_EQ(small.bytes_sent(), large.bytes_sent());
  EXPECT_EQ(small.rounds.size(), large.rounds.size());
}

}  // namespace
}  // namespace hybridshard::core
