#include "hybridshard/core/reshard_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "hybridshard/core/error.h"
#include "hybridshard/core/weight_generator.h"
#include "layout_test_support.h"
#include "reference.h"

namespace hybridshard::core {
namespace {

using testing::small_model;

constexpr std::uint32_t kVersion = 5;

struct PlanCase {
  std::string name;
  ModelSpec spec;
  TrainLayout train;
  int inference_tp = 1;
  std::int64_t bucket_bytes = 0;  // 0: the default
  bool expert_parallel = false;   // vLLM's enable_expert_parallel
};

// How a plan test cuts wires: the default threshold (the tiny models' runs are all below it: one bucketed wire per
// message) or every contiguous run on a wire of its own (in-place receives and sends from the train buffer).
enum class Wires { kDefault, kEveryRun };

void PrintTo(const PlanCase& c, std::ostream* os) { *os << c.name; }

InferenceLayout inference_of(const PlanCase& c) {
  return InferenceLayout{
      .tp = c.inference_tp, .world_size = c.train.world_size(), .expert_parallel = c.expert_parallel};
}

PlanOptions options_of(const PlanCase& c, Wires wires = Wires::kDefault) {
  PlanOptions options;
  if (c.bucket_bytes > 0) options.bucket_bytes = c.bucket_bytes;
  if (wires == Wires::kEveryRun) options.direct_min_bytes = 0;
  return options;
}

std::vector<RankPlan> plan_every_rank(const PlanCase& c, Wires wires = Wires::kDefault) {
  std::vector<RankPlan> plans;
  for (int rank = 0; rank < c.train.world_size(); ++rank) {
    plans.push_back(make_rank_plan(c.spec, c.train, inference_of(c), rank, options_of(c, wires)));
  }
  return plans;
}

// Marks the bytes a piece writes at its destination; false if it writes outside [0, size).
bool mark_destination(const Piece& piece, std::vector<int>& written) {
  for (std::int64_t row = 0; row < piece.rows; ++row) {
    const std::int64_t start = piece.dst_offset + row * piece.dst_stride;
    if (start < 0 || start + piece.row_bytes > static_cast<std::int64_t>(written.size())) return false;
    for (std::int64_t b = 0; b < piece.row_bytes; ++b) ++written[static_cast<std::size_t>(start + b)];
  }
  return true;
}

void copy_piece(const Piece& piece, const std::uint8_t* src, std::int64_t src_size, std::uint8_t* dst,
                std::int64_t dst_size) {
  for (std::int64_t row = 0; row < piece.rows; ++row) {
    const std::int64_t from = piece.src_offset + row * piece.src_stride;
    const std::int64_t to = piece.dst_offset + row * piece.dst_stride;
    ASSERT_TRUE(from >= 0 && from + piece.row_bytes <= src_size) << "piece reads outside its source";
    ASSERT_TRUE(to >= 0 && to + piece.row_bytes <= dst_size) << "piece writes outside its destination";
    std::memcpy(dst + to, src + from, static_cast<std::size_t>(piece.row_bytes));
  }
}

// The message side of a message's pieces must tile [0, bytes) in order, one contiguous run per piece.
void expect_tiles_message(const Message& message, bool sending) {
  std::int64_t next = 0;
  for (const Piece& piece : message.pieces) {
    const std::int64_t offset = sending ? piece.dst_offset : piece.src_offset;
    const std::int64_t stride = sending ? piece.dst_stride : piece.src_stride;
    EXPECT_EQ(offset, next);
    if (piece.rows > 1) {
      EXPECT_EQ(stride, piece.row_bytes);
    }
    EXPECT_EQ(piece.src_buffer >= 0, sending);
    next += piece.bytes();
  }
  EXPECT_EQ(next, message.bytes);
  std::int64_t wires = 0;
  for (const Wire& wire : message.wires) {
    EXPECT_GT(wire.bytes, 0);
    std::int64_t in_wire = 0;
    for (const Piece& piece : wire.pieces) {
      EXPECT_EQ(sending ? piece.dst_offset : piece.src_offset, in_wire) << "wire pieces tile the wire in order";
      EXPECT_EQ(piece.src_buffer >= 0, sending);
      in_wire += piece.bytes();
    }
    EXPECT_EQ(in_wire, wire.bytes);
    EXPECT_EQ(wire.direct(), wire.pieces.size() == 1 && wire.pieces.front().rows == 1);
    wires += wire.bytes;
  }
  EXPECT_EQ(wires, message.bytes) << "wires tile the message";
}

std::vector<PlanCase> plan_cases() {
  const ModelSpec tiny = *model_preset("tiny");
  ModelSpec tied = tiny;
  tied.tie_word_embeddings = true;
  ModelSpec fp32 = tiny;
  fp32.dtype = DType::kFloat32;
  ModelSpec six = small_model(Architecture::kLlama, 6, 6, 3, 750, false, DType::kBFloat16);
  const ModelSpec qwen = small_model(Architecture::kQwen2, 4, 8, 2, 1000, false, DType::kBFloat16);
  const ModelSpec qwen_tied_fp16 = small_model(Architecture::kQwen2, 4, 6, 2, 300, true, DType::kFloat16);
  const ModelSpec mha = small_model(Architecture::kLlama, 4, 4, 4, 256, false, DType::kFloat32);
  ModelSpec round_vocab = tiny;
  round_vocab.vocab_size = 512;
  ModelSpec moe = small_model(Architecture::kQwen3Moe, 4, 8, 2, 300, false, DType::kBFloat16);
  moe.num_experts = 8;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 16;
  moe.decoder_sparse_step = 2;  // layers 1 and 3 have experts, 0 and 2 a dense MLP
  ModelSpec mixtral = moe;
  mixtral.architecture = Architecture::kMixtral;
  mixtral.decoder_sparse_step = 1;
  return {
      {"moe_tp1_dp8_ep8_to_tp8_vllm_ep", moe, {.tp = 1, .dp = 8, .ep = 8}, 8, 4096, true},
      {"moe_tp2_pp2_dp2_ep4_etp1_to_tp4", moe, {.tp = 2, .pp = 2, .dp = 2, .ep = 4, .etp = 1}, 4, 4096},
      {"moe_tp2_dp2_ep2_to_tp1", moe, {.tp = 2, .dp = 2, .ep = 2}, 1, 3000},
      {"moe_etp2_above_tp1_dp4_ep2_to_tp2", moe, {.tp = 1, .dp = 4, .ep = 2, .etp = 2}, 2, 4096},
      {"mixtral_tp1_dp4_ep2_to_tp4_vllm_ep", mixtral, {.tp = 1, .dp = 4, .ep = 2}, 4, 0, true},
      // Coalesced pieces (PlanOptions::coalesce_rows) on odd layouts: experts split over ETP 2 and EP 2, GQA with
      // 2 KV heads replicated over tp' 4, vLLM's tensor-parallel and expert-parallel experts.
      {"moe_tp2_dp2_ep2_etp2_to_tp4", moe, {.tp = 2, .dp = 2, .ep = 2, .etp = 2}, 4, 4096},
      {"moe_tp2_dp2_ep2_etp2_to_tp4_vllm_ep", moe, {.tp = 2, .dp = 2, .ep = 2, .etp = 2}, 4, 4096, true},
      {"tp2_to_tp1", tiny, {.tp = 2}, 1, 4096},
      {"tp1_dp2_to_tp2", tiny, {.tp = 1, .dp = 2}, 2, 4096},
      {"tp2_dp2_to_tp4_kv_replicated", tiny, {.tp = 2, .dp = 2}, 4, 4096},
      {"tp1_pp3_dp2_to_tp3", six, {.tp = 1, .pp = 3, .dp = 2}, 3, 3000},
      {"tp3_pp3_to_tp3", six, {.tp = 3, .pp = 3}, 3, 0},
      {"tp2_pp2_vpp2_to_tp1", tiny, {.tp = 2, .pp = 2, .vpp = 2}, 1, 5000},
      {"tp2_pp2_dp2_to_tp2", tiny, {.tp = 2, .pp = 2, .dp = 2}, 2, 4096},
      {"tied_tp2_dp2_to_tp1", tied, {.tp = 2, .dp = 2}, 1, 4096},
      {"tied_tp1_pp2_dp2_to_tp4", tied, {.tp = 1, .pp = 2, .dp = 2}, 4, 4096},
      {"qwen2_tp2_pp2_to_tp4", qwen, {.tp = 2, .pp = 2}, 4, 4096},
      {"qwen2_tp1_dp8_to_tp8_kv_replicated", qwen, {.tp = 1, .dp = 8}, 8, 0},
      {"fp32_tp2_pp2_to_tp4_tiny_chunks", fp32, {.tp = 2, .pp = 2}, 4, 200},
      {"fp16_tied_qwen2_tp2_pp2_vpp2_to_tp1", qwen_tied_fp16, {.tp = 2, .pp = 2, .vpp = 2}, 1, 4096},
      {"tp_equal_tp2_dp2", tiny, {.tp = 2, .dp = 2}, 2, 4096},
      {"tp4_pp2_to_tp2", mha, {.tp = 4, .pp = 2}, 2, 4096},
      {"unpadded_vocab_tp2_to_tp4", round_vocab, {.tp = 2, .dp = 2}, 4, 0},
  };
}

class ReshardPlanMatrixTest : public ::testing::TestWithParam<PlanCase> {};

TEST_P(ReshardPlanMatrixTest, every_inference_byte_is_written_exactly_once) {
  const PlanCase& c = GetParam();
  for (const RankPlan& plan : plan_every_rank(c)) {
    SCOPED_TRACE("rank " + std::to_string(plan.rank));
    std::vector<int> written(static_cast<std::size_t>(plan.inference_buffer.bytes), 0);
    for (const ByteRange& range : plan.zero_fill) {
      ASSERT_TRUE(mark_destination(Piece{.dst_offset = range.offset, .rows = 1, .row_bytes = range.bytes}, written));
    }
    for (const Piece& piece : plan.local_pieces) ASSERT_TRUE(mark_destination(piece, written));
    for (const Round& round : plan.rounds) {
      for (const Message& message : round.recvs) {
        for (const Piece& piece : message.pieces) ASSERT_TRUE(mark_destination(piece, written));
      }
    }
    const auto wrong = std::find_if(written.begin(), written.end(), [](int n) { return n != 1; });
    EXPECT_EQ(wrong, written.end()) << "byte " << (wrong - written.begin()) << " written " << *wrong << " times";
  }
}

TEST_P(ReshardPlanMatrixTest, senders_and_receivers_agree_on_every_message) {
  const PlanCase& c = GetParam();
  for (const Wires mode : {Wires::kDefault, Wires::kEveryRun}) {
    SCOPED_TRACE(mode == Wires::kDefault ? "default wires" : "every run a wire");
    const auto plans = plan_every_rank(c, mode);
    const std::int64_t chunk_bytes = plans.front().chunk_bytes;
    std::map<std::tuple<int, int, std::size_t>, std::vector<std::int64_t>> sent;  // (from, to, round) -> wire bytes
    std::map<std::tuple<int, int, std::size_t>, std::vector<std::int64_t>> received;
    for (const RankPlan& plan : plans) {
      EXPECT_EQ(plan.chunk_bytes, chunk_bytes) << "chunk_bytes must be global";
      const int replica = c.train.coord(plan.rank).dp_rank;
      const bool experts_over_replicas = c.train.expert_period() > 1;
      for (std::size_t k = 0; k < plan.rounds.size(); ++k) {
        for (const bool sending : {true, false}) {
          const auto& messages = sending ? plan.rounds[k].sends : plan.rounds[k].recvs;
          for (std::size_t i = 0; i < messages.size(); ++i) {
            const Message& message = messages[i];
            if (i > 0) {
              EXPECT_LT(messages[i - 1].peer, message.peer) << "messages sorted by peer";
            }
            EXPECT_NE(message.peer, plan.rank);
            if (!experts_over_replicas) {
              EXPECT_EQ(c.train.coord(message.peer).dp_rank, replica) << "sources stay in the data-parallel replica";
            }
            EXPECT_GT(message.bytes, 0);
            expect_tiles_message(message, sending);
            // A message stages at most a chunk on either side; only a single row may exceed it, alone. Wires direct
            // on both sides stage nothing and may be of any size.
            if (message.staged_bytes() > chunk_bytes) {
              ASSERT_EQ(message.wires.size(), 1u);
              std::int64_t rows = 0;
              for (const Piece& piece : message.wires[0].pieces) rows += piece.rows;
              EXPECT_EQ(rows, 1) << "only a single row may exceed a chunk";
            }
            auto& book = sending ? sent : received;
            const auto key =
                sending ? std::make_tuple(plan.rank, message.peer, k) : std::make_tuple(message.peer, plan.rank, k);
            std::vector<std::int64_t> wires;
            for (const Wire& wire : message.wires) wires.push_back(wire.bytes);
            EXPECT_TRUE(book.emplace(key, wires).second);
          }
        }
        // One round's staging fits one bucket (unless a single row is larger than a chunk and travels alone).
        std::int64_t largest = 0;
        for (const Message& m : plan.rounds[k].sends) largest = std::max(largest, m.bytes);
        for (const Message& m : plan.rounds[k].recvs) largest = std::max(largest, m.bytes);
        if (largest <= chunk_bytes) {
          EXPECT_LE(plan.rounds[k].staging_bytes(), options_of(c).bucket_bytes);
        }
      }
    }
    EXPECT_EQ(sent, received) << "both sides cut every message into the same wires";
  }
}

TEST_P(ReshardPlanMatrixTest, running_every_plan_on_cpu_gives_the_reference_shards_and_predicted_bytes) {
  const PlanCase& c = GetParam();
  for (const Wires mode : {Wires::kDefault, Wires::kEveryRun}) {
    SCOPED_TRACE(mode == Wires::kDefault ? "default wires" : "every run a wire");
    const auto plans = plan_every_rank(c, mode);
    const int world = c.train.world_size();
    // Train buffers as the trainer holds them (from the reference, so a train-layout mistake cannot cancel out).
    std::vector<std::vector<std::vector<std::uint8_t>>> train(static_cast<std::size_t>(world));
    for (const RankPlan& plan : plans) {
      const TrainLayout::Coord coord = c.train.coord(plan.rank);
      for (const BufferLayout& buffer : plan.train_buffers) {
        train[static_cast<std::size_t>(plan.rank)].push_back(reference::expected_train_buffer(
            c.spec, c.train, coord.tp_rank, coord.pp_rank, buffer.vpp_chunk, kVersion, buffer, coord.dp_rank));
      }
    }
    std::vector<std::vector<std::uint8_t>> inference(static_cast<std::size_t>(world));
    std::vector<std::int64_t> moved_local(static_cast<std::size_t>(world), 0);
    std::vector<std::int64_t> moved_sent(static_cast<std::size_t>(world), 0);
    std::vector<std::int64_t> moved_received(static_cast<std::size_t>(world), 0);
    std::vector<std::int64_t> peak_staging(static_cast<std::size_t>(world), 0);
    for (const RankPlan& plan : plans) {
      auto& out = inference[static_cast<std::size_t>(plan.rank)];
      out.assign(static_cast<std::size_t>(plan.inference_buffer.bytes), 0xA5);  // stale garbage
      for (const ByteRange& range : plan.zero_fill) {
        std::memset(out.data() + range.offset, 0, static_cast<std::size_t>(range.bytes));
      }
      for (const Piece& piece : plan.local_pieces) {
        const auto& src = train[static_cast<std::size_t>(plan.rank)].at(static_cast<std::size_t>(piece.src_buffer));
        copy_piece(piece, src.data(), static_cast<std::int64_t>(src.size()), out.data(),
                   static_cast<std::int64_t>(out.size()));
        moved_local[static_cast<std::size_t>(plan.rank)] += piece.bytes();
      }
    }
    std::size_t num_rounds = 0;
    for (const RankPlan& plan : plans) num_rounds = std::max(num_rounds, plan.rounds.size());
    for (std::size_t k = 0; k < num_rounds; ++k) {
      std::map<std::pair<int, int>, std::vector<std::uint8_t>> wire;  // (from, to) -> message of round k
      for (const RankPlan& plan : plans) {
        if (k >= plan.rounds.size()) continue;
        std::int64_t staging = 0;
        for (const Message& message : plan.rounds[k].sends) {
          // Wire by wire, from each wire's own pieces (a direct wire is one run of the train buffer).
          std::vector<std::uint8_t> bytes;
          for (const Wire& part : message.wires) {
            std::vector<std::uint8_t> on_wire(static_cast<std::size_t>(part.bytes));
            for (const Piece& piece : part.pieces) {
              const auto& src =
                  train[static_cast<std::size_t>(plan.rank)].at(static_cast<std::size_t>(piece.src_buffer));
              copy_piece(piece, src.data(), static_cast<std::int64_t>(src.size()), on_wire.data(), part.bytes);
            }
            bytes.insert(bytes.end(), on_wire.begin(), on_wire.end());
            staging += part.staged_bytes();
          }
          moved_sent[static_cast<std::size_t>(plan.rank)] += message.bytes;
          wire[{plan.rank, message.peer}] = std::move(bytes);
        }
        for (const Message& message : plan.rounds[k].recvs) staging += message.staged_bytes();
        EXPECT_EQ(staging, plan.rounds[k].staging_bytes());
        peak_staging[static_cast<std::size_t>(plan.rank)] =
            std::max(peak_staging[static_cast<std::size_t>(plan.rank)], staging);
      }
      for (const RankPlan& plan : plans) {
        if (k >= plan.rounds.size()) continue;
        auto& out = inference[static_cast<std::size_t>(plan.rank)];
        for (const Message& message : plan.rounds[k].recvs) {
          const auto found = wire.find({message.peer, plan.rank});
          ASSERT_NE(found, wire.end()) << "rank " << plan.rank << " waits for a message rank " << message.peer
                                       << " does not send in round " << k;
          ASSERT_EQ(static_cast<std::int64_t>(found->second.size()), message.bytes);
          std::int64_t offset = 0;
          for (const Wire& part : message.wires) {
            for (const Piece& piece : part.pieces) {
              copy_piece(piece, found->second.data() + offset, part.bytes, out.data(),
                         static_cast<std::int64_t>(out.size()));
            }
            offset += part.bytes;
          }
          moved_received[static_cast<std::size_t>(plan.rank)] += message.bytes;
        }
      }
    }
    for (const RankPlan& plan : plans) {
      SCOPED_TRACE("rank " + std::to_string(plan.rank));
      const auto r = static_cast<std::size_t>(plan.rank);
      const int tp_rank = inference_of(c).coord(plan.rank).tp_rank;
      const auto expected =
          reference::expected_inference_buffer(c.spec, inference_of(c), tp_rank, kVersion, plan.inference_buffer);
      EXPECT_EQ(reference::first_difference(plan.inference_buffer, expected, inference[r].data(), inference[r].size()),
                "");
      EXPECT_EQ(plan.bytes_local(), moved_local[r]);
      EXPECT_EQ(plan.bytes_sent(), moved_sent[r]);
      EXPECT_EQ(plan.bytes_received(), moved_received[r]);
      EXPECT_EQ(plan.max_round_staging_bytes(), peak_staging[r]);
      EXPECT_EQ(plan.peak_extra_bytes(), plan.inference_buffer.bytes + plan.staging_bytes());
      EXPECT_LE(plan.staging_bytes(), 2 * plan.max_round_staging_bytes());
      EXPECT_LE(plan.bytes_packed(), plan.bytes_sent());
      EXPECT_LE(plan.bytes_landed_from_buckets(), plan.bytes_received());
      std::int64_t zero = 0;
      for (const ByteRange& range : plan.zero_fill) zero += range.bytes;
      EXPECT_EQ(plan.bytes_local() + plan.bytes_received() + zero, plan.inference_buffer.bytes);
    }
  }
}

// A rank copies locally exactly the elements its own train shards hold, and receives only the rest.
TEST_P(ReshardPlanMatrixTest, a_rank_receives_only_what_its_own_shards_lack) {
  const PlanCase& c = GetParam();
  const auto hf = c.spec.hf_tensors();
  const auto element = static_cast<std::int64_t>(dtype_size(c.spec.dtype));
  for (const RankPlan& plan : plan_every_rank(c)) {
    std::vector<std::vector<char>> own(hf.size());  // per full tensor: element held by this rank's train shards
    for (std::size_t i = 0; i < hf.size(); ++i) own[i].assign(static_cast<std::size_t>(hf[i].numel()), 0);
    const auto element_of = [&hf](const Block& b, std::int64_t r, std::int64_t col) {
      return static_cast<std::size_t>((b.hf_row + r) * hf[static_cast<std::size_t>(b.hf_tensor)].cols + b.hf_col + col);
    };
    for (const BufferLayout& buffer : plan.train_buffers) {
      for (const LocalTensor& tensor : buffer.tensors) {
        for (const Block& b : tensor.blocks) {
          for (std::int64_t r = 0; r < b.rows; ++r) {
            for (std::int64_t col = 0; col < b.cols; ++col) {
              own[static_cast<std::size_t>(b.hf_tensor)][element_of(b, r, col)] = 1;
            }
          }
        }
      }
    }
    std::int64_t local_elements = 0;
    std::int64_t needed_elements = 0;
    for (const LocalTensor& tensor : plan.inference_buffer.tensors) {
      for (const Block& b : tensor.blocks) {
        needed_elements += b.rows * b.cols;
        for (std::int64_t r = 0; r < b.rows; ++r) {
          for (std::int64_t col = 0; col < b.cols; ++col) {
            local_elements += own[static_cast<std::size_t>(b.hf_tensor)][element_of(b, r, col)];
          }
        }
      }
    }
    EXPECT_EQ(plan.bytes_local(), local_elements * element) << "rank " << plan.rank;
    EXPECT_EQ(plan.bytes_received(), (needed_elements - local_elements) * element) << "rank " << plan.rank;
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ReshardPlanMatrixTest, ::testing::ValuesIn(plan_cases()),
                         [](const ::testing::TestParamInfo<PlanCase>& test) { return test.param.name; });

TEST(ReshardPlanTest, equal_tensor_parallelism_without_pipeline_needs_no_network) {
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2, .dp = 2};
  for (int rank = 0; rank < 4; ++rank) {
    const RankPlan plan = make_rank_plan(spec, train, InferenceLayout{.tp = 2, .world_size = 4}, rank);
    EXPECT_TRUE(plan.rounds.empty());
    EXPECT_EQ(plan.bytes_sent(), 0);
    EXPECT_EQ(plan.peak_extra_bytes(), plan.inference_buffer.bytes);
  }
}

TEST(ReshardPlanTest, contiguous_copies_merge_into_few_pieces) {
  // Same layout on both sides: only the per-group QKV interleave (six pieces for two groups) and the alignment gaps
  // after the 128-byte norms (two per layer) break contiguity; everything else runs on in both buffers and merges.
  // Without coalescing each of those is a piece of its own; with it, runs at one stride join (never more pieces).
  const ModelSpec spec = *model_preset("tiny");
  const RankPlan plan = make_rank_plan(spec, TrainLayout{}, InferenceLayout{}, 0, PlanOptions{.coalesce_rows = false});
  EXPECT_TRUE(plan.rounds.empty());
  EXPECT_LE(plan.local_pieces.size(), static_cast<std::size_t>(8 * spec.num_hidden_layers + 1));
  EXPECT_GE(plan.local_pieces.size(), static_cast<std::size_t>(6 * spec.num_hidden_layers));
  for (const Piece& piece : plan.local_pieces) EXPECT_GT(piece.bytes(), 0);
  const RankPlan coalesced = make_rank_plan(spec, TrainLayout{}, InferenceLayout{}, 0);
  EXPECT_LE(coalesced.local_pieces.size(), plan.local_pieces.size());
}

// Where every byte of a piece list comes from: destination byte -> (source buffer, source byte).
std::map<std::int64_t, std::pair<int, std::int64_t>> byte_sources(const std::vector<Piece>& pieces) {
  std::map<std::int64_t, std::pair<int, std::int64_t>> sources;
  for (const Piece& piece : pieces) {
    for (std::int64_t row = 0; row < piece.rows; ++row) {
      for (std::int64_t b = 0; b < piece.row_bytes; ++b) {
        const bool fresh = sources
                               .emplace(piece.dst_offset + row * piece.dst_stride + b,
                                        std::pair{piece.src_buffer, piece.src_offset + row * piece.src_stride + b})
                               .second;
        EXPECT_TRUE(fresh) << "two pieces write destination byte " << piece.dst_offset + row * piece.dst_stride + b;
      }
    }
  }
  return sources;
}

// Coalescing changes how the copies are cut, never what is copied: on an odd layout (experts over EP 2 and ETP 2,
// GQA's 2 KV heads replicated over tp' 4, vLLM's tensor-parallel and expert-parallel experts) every piece list of
// every rank (local, each peer's direct reads, each message and wire on both sides) maps every destination byte to
// the same source byte with and without it, the wires keep their sizes and direct sends and receives, and the lists
// get shorter. Bit-exact shards from these plans: the matrix cases moe_tp2_dp2_ep2_etp2_to_tp4*.
TEST(ReshardPlanTest, coalesced_pieces_copy_the_same_bytes_in_fewer_pieces) {
  ModelSpec moe = small_model(Architecture::kQwen3Moe, 4, 8, 2, 300, false, DType::kBFloat16);
  moe.num_experts = 8;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 16;
  const TrainLayout train{.tp = 2, .dp = 2, .ep = 2, .etp = 2};
  for (const bool expert_parallel : {false, true}) {
    SCOPED_TRACE(expert_parallel ? "vLLM expert-parallel experts" : "vLLM tensor-parallel experts");
    const InferenceLayout inference{.tp = 4, .world_size = 4, .expert_parallel = expert_parallel};
    std::size_t before_total = 0;
    std::size_t after_total = 0;
    for (int rank = 0; rank < 4; ++rank) {
      SCOPED_TRACE("rank " + std::to_string(rank));
      const PlanOptions every_run{.direct_min_bytes = 0};
      PlanOptions uncoalesced = every_run;
      uncoalesced.coalesce_rows = false;
      const RankPlan before = make_rank_plan(moe, train, inference, rank, uncoalesced);
      const RankPlan after = make_rank_plan(moe, train, inference, rank, every_run);
      const auto same = [&](const std::vector<Piece>& a, const std::vector<Piece>& b) {
        EXPECT_LE(b.size(), a.size());
        EXPECT_EQ(byte_sources(a), byte_sources(b));
        before_total += a.size();
        after_total += b.size();
        for (const Piece& piece : b) {
          EXPECT_GE(piece.src_stride, piece.row_bytes);
          EXPECT_GE(piece.dst_stride, piece.row_bytes);
        }
      };
      same(before.local_pieces, after.local_pieces);
      ASSERT_EQ(before.peer_reads.size(), after.peer_reads.size());
      for (std::size_t p = 0; p < before.peer_reads.size(); ++p) {
        EXPECT_EQ(before.peer_reads[p].peer, after.peer_reads[p].peer);
        same(before.peer_reads[p].pieces, after.peer_reads[p].pieces);
      }
      ASSERT_EQ(before.rounds.size(), after.rounds.size());
      for (std::size_t k = 0; k < before.rounds.size(); ++k) {
        for (const bool sending : {true, false}) {
          const auto& a = sending ? before.rounds[k].sends : before.rounds[k].recvs;
          const auto& b = sending ? after.rounds[k].sends : after.rounds[k].recvs;
          ASSERT_EQ(a.size(), b.size());
          for (std::size_t m = 0; m < a.size(); ++m) {
            EXPECT_EQ(a[m].bytes, b[m].bytes);
            expect_tiles_message(b[m], sending);
            ASSERT_EQ(a[m].wires.size(), b[m].wires.size());
            if (sending) same(a[m].pieces, b[m].pieces);  // destination: the message
            for (std::size_t w = 0; w < a[m].wires.size(); ++w) {
              EXPECT_EQ(a[m].wires[w].bytes, b[m].wires[w].bytes);
              EXPECT_EQ(a[m].wires[w].direct(), b[m].wires[w].direct());
              if (sending) same(a[m].wires[w].pieces, b[m].wires[w].pieces);
            }
          }
        }
      }
      // Receives: the same bytes of each message land on the same inference bytes.
      for (std::size_t k = 0; k < before.rounds.size(); ++k) {
        for (std::size_t m = 0; m < before.rounds[k].recvs.size(); ++m) {
          same(before.rounds[k].recvs[m].pieces, after.rounds[k].recvs[m].pieces);
          for (std::size_t w = 0; w < before.rounds[k].recvs[m].wires.size(); ++w) {
            same(before.rounds[k].recvs[m].wires[w].pieces, after.rounds[k].recvs[m].wires[w].pieces);
          }
        }
      }
    }
    EXPECT_LT(after_total, before_total);
  }
}

TEST(ReshardPlanTest, other_stages_come_from_the_same_tensor_parallel_column) {
  // tp == tp', two stages: every rank needs the other stage's layers, norms included, and takes all of them from the
  // one rank of its column there.
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2, .pp = 2};
  for (int rank = 0; rank < 4; ++rank) {
    const RankPlan plan = make_rank_plan(spec, train, InferenceLayout{.tp = 2, .world_size = 4}, rank);
    std::set<int> peers;
    for (const Round& round : plan.rounds) {
      for (const Message& message : round.recvs) peers.insert(message.peer);
      for (const Message& message : round.sends) peers.insert(message.peer);
    }
    EXPECT_EQ(peers, (std::set<int>{rank ^ 2})) << "rank " << rank;
  }
}

TEST(ReshardPlanTest, chunks_follow_the_bucket_and_the_largest_peer_count) {
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2, .dp = 2};  // -> tp' 1: each rank receives from one peer and sends to one
  PlanOptions options;
  options.bucket_bytes = 10'000;
  const RankPlan plan = make_rank_plan(spec, train, InferenceLayout{.tp = 1, .world_size = 4}, 0, options);
  EXPECT_EQ(plan.chunk_bytes, 10'000 / 2);  // a round's staging both ways fits one bucket
  EXPECT_LE(plan.max_round_send_bytes() + plan.max_round_recv_bytes(), 10'000);
  EXPECT_LE(plan.max_round_staging_bytes(), 10'000);
  EXPECT_GE(static_cast<std::int64_t>(plan.rounds.size()),
            (plan.bytes_received() + plan.chunk_bytes - 1) / plan.chunk_bytes);
  EXPECT_LE(static_cast<std::int64_t>(plan.rounds.size()), 2 * plan.bytes_received() / plan.chunk_bytes + 1);
  const RankPlan wide =
      make_rank_plan(spec, TrainLayout{.tp = 2, .pp = 2}, InferenceLayout{.tp = 1, .world_size = 4}, 0, options);
  EXPECT_EQ(wide.chunk_bytes, 10'000 / 6);  // rank 0 receives from the three other ranks
}

// Tiny tp2 -> tp1 on two ranks: rank 1 sends rank 0 its half of every tensor-parallel tensor, in rank 0's destination
// order. With every contiguous run on a wire of its own, whole-row blocks (vocabulary rows, each query group's q, k
// and v rows) go straight from rank 1's train buffer into rank 0's inference buffer, column blocks of o_proj and
// down_proj leave rank 1 without a pack but land through the bucket (their rows are strided in the destination).
TEST(ReshardPlanTest, wires_go_without_a_bucket_where_the_bytes_are_contiguous) {
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2};
  const InferenceLayout inference{.tp = 1, .world_size = 2};
  PlanOptions every_run;
  every_run.direct_min_bytes = 0;
  const RankPlan receiver = make_rank_plan(spec, train, inference, 0, every_run);
  const RankPlan sender = make_rank_plan(spec, train, inference, 1, every_run);
  ASSERT_EQ(receiver.rounds.size(), 1u);
  ASSERT_EQ(sender.rounds.size(), 1u);
  const Message& recv = receiver.rounds[0].recvs.at(0);
  const Message& send = sender.rounds[0].sends.at(0);
  ASSERT_EQ(recv.wires.size(), send.wires.size());
  ASSERT_GT(recv.wires.size(), 1u);
  int both = 0;
  int send_only = 0;
  int receive_only = 0;
  for (std::size_t i = 0; i < recv.wires.size(); ++i) {
    EXPECT_EQ(recv.wires[i].bytes, send.wires[i].bytes) << "wire " << i;
    both += send.wires[i].direct() && recv.wires[i].direct() ? 1 : 0;
    send_only += send.wires[i].direct() && !recv.wires[i].direct() ? 1 : 0;
    receive_only += !send.wires[i].direct() && recv.wires[i].direct() ? 1 : 0;
  }
  EXPECT_GT(both, 0) << "whole-row blocks go from train buffer to inference buffer";
  EXPECT_GT(send_only, 0) << "column blocks are contiguous in the sender's shard only";
  EXPECT_EQ(receive_only, 0) << "every block of a whole-row run lies back to back in rank 1's shard";
  EXPECT_EQ(receiver.rounds[0].staging_bytes(), recv.staged_bytes() + receiver.rounds[0].sends.at(0).staged_bytes());
  EXPECT_LT(receiver.bytes_landed_from_buckets(), receiver.bytes_received());
  EXPECT_LT(sender.bytes_packed(), sender.bytes_sent());
  EXPECT_LT(receiver.peak_extra_bytes(),
            receiver.inference_buffer.bytes + receiver.bytes_received() + receiver.bytes_sent());
  EXPECT_EQ(receiver.staging_buckets(), 1);  // one round: one bucket

  // The default threshold (4 MiB): the tiny model's runs are far below it, so each message is one wire, through the
  // buckets unless the whole message is one run (a chunk of vocabulary rows); small buckets make many rounds, two
  // buckets in turn.
  PlanOptions small;
  small.bucket_bytes = 4096;
  const RankPlan staged = make_rank_plan(spec, train, inference, 0, small);
  ASSERT_GT(staged.rounds.size(), 2u);
  int bucketed = 0;
  for (const Round& round : staged.rounds) {
    for (const Message& message : round.recvs) {
      ASSERT_EQ(message.wires.size(), 1u);
      EXPECT_EQ(message.staged_bytes(), message.wires[0].direct() ? 0 : message.bytes);
      bucketed += message.wires[0].direct() ? 0 : 1;
    }
  }
  EXPECT_GT(bucketed, 2);
  EXPECT_EQ(staged.staging_buckets(), 2);

  // Rounds are cut by the bytes they stage: with every contiguous run on a wire of its own, the same buckets carry
  // the same bytes in fewer rounds than with everything through the buckets.
  PlanOptions small_direct = small;
  small_direct.direct_min_bytes = 0;
  PlanOptions small_bucketed = small;
  small_bucketed.direct_min_bytes = std::int64_t{1} << 40;
  const RankPlan direct_rounds = make_rank_plan(spec, train, inference, 0, small_direct);
  const RankPlan bucketed_rounds = make_rank_plan(spec, train, inference, 0, small_bucketed);
  EXPECT_EQ(direct_rounds.bytes_received(), bucketed_rounds.bytes_received());
  EXPECT_LT(direct_rounds.rounds.size(), bucketed_rounds.rounds.size());
  EXPECT_LE(direct_rounds.max_round_staging_bytes(), small.bucket_bytes);
  EXPECT_LE(bucketed_rounds.max_round_staging_bytes(), small.bucket_bytes);
  EXPECT_EQ(staged.peak_extra_bytes(), staged.inference_buffer.bytes + 2 * staged.max_round_staging_bytes());
}

TEST(ReshardPlanTest, negative_direct_min_bytes_is_a_config_error) {
  PlanOptions options;
  options.direct_min_bytes = -1;
  EXPECT_THROW(make_rank_plan(*model_preset("tiny"), TrainLayout{.tp = 2}, InferenceLayout{.tp = 1, .world_size = 2}, 0,
                              options),
               ConfigError);
}

TEST(ReshardPlanTest, same_inputs_give_the_same_plan) {
  const auto spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2, .pp = 2};
  const InferenceLayout inference{.tp = 1, .world_size = 4};
  PlanOptions options;
  options.bucket_bytes = 4096;
  const RankPlan a = make_rank_plan(spec, train, inference, 3, options);
  const RankPlan b = make_rank_plan(spec, train, inference, 3, options);
  ASSERT_EQ(a.rounds.size(), b.rounds.size());
  for (std::size_t k = 0; k < a.rounds.size(); ++k) {
    ASSERT_EQ(a.rounds[k].sends.size(), b.rounds[k].sends.size());
    for (std::size_t i = 0; i < a.rounds[k].sends.size(); ++i) {
      EXPECT_EQ(a.rounds[k].sends[i].bytes, b.rounds[k].sends[i].bytes);
      EXPECT_EQ(a.rounds[k].sends[i].pieces.size(), b.rounds[k].sends[i].pieces.size());
    }
  }
  EXPECT_EQ(a.bytes_local(), b.bytes_local());
}

TEST(ReshardPlanTest, unusable_inputs_throw_one_config_error_naming_every_problem) {
  const ModelSpec spec = *model_preset("tiny");
  try {
    make_rank_plan(spec, TrainLayout{.tp = 4, .pp = 3}, InferenceLayout{.tp = 3, .world_size = 12}, 0);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("tensor_model_parallel_size 4 must divide num_key_value_heads 2"), std::string::npos) << what;
    EXPECT_NE(what.find("pipeline_model_parallel_size"), std::string::npos) << what;
    EXPECT_NE(what.find("rollout tensor_model_parallel_size 3"), std::string::npos) << what;
  }
  try {
    make_rank_plan(spec, TrainLayout{.tp = 2}, InferenceLayout{.tp = 1, .world_size = 4}, 0);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("differs from the rollout world size 4"), std::string::npos);
  }
  EXPECT_THROW(make_rank_plan(spec, TrainLayout{.tp = 2}, InferenceLayout{.tp = 1, .world_size = 2}, 2), ConfigError);
}

// Every rank of a large job: 256 ranks of the tiny model.
TEST(ReshardPlanTest, plans_for_256_ranks_cover_their_shards_and_pair_up) {
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2, .pp = 4, .dp = 32};
  const InferenceLayout inference{.tp = 4, .world_size = 256};
  PlanOptions options;
  options.bucket_bytes = 16384;
  std::map<std::tuple<int, int, std::size_t>, std::int64_t> sent;
  std::map<std::tuple<int, int, std::size_t>, std::int64_t> received;
  for (int rank = 0; rank < 256; ++rank) {
    const RankPlan plan = make_rank_plan(spec, train, inference, rank, options);
    std::int64_t zero = 0;
    for (const ByteRange& range : plan.zero_fill) zero += range.bytes;
    ASSERT_EQ(plan.bytes_local() + plan.bytes_received() + zero, plan.inference_buffer.bytes) << "rank " << rank;
    for (std::size_t k = 0; k < plan.rounds.size(); ++k) {
      for (const Message& m : plan.rounds[k].sends) sent[{rank, m.peer, k}] = m.bytes;
      for (const Message& m : plan.rounds[k].recvs) received[{m.peer, rank, k}] = m.bytes;
    }
  }
  EXPECT_EQ(sent, received);
}

// The largest preset on one node: byte totals add up and messages pair up, in both directions of tp.
TEST(ReshardPlanTest, llama3_70b_on_8_ranks_accounts_for_every_byte) {
  const ModelSpec spec = *model_preset("llama3-70b");
  for (const auto& [train, inference_tp] :
       std::vector<std::pair<TrainLayout, int>>{{TrainLayout{.tp = 8}, 4}, {TrainLayout{.tp = 4, .pp = 2}, 8}}) {
    const InferenceLayout inference{.tp = inference_tp, .world_size = 8};
    std::map<std::tuple<int, int, std::size_t>, std::int64_t> sent;
    std::map<std::tuple<int, int, std::size_t>, std::int64_t> received;
    std::int64_t total_received = 0;
    for (int rank = 0; rank < 8; ++rank) {
      const RankPlan plan = make_rank_plan(spec, train, inference, rank);
      std::int64_t zero = 0;
      for (const ByteRange& range : plan.zero_fill) zero += range.bytes;
      EXPECT_EQ(plan.bytes_local() + plan.bytes_received() + zero, plan.inference_buffer.bytes);
      EXPECT_LE(plan.max_round_staging_bytes(), PlanOptions{}.bucket_bytes);
      total_received += plan.bytes_received();
      for (std::size_t k = 0; k < plan.rounds.size(); ++k) {
        for (const Message& m : plan.rounds[k].sends) sent[{rank, m.peer, k}] = m.bytes;
        for (const Message& m : plan.rounds[k].recvs) received[{m.peer, rank, k}] = m.bytes;
      }
    }
    EXPECT_EQ(sent, received);
    EXPECT_GT(total_received, 0);
  }
}

// Qwen3-30B-A3B's shapes on one node: train expert parallelism over all 8 ranks to vLLM's tensor-parallel and
// expert-parallel experts; bytes add up, messages pair up, every rank sends and receives its share of experts.
TEST(ReshardPlanTest, qwen3_30b_a3b_on_8_ranks_accounts_for_every_byte) {
  const ModelSpec spec = *model_preset("qwen3-30b-a3b");
  const std::vector<std::tuple<TrainLayout, int, bool>> layouts = {
      {TrainLayout{.tp = 1, .dp = 8, .ep = 8}, 8, false},
      {TrainLayout{.tp = 2, .dp = 4, .ep = 4, .etp = 1}, 4, true},
  };
  for (const auto& [train, inference_tp, expert_parallel] : layouts) {
    const InferenceLayout inference{.tp = inference_tp, .world_size = 8, .expert_parallel = expert_parallel};
    std::int64_t total_received = 0;
    std::map<std::tuple<int, int, std::size_t>, std::int64_t> sent;
    std::map<std::tuple<int, int, std::size_t>, std::int64_t> received;
    for (int rank = 0; rank < 8; ++rank) {
      const RankPlan plan = make_rank_plan(spec, train, inference, rank);
      std::int64_t zero = 0;
      for (const ByteRange& range : plan.zero_fill) zero += range.bytes;
      EXPECT_EQ(plan.bytes_local() + plan.bytes_received() + zero, plan.inference_buffer.bytes);
      if (!expert_parallel) {
        // Every rank holds 16 whole experts and needs an eighth of all 128: it sends and receives.
        EXPECT_GT(plan.bytes_received(), 0) << "rank " << rank;
        EXPECT_GT(plan.bytes_sent(), 0) << "rank " << rank;
      } else {
        // Train ep rank == vLLM ep rank here (rank % 4): the experts stay local, only attention moves.
        total_received += plan.bytes_received();
      }
      for (std::size_t k = 0; k < plan.rounds.size(); ++k) {
        for (const Message& m : plan.rounds[k].sends) sent[{rank, m.peer, k}] = m.bytes;
        for (const Message& m : plan.rounds[k].recvs) received[{m.peer, rank, k}] = m.bytes;
      }
    }
    EXPECT_EQ(sent, received);
    if (expert_parallel) {
      EXPECT_GT(total_received, 0);
    }
  }
}

// Megatron-Core splits experts evenly over expert-parallel ranks: a layout that does not is one clear ConfigError.
TEST(ReshardPlanTest, experts_that_do_not_divide_over_ep_ranks_are_a_config_error) {
  ModelSpec spec = small_model(Architecture::kQwen3Moe, 2, 4, 2, 300, false, DType::kBFloat16);
  spec.num_experts = 6;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = 16;
  try {
    make_rank_plan(spec, TrainLayout{.tp = 1, .dp = 4, .ep = 4}, InferenceLayout{.tp = 4, .world_size = 4}, 0);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("expert_model_parallel_size 4 does not divide num_experts 6"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace hybridshard::core
