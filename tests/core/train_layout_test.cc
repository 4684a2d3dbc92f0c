#include "hybridshard/core/train_layout.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "hybridshard/core/error.h"
#include "hybridshard/core/inference_layout.h"
#include "layout_test_support.h"
#include "reference.h"

namespace hybridshard::core {
namespace {

using testing::expect_well_formed;
using testing::materialize;
using testing::mentions;
using testing::small_model;
using testing::small_qwen2_moe;
using testing::tensors_named;

TEST(TrainLayoutTest, rank_order_is_tp_fastest_then_dp_then_pp) {
  const TrainLayout layout{.tp = 2, .pp = 3, .vpp = 1, .dp = 4};
  EXPECT_EQ(layout.world_size(), 24);
  const TrainLayout::Coord c = layout.coord(13);  // 13 = 1*8 + 2*2 + 1
  EXPECT_EQ(c.tp_rank, 1);
  EXPECT_EQ(c.dp_rank, 2);
  EXPECT_EQ(c.pp_rank, 1);
  for (int rank = 0; rank < layout.world_size(); ++rank) EXPECT_EQ(layout.rank_of(layout.coord(rank)), rank);
}

TEST(TrainLayoutTest, vocabulary_is_padded_to_a_multiple_of_divisor_times_tp) {
  const ModelSpec spec = *model_preset("tiny");  // vocab 500
  EXPECT_EQ((TrainLayout{.tp = 1}).padded_vocab(spec), 512);
  EXPECT_EQ((TrainLayout{.tp = 4}).padded_vocab(spec), 512);
  EXPECT_EQ((TrainLayout{.tp = 8}).padded_vocab(spec), 1024);
  EXPECT_EQ((TrainLayout{.tp = 2, .make_vocab_size_divisible_by = 1}).padded_vocab(spec), 500);
  EXPECT_EQ((TrainLayout{.tp = 8}).padded_vocab(*model_preset("llama3-8b")), 129024);  // 128256 -> 126 * 1024
}

TEST(TrainLayoutTest, interleaved_chunks_take_layers_round_robin_over_stages) {
  ModelSpec spec = *model_preset("tiny");
  spec.num_hidden_layers = 8;
  const TrainLayout layout{.tp = 1, .pp = 2, .vpp = 2};
  EXPECT_EQ(layout.layers_of(spec, 0, 0), (std::vector<int>{0, 1}));
  EXPECT_EQ(layout.layers_of(spec, 1, 0), (std::vector<int>{2, 3}));
  EXPECT_EQ(layout.layers_of(spec, 0, 1), (std::vector<int>{4, 5}));
  EXPECT_EQ(layout.layers_of(spec, 1, 1), (std::vector<int>{6, 7}));
  EXPECT_EQ((TrainLayout{.pp = 4}).layers_of(spec, 3, 0), (std::vector<int>{6, 7}));
}

TEST(TrainLayoutTest, validate_names_megatron_keys_for_every_problem) {
  const ModelSpec spec = *model_preset("tiny");  // 4 layers, 4 heads, 2 kv heads, intermediate 128
  EXPECT_TRUE((TrainLayout{.tp = 2, .pp = 2, .vpp = 2, .dp = 2}).validate(spec).empty());
  const auto problems = TrainLayout{.tp = 4, .pp = 3, .vpp = 1, .dp = 1}.validate(spec);
  EXPECT_EQ(problems.size(), 2u);
  EXPECT_TRUE(
      mentions(problems, TrainLayout::Field::kTp, "tensor_model_parallel_size 4 must divide num_key_value_heads 2"));
  EXPECT_TRUE(mentions(problems, TrainLayout::Field::kPp,
                       "num_hidden_layers 4 is not divisible by pipeline_model_parallel_size"));
  const auto vpp_alone = TrainLayout{.tp = 1, .pp = 1, .vpp = 2}.validate(spec);
  EXPECT_TRUE(mentions(vpp_alone, TrainLayout::Field::kVpp,
                       "virtual_pipeline_model_parallel_size 2 needs pipeline_model_parallel_size > 1"));
  const auto zero = TrainLayout{.tp = 0, .pp = 1, .vpp = 1, .dp = 0}.validate(spec);
  EXPECT_TRUE(mentions(zero, TrainLayout::Field::kTp, "tensor_model_parallel_size must be at least 1"));
  EXPECT_TRUE(mentions(zero, TrainLayout::Field::kDp, "data_parallel_size must be at least 1"));
  ModelSpec odd = spec;
  odd.num_attention_heads = 6;
  odd.num_key_value_heads = 6;
  odd.hidden_size = 48;
  odd.intermediate_size = 102;
  const auto heads = TrainLayout{.tp = 4}.validate(odd);
  EXPECT_TRUE(
      mentions(heads, TrainLayout::Field::kTp, "tensor_model_parallel_size 4 does not divide num_attention_heads 6"));
  EXPECT_TRUE(mentions(heads, TrainLayout::Field::kTp, "does not divide intermediate_size 102"));
}

// Mixture of experts (Megatron-Core): EP must divide the experts, ETP the expert width, ETP * EP the ranks of a stage.
TEST(TrainLayoutTest, validate_explains_every_expert_layout_that_does_not_divide) {
  ModelSpec moe = testing::small_model(Architecture::kQwen3Moe, 2, 4, 2, 300, false, DType::kBFloat16);
  moe.num_experts = 6;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 18;
  EXPECT_TRUE((TrainLayout{.tp = 2, .dp = 3, .ep = 3, .etp = 2}).validate(moe).empty());
  const auto problems = TrainLayout{.tp = 2, .dp = 2, .ep = 4, .etp = 4}.validate(moe);
  EXPECT_TRUE(
      mentions(problems, TrainLayout::Field::kEp, "expert_model_parallel_size 4 does not divide num_experts 6"));
  EXPECT_TRUE(mentions(problems, TrainLayout::Field::kEtp,
                       "expert_tensor_parallel_size 4 does not divide moe_intermediate_size 18"));
  EXPECT_TRUE(mentions(problems, TrainLayout::Field::kEp,
                       "expert_tensor_parallel_size * expert_model_parallel_size = 4 * 4 does not divide "
                       "tensor_model_parallel_size * data_parallel_size = 2 * 2"));
  EXPECT_TRUE(mentions(TrainLayout{.ep = 0}.validate(moe), TrainLayout::Field::kEp,
                       "expert_model_parallel_size must be at least 1"));
  // The default expert_tensor_parallel_size is tensor_model_parallel_size: 4 does not divide 18.
  EXPECT_TRUE(mentions(TrainLayout{.tp = 4}.validate(moe), TrainLayout::Field::kTp,
                       "expert_tensor_parallel_size 4 does not divide"));
  EXPECT_TRUE(mentions(TrainLayout{.dp = 2, .ep = 2}.validate(*model_preset("tiny")), TrainLayout::Field::kEp,
                       "llama has none"));
  // The shared expert (qwen2_moe) is split over tp, whatever the expert layout.
  const ModelSpec qwen2_moe = *model_preset("qwen2-57b-a14b");
  EXPECT_TRUE((TrainLayout{.tp = 2, .dp = 2, .ep = 4, .etp = 1}).validate(qwen2_moe).empty());
  ModelSpec odd_shared = qwen2_moe;
  odd_shared.shared_expert_intermediate_size = 20481;
  EXPECT_TRUE(mentions(TrainLayout{.tp = 2, .dp = 2, .ep = 4, .etp = 1}.validate(odd_shared), TrainLayout::Field::kTp,
                       "tensor_model_parallel_size 2 does not divide shared_expert_intermediate_size 20481"));
}

TEST(TrainLayoutTest, qwen2_moe_shared_expert_follows_megatron_cores_shared_expert_mlp) {
  const ModelSpec spec = small_qwen2_moe(1, 4, 16, 24, false, DType::kBFloat16);
  const TrainLayout layout{.tp = 2, .dp = 2, .ep = 4, .etp = 1};
  const auto buffers = train_param_buffers(spec, layout, layout.coord(3));
  ASSERT_EQ(buffers.size(), 1u);
  const auto [names, shapes] = tensors_named(buffers[0], "mlp.");
  const std::vector<std::string> expected = {"decoder.layers.0.mlp.router.weight",
                                             "decoder.layers.0.mlp.experts.linear_fc1.weight0",
                                             "decoder.layers.0.mlp.experts.linear_fc2.weight0",
                                             "decoder.layers.0.mlp.shared_experts.linear_fc1.weight",
                                             "decoder.layers.0.mlp.shared_experts.linear_fc2.weight",
                                             "decoder.layers.0.mlp.shared_experts.gate_weight"};
  EXPECT_EQ(names, expected);
  // EP 4 x ETP 1 over 4 ranks: one whole expert per rank; the shared expert half of 24 on each tp rank.
  const std::vector<std::vector<std::int64_t>> expected_shapes = {{4, 48},  {32, 48}, {48, 16},
                                                                  {24, 48}, {48, 12}, {1, 48}};
  EXPECT_EQ(shapes, expected_shapes);
}

TEST(TrainLayoutTest, expert_ranks_fold_over_tp_and_dp_as_megatron_core_does) {
  const TrainLayout layout{.tp = 2, .pp = 2, .dp = 4, .ep = 4, .etp = 1};
  // Within a stage, r = dp_rank * tp + tp_rank; etp 1: ep_rank = r % 4.
  EXPECT_EQ(layout.coord(5).ep_rank, 1);   // dp 2, tp 1: r = 5
  EXPECT_EQ(layout.coord(13).ep_rank, 1);  // stage 1, r = 5
  EXPECT_EQ(layout.coord(6).ep_rank, 2);
  EXPECT_EQ(layout.expert_period(), 2);
  const TrainLayout folded{.tp = 2, .dp = 2, .ep = 2};  // etp = tp = 2
  EXPECT_EQ(folded.coord(3).etp_rank, 1);
  EXPECT_EQ(folded.coord(3).ep_rank, 1);
  EXPECT_EQ(folded.coord(1).ep_rank, 0);
  EXPECT_EQ(TrainLayout{}.expert_period(), 1);
}

TEST(TrainLayoutTest, buffers_of_an_unusable_layout_are_a_config_error) {
  const ModelSpec spec = *model_preset("tiny");
  EXPECT_THROW(train_param_buffers(spec, TrainLayout{.tp = 4}, 0, 0), ConfigError);
  EXPECT_THROW(train_param_buffers(spec, TrainLayout{.tp = 2}, 2, 0), Error);
  EXPECT_THROW(inference_param_buffer(spec, InferenceLayout{.tp = 3, .world_size = 3}, 0), ConfigError);
}

TEST(TrainLayoutTest, tensors_are_megatron_core_names_in_order) {
  const ModelSpec spec = *model_preset("tiny");
  const auto buffers = train_param_buffers(spec, TrainLayout{.tp = 2, .pp = 2}, 1, 1);
  ASSERT_EQ(buffers.size(), 1u);
  std::vector<std::string> names;
  for (const LocalTensor& t : buffers[0].tensors) names.push_back(t.name);
  const std::vector<std::string> layer = {"input_layernorm.weight",
                                          "self_attention.linear_qkv.weight",
                                          "self_attention.linear_proj.weight",
                                          "pre_mlp_layernorm.weight",
                                          "mlp.linear_fc1.weight",
                                          "mlp.linear_fc2.weight"};
  std::vector<std::string> expected;
  for (int i = 0; i < 2; ++i) {
    for (const std::string& n : layer) expected.push_back("decoder.layers." + std::to_string(i) + "." + n);
  }
  expected.push_back("decoder.final_layernorm.weight");
  expected.push_back("output_layer.weight");
  EXPECT_EQ(names, expected);
  EXPECT_EQ(buffers[0].name, "train.params.pp1.vpp0");
  EXPECT_EQ(buffers[0].pp_rank, 1);
  // linear_qkv of tp rank 1 of 2: one query group (kv head 1) of 2 q heads + k + v, 16-wide heads.
  const LocalTensor& qkv = buffers[0].tensors[1];
  EXPECT_EQ(qkv.shape, (std::vector<std::int64_t>{64, 64}));
  ASSERT_EQ(qkv.blocks.size(), 3u);
  EXPECT_EQ(qkv.blocks[0].hf_row, 32);  // q heads 2, 3
  EXPECT_EQ(qkv.blocks[1].hf_row, 16);  // k head 1
  EXPECT_EQ(qkv.blocks[1].local_row, 32);
  EXPECT_EQ(qkv.blocks[2].local_row, 48);
  // output_layer: 256 padded rows per rank; rank 1 holds vocabulary rows 256..499 and 12 padding rows.
  const LocalTensor& output = buffers[0].tensors.back();
  EXPECT_EQ(output.shape, (std::vector<std::int64_t>{256, 64}));
  ASSERT_EQ(output.blocks.size(), 1u);
  EXPECT_EQ(output.blocks[0].hf_row, 256);
  EXPECT_EQ(output.blocks[0].rows, 244);
}

TEST(TrainLayoutTest, tied_embeddings_keep_an_output_layer_copy_only_with_pipeline_stages) {
  ModelSpec spec = *model_preset("tiny");
  spec.tie_word_embeddings = true;
  const auto single = train_param_buffers(spec, TrainLayout{.tp = 2}, 0, 0);
  EXPECT_EQ(single[0].tensors.back().name, "decoder.final_layernorm.weight");
  const auto last = train_param_buffers(spec, TrainLayout{.tp = 2, .pp = 2}, 0, 1);
  EXPECT_EQ(last[0].tensors.back().name, "output_layer.weight");
  EXPECT_EQ(last[0].tensors.back().blocks[0].hf_tensor, 0);  // the embedding's rows
}

struct TrainCase {
  std::string name;
  ModelSpec spec;
  TrainLayout layout;
};

void PrintTo(const TrainCase& c, std::ostream* os) { *os << c.name; }

std::vector<TrainCase> train_cases() {
  const ModelSpec tiny = *model_preset("tiny");
  ModelSpec tiny_tied = tiny;
  tiny_tied.tie_word_embeddings = true;
  ModelSpec tiny_fp32 = tiny;
  tiny_fp32.dtype = DType::kFloat32;
  const ModelSpec qwen = small_model(Architecture::kQwen2, 6, 8, 4, 1000, false, DType::kBFloat16);
  const ModelSpec qwen_tied = small_model(Architecture::kQwen2, 4, 6, 2, 300, true, DType::kFloat16);
  const ModelSpec mha = small_model(Architecture::kLlama, 6, 4, 4, 64, false, DType::kFloat32);
  ModelSpec qwen3 = small_model(Architecture::kQwen3, 4, 4, 2, 300, false, DType::kBFloat16);
  qwen3.head_dim = 16;  // explicit, not 48 / 4
  ModelSpec moe = qwen3;
  moe.architecture = Architecture::kQwen3Moe;
  moe.num_experts = 4;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 16;
  moe.mlp_only_layers = {2};
  ModelSpec mixtral = moe;
  mixtral.architecture = Architecture::kMixtral;
  mixtral.mlp_only_layers.clear();
  // qwen2_moe: q/k/v biases, a shared expert of width 24 beside 4 routed experts, layer 1 dense.
  ModelSpec qwen2_moe = small_qwen2_moe(4, 4, 16, 24, false, DType::kFloat16);
  qwen2_moe.mlp_only_layers = {1};
  return {
      {"qwen2_moe_tp2_dp2_ep2", qwen2_moe, {.tp = 2, .dp = 2, .ep = 2}},
      {"qwen2_moe_tp2_pp2_dp2_ep4_etp1", qwen2_moe, {.tp = 2, .pp = 2, .dp = 2, .ep = 4, .etp = 1}},
      {"qwen3_tp2_pp2", qwen3, {.tp = 2, .pp = 2}},
      {"moe_tp1_dp4_ep4", moe, {.tp = 1, .dp = 4, .ep = 4}},
      {"moe_tp2_pp2_dp2_ep2_etp2", moe, {.tp = 2, .pp = 2, .dp = 2, .ep = 2, .etp = 2}},
      {"mixtral_tp2_dp2_ep4_etp1", mixtral, {.tp = 2, .dp = 2, .ep = 4, .etp = 1}},
      {"moe_tp2_ep1", moe, {.tp = 2}},
      {"tiny_tp1", tiny, {.tp = 1}},
      {"tiny_tp2", tiny, {.tp = 2}},
      {"tiny_tp2_pp2", tiny, {.tp = 2, .pp = 2}},
      {"tiny_tp1_pp2_vpp2", tiny, {.tp = 1, .pp = 2, .vpp = 2}},
      {"tiny_tp2_pp4", tiny, {.tp = 2, .pp = 4}},
      {"tiny_tied_tp2_pp2_vpp2", tiny_tied, {.tp = 2, .pp = 2, .vpp = 2}},
      {"tiny_tied_tp2", tiny_tied, {.tp = 2}},
      {"tiny_fp32_tp2_divisor1", tiny_fp32, {.tp = 2, .make_vocab_size_divisible_by = 1}},
      {"qwen_tp4_pp3", qwen, {.tp = 4, .pp = 3}},
      {"qwen_tp2_pp3_vpp2", qwen, {.tp = 2, .pp = 3, .vpp = 2}},
      {"qwen_tied_fp16_tp2_pp2", qwen_tied, {.tp = 2, .pp = 2}},
      {"mha_tp4_pp2", mha, {.tp = 4, .pp = 2}},
  };
}

class TrainLayoutMatrixTest : public ::testing::TestWithParam<TrainCase> {};

TEST_P(TrainLayoutMatrixTest, every_buffer_matches_the_reference_bit_for_bit) {
  const TrainCase& c = GetParam();
  ASSERT_TRUE(c.spec.validate().empty());
  ASSERT_TRUE(c.layout.validate(c.spec).empty());
  for (int rank = 0; rank < c.layout.world_size(); ++rank) {
    const TrainLayout::Coord coord = c.layout.coord(rank);
    const int t = coord.tp_rank;
    const int p = coord.pp_rank;
    const auto buffers = train_param_buffers(c.spec, c.layout, coord);
    ASSERT_EQ(static_cast<int>(buffers.size()), c.layout.vpp);
    for (int v = 0; v < c.layout.vpp; ++v) {
      const BufferLayout& buffer = buffers[static_cast<std::size_t>(v)];
      SCOPED_TRACE("rank " + std::to_string(rank) + " chunk " + std::to_string(v));
      EXPECT_EQ(buffer.vpp_chunk, v);
      EXPECT_EQ(buffer.dtype, c.spec.dtype);
      expect_well_formed(buffer, c.spec);
      for (const std::uint32_t version : {0u, 7u}) {
        const auto expected =
            reference::expected_train_buffer(c.spec, c.layout, t, p, v, version, buffer, coord.dp_rank);
        const auto actual = materialize(buffer, version);
        EXPECT_EQ(reference::first_difference(buffer, expected, actual.data(), actual.size()), "");
      }
    }
  }
}

// Every element of every full tensor lives in the train shards of all ranks: dp times for split tensors, tp * dp
// times for replicated norms, routers and shared-expert gates, twice that for tied embeddings with pipeline stages
// (embedding and output_layer copy), and tp * dp / (etp * ep) times for experts.
TEST_P(TrainLayoutMatrixTest, shards_hold_every_full_tensor_element) {
  const TrainCase& c = GetParam();
  const auto hf = c.spec.hf_tensors();
  std::vector<std::vector<int>> count(hf.size());
  for (std::size_t i = 0; i < hf.size(); ++i) count[i].assign(static_cast<std::size_t>(hf[i].numel()), 0);
  for (int rank = 0; rank < c.layout.world_size(); ++rank) {
    for (const BufferLayout& buffer : train_param_buffers(c.spec, c.layout, c.layout.coord(rank))) {
      for (const LocalTensor& tensor : buffer.tensors) {
        for (const Block& b : tensor.blocks) {
          for (std::int64_t r = 0; r < b.rows; ++r) {
            for (std::int64_t col = 0; col < b.cols; ++col) {
              ++count[static_cast<std::size_t>(b.hf_tensor)][static_cast<std::size_t>(
                  (b.hf_row + r) * hf[static_cast<std::size_t>(b.hf_tensor)].cols + b.hf_col + col)];
            }
          }
        }
      }
    }
  }
  const int dp = c.layout.dp;
  for (std::size_t i = 0; i < hf.size(); ++i) {
    int copies = dp;
    switch (hf[i].kind) {
      case HfKind::kInputNorm:
      case HfKind::kPostAttnNorm:
      case HfKind::kFinalNorm:
      case HfKind::kQNorm:
      case HfKind::kKNorm:
      case HfKind::kRouter:
      case HfKind::kSharedExpertGate:
        copies = c.layout.tp * dp;
        break;
      case HfKind::kExpertGate:
      case HfKind::kExpertUp:
      case HfKind::kExpertDown:
        copies = c.layout.tp * dp / (c.layout.expert_tp() * c.layout.ep);
        break;
      default:
        break;
    }
    if (hf[i].kind == HfKind::kEmbedding && c.spec.tie_word_embeddings && c.layout.pp > 1) copies = 2 * dp;
    for (const int n : count[i]) {
      ASSERT_EQ(n, copies) << hf[i].name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, TrainLayoutMatrixTest, ::testing::ValuesIn(train_cases()),
                         [](const ::testing::TestParamInfo<TrainCase>& test) { return test.param.name; });

TEST(TrainLayoutTest, reference_rejects_a_buffer_with_an_unknown_name_or_shape) {
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout layout{.tp = 2};
  auto buffers = train_param_buffers(spec, layout, 0, 0);
  BufferLayout renamed = buffers[0];
  renamed.tensors[2].name = "decoder.layers.0.self_attention.linear_qkv.weights";
  EXPECT_THROW(reference::expected_train_buffer(spec, layout, 0, 0, 0, 0, renamed), Error);
  BufferLayout reshaped = buffers[0];
  reshaped.tensors[2].shape = {32, 128};
  reshaped.tensors[2].rows = 32;
  reshaped.tensors[2].cols = 128;
  EXPECT_THROW(reference::expected_train_buffer(spec, layout, 0, 0, 0, 0, reshaped), Error);
  BufferLayout missing = buffers[0];
  missing.tensors.pop_back();
  EXPECT_THROW(reference::expected_train_buffer(spec, layout, 0, 0, 0, 0, missing), Error);
  // A wrong block (the k rows of the other group) is caught bit-exactly.
  BufferLayout wrong = buffers[0];
  wrong.tensors[2].blocks[1].hf_row = 16;
  const auto expected = reference::expected_train_buffer(spec, layout, 0, 0, 0, 0, wrong);
  const auto actual = materialize(wrong, 0);
  EXPECT_NE(
      reference::first_difference(wrong, expected, actual.data(), actual.size()).find("linear_qkv.weight element"),
      std::string::npos);
}

}  // namespace
}  // namespace hybridshard::core
