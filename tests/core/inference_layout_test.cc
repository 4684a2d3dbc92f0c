#include "hybridshard/core/inference_layout.h"

#include <gtest/gtest.h>

#include <string>

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

TEST(InferenceLayoutTest, rank_order_is_tp_fastest_then_dp) {
  const InferenceLayout layout{.tp = 4, .world_size = 8};
  EXPECT_EQ(layout.dp(), 2);
  EXPECT_EQ(layout.coord(6).tp_rank, 2);
  EXPECT_EQ(layout.coord(6).dp_rank, 1);
  for (int rank = 0; rank < 8; ++rank) EXPECT_EQ(layout.rank_of(layout.coord(rank)), rank);
}

TEST(InferenceLayoutTest, vocabulary_is_padded_to_64_and_kv_heads_replicate_beyond_their_number) {
  const ModelSpec spec = *model_preset("tiny");  // vocab 500, 2 kv heads
  EXPECT_EQ((InferenceLayout{.tp = 1}).padded_vocab(spec), 512);
  EXPECT_EQ((InferenceLayout{.tp = 1}).kv_heads_per_rank(spec), 2);
  EXPECT_EQ((InferenceLayout{.tp = 2}).kv_heads_per_rank(spec), 1);
  EXPECT_EQ((InferenceLayout{.tp = 4}).kv_heads_per_rank(spec), 1);
  EXPECT_EQ((InferenceLayout{.tp = 8}).padded_vocab(*model_preset("qwen2.5-7b")), 152064);
}

TEST(InferenceLayoutTest, tp_beyond_kv_heads_replicates_each_kv_head_on_consecutive_ranks) {
  const ModelSpec spec = *model_preset("tiny");  // 4 heads, 2 kv heads, head_dim 16
  const InferenceLayout layout{.tp = 4, .world_size = 4};
  for (int r = 0; r < 4; ++r) {
    const BufferLayout buffer = inference_param_buffer(spec, layout, r);
    const LocalTensor& qkv = buffer.tensors[2];
    ASSERT_EQ(qkv.name, "model.layers.0.self_attn.qkv_proj.weight");
    EXPECT_EQ(qkv.shape, (std::vector<std::int64_t>{48, 64}));  // one q head, one k head, one v head
    ASSERT_EQ(qkv.blocks.size(), 3u);
    EXPECT_EQ(qkv.blocks[0].hf_row, 16 * r);
    EXPECT_EQ(qkv.blocks[1].hf_row, 16 * (r / 2)) << "rank " << r;
    EXPECT_EQ(qkv.blocks[2].hf_row, 16 * (r / 2));
  }
}

TEST(InferenceLayoutTest, tensors_are_vllm_names_in_order_and_tied_models_have_no_lm_head) {
  ModelSpec spec = *model_preset("tiny");
  spec.num_hidden_layers = 1;
  const BufferLayout untied = inference_param_buffer(spec, InferenceLayout{.tp = 2, .world_size = 2}, 1);
  std::vector<std::string> names;
  for (const LocalTensor& t : untied.tensors) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                       "model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.self_attn.o_proj.weight",
                       "model.layers.0.post_attention_layernorm.weight", "model.layers.0.mlp.gate_up_proj.weight",
                       "model.layers.0.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"}));
  EXPECT_EQ(untied.name, "rollout.params");
  EXPECT_EQ(untied.pp_rank, -1);
  EXPECT_EQ(untied.tensors[0].shape, (std::vector<std::int64_t>{256, 64}));
  EXPECT_EQ(untied.tensors[0].blocks[0].rows, 244);                         // rows 256..499; 12 padding rows
  EXPECT_EQ(untied.tensors[3].shape, (std::vector<std::int64_t>{64, 32}));  // o_proj columns 32..63
  EXPECT_EQ(untied.tensors[3].blocks[0].hf_col, 32);
  spec.tie_word_embeddings = true;
  const BufferLayout tied = inference_param_buffer(spec, InferenceLayout{.tp = 2, .world_size = 2}, 1);
  EXPECT_EQ(tied.tensors.back().name, "model.norm.weight");
}

TEST(InferenceLayoutTest, validate_reports_every_problem) {
  const ModelSpec spec = *model_preset("tiny");  // 4 heads, 2 kv heads, intermediate 128, vocab 500 -> 512
  EXPECT_TRUE((InferenceLayout{.tp = 4, .world_size = 8}).validate(spec).empty());
  ModelSpec odd = spec;
  odd.num_attention_heads = 12;
  odd.num_key_value_heads = 4;
  odd.hidden_size = 96;
  odd.intermediate_size = 100;
  const auto problems = InferenceLayout{.tp = 3, .world_size = 4}.validate(odd);
  EXPECT_TRUE(mentions(problems, InferenceLayout::Field::kTp, "does not divide the world size 4"));
  EXPECT_TRUE(mentions(problems, InferenceLayout::Field::kTp,
                       "must either divide num_key_value_heads 4 or be a multiple of it"));
  EXPECT_TRUE(mentions(problems, InferenceLayout::Field::kTp, "does not divide intermediate_size 100"));
  EXPECT_TRUE(mentions(problems, InferenceLayout::Field::kTp, "does not divide the padded vocabulary 512"));
  EXPECT_EQ(problems.size(), 4u);
  EXPECT_TRUE(mentions(InferenceLayout{.tp = 8, .world_size = 8}.validate(spec), InferenceLayout::Field::kTp,
                       "num_attention_heads 4"));
  EXPECT_TRUE(mentions(InferenceLayout{.tp = 0}.validate(spec), InferenceLayout::Field::kTp, "must be at least 1"));
}

TEST(InferenceLayoutTest, fused_moe_tensors_follow_vllm_and_validate_explains_what_does_not_divide) {
  ModelSpec moe = small_model(Architecture::kQwen3Moe, 1, 4, 2, 300, false, DType::kBFloat16);
  moe.num_experts = 5;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 10;
  const InferenceLayout tp_experts{.tp = 2, .world_size = 2};
  const BufferLayout buffer = inference_param_buffer(moe, tp_experts, 1);
  std::vector<std::string> names;
  for (const LocalTensor& tensor : buffer.tensors) names.push_back(tensor.name);
  EXPECT_EQ(names[3], "model.layers.0.self_attn.q_norm.weight");
  EXPECT_EQ(names[7], "model.layers.0.mlp.gate.weight");
  EXPECT_EQ(names[8], "model.layers.0.mlp.experts.w13_weight");
  EXPECT_EQ(names[9], "model.layers.0.mlp.experts.w2_weight");
  EXPECT_EQ(buffer.tensors[8].shape, (std::vector<std::int64_t>{5, 10, 48}));
  EXPECT_EQ(buffer.tensors[9].shape, (std::vector<std::int64_t>{5, 48, 5}));
  // Expert parallel: 5 experts over 3 ranks as vLLM's linear placement puts them: 2, 2, 1.
  const InferenceLayout ep{.tp = 3, .world_size = 3, .expert_parallel = true};
  EXPECT_EQ(ep.experts_of(moe, 0).count, 2);
  EXPECT_EQ(ep.experts_of(moe, 1).first, 2);
  EXPECT_EQ(ep.experts_of(moe, 2).first, 4);
  EXPECT_EQ(ep.experts_of(moe, 2).count, 1);
  EXPECT_TRUE(mentions(InferenceLayout{.tp = 4, .world_size = 4}.validate(moe), InferenceLayout::Field::kTp,
                       "does not divide moe_intermediate_size 10"));
  EXPECT_TRUE(mentions(InferenceLayout{.tp = 8, .world_size = 8, .expert_parallel = true}.validate(moe),
                       InferenceLayout::Field::kTp, "exceeds num_experts 5"));
  EXPECT_TRUE(
      mentions(InferenceLayout{.tp = 1, .world_size = 1, .expert_parallel = true}.validate(*model_preset("tiny")),
               InferenceLayout::Field::kExpertParallel, "llama has none"));
}

TEST(InferenceLayoutTest, qwen2_moe_shared_expert_is_a_tensor_parallel_mlp_beside_the_fused_experts) {
  ModelSpec spec = small_qwen2_moe(1, 5, 10, 24, false, DType::kBFloat16);
  for (const bool expert_parallel : {false, true}) {
    SCOPED_TRACE(expert_parallel ? "expert parallel" : "tensor-parallel experts");
    const BufferLayout buffer =
        inference_param_buffer(spec, InferenceLayout{.tp = 2, .world_size = 2, .expert_parallel = expert_parallel}, 1);
    const auto [names, shapes] = tensors_named(buffer, ".mlp.");
    const std::vector<std::string> expected = {"model.layers.0.mlp.gate.weight",
                                               "model.layers.0.mlp.shared_expert_gate.weight",
                                               "model.layers.0.mlp.shared_expert.gate_up_proj.weight",
                                               "model.layers.0.mlp.shared_expert.down_proj.weight",
                                               "model.layers.0.mlp.experts.w13_weight",
                                               "model.layers.0.mlp.experts.w2_weight"};
    EXPECT_EQ(names, expected);
    // The shared expert is split over tp' either way; rank 1 of 2 holds 2 of 5 experts whole with expert parallelism.
    const std::vector<std::vector<std::int64_t>> expected_shapes =
        expert_parallel
            ? std::vector<std::vector<std::int64_t>>{{5, 48}, {1, 48}, {24, 48}, {48, 12}, {2, 20, 48}, {2, 48, 10}}
            : std::vector<std::vector<std::int64_t>>{{5, 48}, {1, 48}, {24, 48}, {48, 12}, {5, 10, 48}, {5, 48, 5}};
    EXPECT_EQ(shapes, expected_shapes);
  }
  EXPECT_TRUE(mentions(InferenceLayout{.tp = 5, .world_size = 5, .expert_parallel = true}.validate(spec),
                       InferenceLayout::Field::kTp, "does not divide shared_expert_intermediate_size 24"));
  spec.num_experts = 2;  // vLLM's Qwen2MoeSparseMoeBlock: tp' must not exceed the experts, even with TP experts
  EXPECT_TRUE(mentions(InferenceLayout{.tp = 4, .world_size = 4}.validate(spec), InferenceLayout::Field::kTp,
                       "exceeds num_experts 2"));
}

struct InferenceCase {
  std::string name;
  ModelSpec spec;
  int tp = 1;
  bool expert_parallel = false;
};

void PrintTo(const InferenceCase& c, std::ostream* os) { *os << c.name; }

std::vector<InferenceCase> inference_cases() {
  const ModelSpec tiny = *model_preset("tiny");
  ModelSpec tiny_tied_fp32 = tiny;
  tiny_tied_fp32.tie_word_embeddings = true;
  tiny_tied_fp32.dtype = DType::kFloat32;
  const ModelSpec qwen = small_model(Architecture::kQwen2, 3, 8, 2, 1000, false, DType::kBFloat16);
  const ModelSpec qwen_fp16 = small_model(Architecture::kQwen2, 2, 8, 8, 200, true, DType::kFloat16);
  ModelSpec qwen3 = small_model(Architecture::kQwen3, 2, 4, 2, 300, false, DType::kBFloat16);
  qwen3.head_dim = 16;
  ModelSpec moe = qwen3;
  moe.architecture = Architecture::kQwen3Moe;
  moe.num_experts = 6;
  moe.num_experts_per_tok = 2;
  moe.moe_intermediate_size = 16;
  moe.decoder_sparse_step = 2;  // layer 1 has experts, layer 0 a dense MLP
  ModelSpec mixtral = moe;
  mixtral.architecture = Architecture::kMixtral;
  mixtral.decoder_sparse_step = 1;
  mixtral.dtype = DType::kFloat32;
  ModelSpec qwen2_moe = small_qwen2_moe(2, 6, 16, 32, true, DType::kFloat16);
  qwen2_moe.num_experts_per_tok = 4;
  return {
      {"qwen2_moe_tp_experts_tp4", qwen2_moe, 4},
      {"qwen2_moe_expert_parallel_tp4_uneven", qwen2_moe, 4, true},
      {"qwen3_tp2", qwen3, 2},
      {"moe_tp_experts_tp2", moe, 2},
      {"moe_tp_experts_tp4", moe, 4},
      {"moe_expert_parallel_tp4_uneven", moe, 4, true},
      {"mixtral_fp32_expert_parallel_tp2", mixtral, 2, true},
      {"tiny_tp1", tiny, 1},
      {"tiny_tp2", tiny, 2},
      {"tiny_tp4_kv_replicated", tiny, 4},
      {"tiny_tied_fp32_tp2", tiny_tied_fp32, 2},
      {"qwen_tp1", qwen, 1},
      {"qwen_tp2", qwen, 2},
      {"qwen_tp8_kv_replicated", qwen, 8},
      {"qwen_tied_fp16_tp4", qwen_fp16, 4},
  };
}

class InferenceLayoutMatrixTest : public ::testing::TestWithParam<InferenceCase> {};

TEST_P(InferenceLayoutMatrixTest, every_rank_matches_the_reference_bit_for_bit) {
  const InferenceCase& c = GetParam();
  const InferenceLayout layout{.tp = c.tp, .world_size = c.tp, .expert_parallel = c.expert_parallel};
  ASSERT_TRUE(layout.validate(c.spec).empty());
  for (int r = 0; r < c.tp; ++r) {
    SCOPED_TRACE("tp rank " + std::to_string(r));
    const BufferLayout buffer = inference_param_buffer(c.spec, layout, r);
    EXPECT_EQ(buffer.dtype, c.spec.dtype);
    expect_well_formed(buffer, c.spec);
    for (const std::uint32_t version : {0u, 3u}) {
      const auto expected = reference::expected_inference_buffer(c.spec, layout, r, version, buffer);
      const auto actual = materialize(buffer, version);
      EXPECT_EQ(reference::first_difference(buffer, expected, actual.data(), actual.size()), "");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, InferenceLayoutMatrixTest, ::testing::ValuesIn(inference_cases()),
                         [](const ::testing::TestParamInfo<InferenceCase>& test) { return test.param.name; });

}  // namespace
}  // namespace hybridshard::core
