#include "hybridshard/core/model_spec.h"

#include <gtest/gtest.h>

#include <string>

#include "hybridshard/core/dtype.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/residency.h"
#include "hybridshard/core/weight_generator.h"
#include "reference.h"

namespace hybridshard::core {
namespace {

// Whether a problem tagged `field` says `text`.
bool mentions(const std::vector<ModelSpec::Problem>& problems, ModelSpec::Field field, const std::string& text) {
  for (const ModelSpec::Problem& problem : problems) {
    if (problem.field == field && problem.message.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(ModelSpecTest, presets_are_valid_and_have_their_published_parameter_counts) {
  const std::vector<std::pair<std::string, std::int64_t>> expected = {
      {"llama3-8b", 8'030'261'248},
      {"llama3-70b", 70'553'706'496},
      {"qwen2.5-7b", 7'615'616'512},
      {"qwen2.5-32b", 32'763'876'352},
      {"qwen3-8b", 8'190'735'360},
      {"qwen3-30b-a3b", 30'532'122'624},
      {"qwen3-235b-a22b", 235'093'634'560},
      {"mixtral-8x7b", 46'702'792'704},
      // Qwen1.5-MoE-A2.7B: "14.3B" on its model card; Qwen2-57B-A14B: 57.4 B (routed, shared experts and biases)
      {"qwen1.5-moe-a2.7b", 14'315'784'192},
      {"qwen2-57b-a14b", 57'408'658'944},
  };
  for (const auto& [name, parameters] : expected) {
    const auto spec = model_preset(name);
    ASSERT_TRUE(spec.has_value()) << name;
    EXPECT_TRUE(spec->validate().empty())
        << name << ": " << (spec->validate().empty() ? "" : spec->validate()[0].message);
    EXPECT_EQ(spec->num_parameters(), parameters) << name;
  }
  EXPECT_EQ(model_preset_names().size(), 11u);
  for (const std::string& name : model_preset_names()) EXPECT_TRUE(model_preset(name).has_value()) << name;
  EXPECT_FALSE(model_preset("gpt-5").has_value());
}

TEST(ModelSpecTest, moe_tensors_use_hugging_face_per_expert_names_and_dense_layers_where_the_config_says) {
  ModelSpec spec = *model_preset("qwen3-30b-a3b");
  spec.num_hidden_layers = 4;
  spec.num_experts = 3;
  spec.num_experts_per_tok = 2;
  spec.decoder_sparse_step = 2;  // layers 1 and 3 sparse ...
  spec.mlp_only_layers = {3};    // ... but 3 is listed dense
  EXPECT_TRUE(spec.validate().empty());
  EXPECT_FALSE(spec.layer_has_experts(0));
  EXPECT_TRUE(spec.layer_has_experts(1));
  EXPECT_FALSE(spec.layer_has_experts(3));
  std::vector<std::string> names;
  for (const HfTensor& t : spec.hf_tensors()) {
    if (t.layer == 1 || t.layer == 0) names.push_back(t.name);
  }
  const std::vector<std::string> expected = {"model.layers.0.input_layernorm.weight",
                                             "model.layers.0.self_attn.q_proj.weight",
                                             "model.layers.0.self_attn.k_proj.weight",
                                             "model.layers.0.self_attn.v_proj.weight",
                                             "model.layers.0.self_attn.o_proj.weight",
                                             "model.layers.0.self_attn.q_norm.weight",
                                             "model.layers.0.self_attn.k_norm.weight",
                                             "model.layers.0.post_attention_layernorm.weight",
                                             "model.layers.0.mlp.gate_proj.weight",
                                             "model.layers.0.mlp.up_proj.weight",
                                             "model.layers.0.mlp.down_proj.weight",
                                             "model.layers.1.input_layernorm.weight",
                                             "model.layers.1.self_attn.q_proj.weight",
                                             "model.layers.1.self_attn.k_proj.weight",
                                             "model.layers.1.self_attn.v_proj.weight",
                                             "model.layers.1.self_attn.o_proj.weight",
                                             "model.layers.1.self_attn.q_norm.weight",
                                             "model.layers.1.self_attn.k_norm.weight",
                                             "model.layers.1.post_attention_layernorm.weight",
                                             "model.layers.1.mlp.gate.weight",
                                             "model.layers.1.mlp.experts.0.gate_proj.weight",
                                             "model.layers.1.mlp.experts.0.up_proj.weight",
                                             "model.layers.1.mlp.experts.0.down_proj.weight",
                                             "model.layers.1.mlp.experts.1.gate_proj.weight",
                                             "model.layers.1.mlp.experts.1.up_proj.weight",
                                             "model.layers.1.mlp.experts.1.down_proj.weight",
                                             "model.layers.1.mlp.experts.2.gate_proj.weight",
                                             "model.layers.1.mlp.experts.2.up_proj.weight",
                                             "model.layers.1.mlp.experts.2.down_proj.weight"};
  EXPECT_EQ(names, expected);
  const std::vector<HfTensor> tensors = spec.hf_tensors();
  EXPECT_EQ(tensors[static_cast<std::size_t>(spec.hf_tensors().size() - 1)].name, "lm_head.weight");
  for (const HfTensor& t : tensors) {
    if (t.name == "model.layers.1.mlp.experts.2.down_proj.weight") {
      EXPECT_EQ(t.expert, 2);
      EXPECT_EQ(t.rows, 2048);
      EXPECT_EQ(t.cols, 768);
    }
    if (t.name == "model.layers.1.self_attn.q_norm.weight") {
      EXPECT_EQ(t.rows, 128);
    }
  }
  ModelSpec mixtral = *model_preset("mixtral-8x7b");
  mixtral.num_hidden_layers = 1;
  EXPECT_EQ(mixtral.hf_tensors()[7].name, "model.layers.0.block_sparse_moe.gate.weight");
  EXPECT_EQ(mixtral.hf_tensors()[8].name, "model.layers.0.block_sparse_moe.experts.0.w1.weight");
  EXPECT_EQ(mixtral.hf_tensors()[9].name, "model.layers.0.block_sparse_moe.experts.0.w3.weight");
  EXPECT_EQ(mixtral.hf_tensors()[10].name, "model.layers.0.block_sparse_moe.experts.0.w2.weight");
}

TEST(ModelSpecTest, qwen2_moe_layers_hold_qkv_biases_routed_experts_then_the_shared_expert_and_its_gate) {
  ModelSpec spec = *model_preset("qwen1.5-moe-a2.7b");
  EXPECT_EQ(spec.architecture, Architecture::kQwen2Moe);
  EXPECT_FALSE(spec.norm_topk_prob);
  spec.num_hidden_layers = 2;
  spec.num_experts = 2;
  spec.num_experts_per_tok = 1;
  spec.mlp_only_layers = {0};
  ASSERT_TRUE(spec.validate().empty()) << spec.validate()[0].message;
  std::vector<std::string> names;
  for (const HfTensor& t : spec.hf_tensors()) {
    if (t.layer == 1) names.push_back(t.name.substr(std::string("model.layers.1.").size()));
  }
  const std::vector<std::string> expected = {"input_layernorm.weight",
                                             "self_attn.q_proj.weight",
                                             "self_attn.k_proj.weight",
                                             "self_attn.v_proj.weight",
                                             "self_attn.q_proj.bias",
                                             "self_attn.k_proj.bias",
                                             "self_attn.v_proj.bias",
                                             "self_attn.o_proj.weight",
                                             "post_attention_layernorm.weight",
                                             "mlp.gate.weight",
                                             "mlp.experts.0.gate_proj.weight",
                                             "mlp.experts.0.up_proj.weight",
                                             "mlp.experts.0.down_proj.weight",
                                             "mlp.experts.1.gate_proj.weight",
                                             "mlp.experts.1.up_proj.weight",
                                             "mlp.experts.1.down_proj.weight",
                                             "mlp.shared_expert.gate_proj.weight",
                                             "mlp.shared_expert.up_proj.weight",
                                             "mlp.shared_expert.down_proj.weight",
                                             "mlp.shared_expert_gate.weight"};
  EXPECT_EQ(names, expected);
  std::int64_t total = 0;
  for (const HfTensor& t : spec.hf_tensors()) {
    total += t.numel();
    if (t.kind == HfKind::kSharedGateProj) {
      EXPECT_EQ(std::make_pair(t.rows, t.cols), std::make_pair(5632L, 2048L));
    }
    if (t.kind == HfKind::kSharedDownProj) {
      EXPECT_EQ(std::make_pair(t.rows, t.cols), std::make_pair(2048L, 5632L));
    }
    if (t.kind == HfKind::kSharedExpertGate) {
      EXPECT_EQ(std::make_pair(t.rows, t.cols), std::make_pair(1L, 2048L));
      EXPECT_FALSE(t.is_1d);
      EXPECT_EQ(t.expert, -1);
    }
    if (t.layer == 0) {
      EXPECT_EQ(t.name.find("shared"), std::string::npos) << t.name;  // layer 0 is dense: no shared expert
    }
  }
  EXPECT_EQ(total, spec.num_parameters());
  EXPECT_EQ(parse_architecture("Qwen2MoeForCausalLM"), Architecture::kQwen2Moe);
  EXPECT_EQ(architecture_name(Architecture::kQwen2Moe), "qwen2_moe");
}

TEST(ModelSpecTest, validate_names_every_expert_key) {
  ModelSpec spec = *model_preset("qwen3-30b-a3b");
  spec.num_experts_per_tok = 200;
  spec.moe_intermediate_size = 0;
  spec.mlp_only_layers = {48};
  const auto problems = spec.validate();
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kNumExpertsPerTok,
                       "num_experts_per_tok must be in [1, num_experts = 128], got 200"));
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kMoeIntermediateSize, "moe_intermediate_size must be positive"));
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kMlpOnlyLayers, "mlp_only_layers names layer 48"));
  ModelSpec llama = *model_preset("tiny");
  llama.num_experts = 8;
  EXPECT_TRUE(mentions(llama.validate(), ModelSpec::Field::kNumExperts, "llama has no experts"));
  ModelSpec qwen2_moe = *model_preset("qwen2-57b-a14b");
  qwen2_moe.shared_expert_intermediate_size = 0;
  EXPECT_TRUE(mentions(qwen2_moe.validate(), ModelSpec::Field::kSharedExpertIntermediateSize,
                       "shared_expert_intermediate_size must be positive, got 0"));
  ModelSpec qwen3_moe = *model_preset("qwen3-30b-a3b");
  qwen3_moe.shared_expert_intermediate_size = 512;
  EXPECT_TRUE(mentions(qwen3_moe.validate(), ModelSpec::Field::kSharedExpertIntermediateSize,
                       "shared_expert_intermediate_size is for qwen2_moe; qwen3_moe has no shared expert"));
  EXPECT_EQ(parse_architecture("Qwen3MoeForCausalLM"), Architecture::kQwen3Moe);
  EXPECT_EQ(parse_architecture("mixtral"), Architecture::kMixtral);
  EXPECT_EQ(architecture_name(Architecture::kQwen3), "qwen3");
}

TEST(ModelSpecTest, tiny_preset_is_the_quickstart_model) {
  const ModelSpec spec = *model_preset("tiny");
  EXPECT_EQ(spec.architecture, Architecture::kLlama);
  EXPECT_EQ(spec.num_hidden_layers, 4);
  EXPECT_EQ(spec.hidden_size, 64);
  EXPECT_EQ(spec.num_attention_heads, 4);
  EXPECT_EQ(spec.num_key_value_heads, 2);
  EXPECT_EQ(spec.intermediate_size, 128);
  EXPECT_EQ(spec.vocab_size, 500);
  EXPECT_FALSE(spec.tie_word_embeddings);
  EXPECT_EQ(spec.dtype, DType::kBFloat16);
  EXPECT_EQ(spec.resolved_head_dim(), 16);
  EXPECT_EQ(model_preset("qwen2.5-32b")->architecture, Architecture::kQwen2);
  EXPECT_EQ(model_preset("qwen2.5-32b")->rope_theta, 1e6);
  EXPECT_EQ(model_preset("llama3-8b")->rope_theta, 500000.0);
}

TEST(ModelSpecTest, hf_tensors_are_in_checkpoint_order_with_positions_as_ids) {
  ModelSpec spec = *model_preset("tiny");
  spec.architecture = Architecture::kQwen2;
  spec.num_hidden_layers = 2;
  const std::vector<HfTensor> tensors = spec.hf_tensors();
  const std::vector<std::string> layer = {
      "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
      "self_attn.v_proj.weight", "self_attn.q_proj.bias",   "self_attn.k_proj.bias",
      "self_attn.v_proj.bias",   "self_attn.o_proj.weight", "post_attention_layernorm.weight",
      "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight"};
  std::vector<std::string> names = {"model.embed_tokens.weight"};
  for (int l = 0; l < 2; ++l) {
    for (const std::string& n : layer) names.push_back("model.layers." + std::to_string(l) + "." + n);
  }
  names.push_back("model.norm.weight");
  names.push_back("lm_head.weight");
  ASSERT_EQ(tensors.size(), names.size());
  std::int64_t total = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(tensors[i].name, names[i]);
    EXPECT_EQ(tensors[i].id, static_cast<int>(i));
    total += tensors[i].numel();
  }
  EXPECT_EQ(total, spec.num_parameters());
  EXPECT_EQ(tensors[2].kind, HfKind::kQ);
  EXPECT_EQ(tensors[2].rows, 64);
  EXPECT_EQ(tensors[3].rows, 32);  // k: 2 kv heads of 16
  EXPECT_EQ(tensors[5].is_1d, true);
  EXPECT_EQ(tensors[5].cols, 1);
  EXPECT_EQ(tensors[8].rows, 64);    // o: [hidden, heads*head_dim]
  EXPECT_EQ(tensors[12].cols, 128);  // down: [hidden, intermediate]
  EXPECT_EQ(tensors[12].layer, 0);
}

TEST(ModelSpecTest, tied_embeddings_have_no_lm_head) {
  ModelSpec spec = *model_preset("tiny");
  spec.tie_word_embeddings = true;
  const auto tensors = spec.hf_tensors();
  EXPECT_EQ(tensors.back().name, "model.norm.weight");
  EXPECT_EQ(spec.num_parameters(), model_preset("tiny")->num_parameters() - 500 * 64);
}

TEST(ModelSpecTest, validate_reports_every_problem_naming_the_key) {
  ModelSpec spec;
  spec.hidden_size = 66;
  spec.num_attention_heads = 4;
  spec.num_key_value_heads = 3;
  spec.vocab_size = 0;
  spec.intermediate_size = -1;
  const auto problems = spec.validate();
  EXPECT_EQ(problems.size(), 4u);
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kVocabSize, "vocab_size"));
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kIntermediateSize, "intermediate_size"));
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kNumKeyValueHeads,
                       "num_key_value_heads 3 does not divide num_attention_heads 4"));
  EXPECT_TRUE(mentions(problems, ModelSpec::Field::kNumAttentionHeads, "hidden_size 66"));
  spec.head_dim = 16;  // an explicit head_dim lifts the hidden_size rule
  EXPECT_EQ(spec.validate().size(), 3u);
  EXPECT_TRUE(ModelSpec{}.validate().empty());
}

TEST(ModelSpecTest, names_parse_back) {
  for (const DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    EXPECT_EQ(parse_dtype(dtype_name(dtype)), dtype);
  }
  EXPECT_EQ(parse_dtype("bfloat16"), DType::kBFloat16);
  EXPECT_EQ(parse_dtype("half"), DType::kFloat16);
  EXPECT_EQ(parse_dtype("float"), DType::kFloat32);
  EXPECT_FALSE(parse_dtype("int8").has_value());
  EXPECT_EQ(parse_architecture("qwen2"), Architecture::kQwen2);
  EXPECT_EQ(architecture_name(Architecture::kLlama), "llama");
  EXPECT_FALSE(parse_architecture("mistral").has_value());
  for (const Residency residency : {Residency::kGpu, Residency::kCpu, Residency::kNone}) {
    EXPECT_EQ(parse_residency(residency_name(residency)), residency);
  }
  for (int k = 0; k < 7; ++k) {
    const auto kind = static_cast<BufferKind>(k);
    EXPECT_EQ(parse_buffer_kind(buffer_kind_name(kind)), kind);
  }
  EXPECT_EQ(buffer_kind_name(BufferKind::kOptimizerState), "optimizer");
  EXPECT_FALSE(parse_residency("disk").has_value());
}

TEST(ErrorTest, what_names_file_line_rank_expression_and_library) {
  set_error_rank(-1);
  const Error plain("no rank yet", "a.cc", 7);
  EXPECT_STREQ(plain.what(), "a.cc:7: no rank yet");
  set_error_rank(37);
  const CommError full("all-gather with rank 3 failed", "comm.cc", 12, "ncclAllGather(...)", "unhandled cuda error");
  EXPECT_STREQ(full.what(),
               "comm.cc:12: [rank 37] all-gather with rank 3 failed (expression: ncclAllGather(...); library: "
               "unhandled cuda error)");
  EXPECT_EQ(full.line(), 12);
  EXPECT_EQ(full.expression(), "ncclAllGather(...)");
  EXPECT_EQ(error_rank(), 37);
  set_error_rank(-1);
  try {
    HS_CHECK(1 + 1 == 3, "arithmetic");
    FAIL() << "HS_CHECK did not throw";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("arithmetic (expression: 1 + 1 == 3)"), std::string::npos);
    EXPECT_NE(error.file().find("model_spec_test.cc"), std::string::npos);
  }
  EXPECT_THROW(HS_THROW(TimeoutError, "wait"), CommError);
}

TEST(ReferenceTest, bit_conversions_are_exact_for_weight_values_and_round_to_nearest_even) {
  for (int k = -128; k < 128; ++k) {
    const float value = static_cast<float>(k) / 128.0f;
    EXPECT_EQ(reference::float_to_bf16(value), float_to_bf16_bits(value));
    EXPECT_EQ(reference::bf16_to_float(reference::float_to_bf16(value)), value);
    EXPECT_EQ(reference::fp16_to_float(reference::float_to_fp16(value)), value);
  }
  EXPECT_EQ(reference::float_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(reference::float_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(reference::float_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(reference::float_to_fp16(1e6f), 0x7C00);
  EXPECT_EQ(reference::float_to_fp16(5.9604645e-8f), 0x0001);       // smallest subnormal
  EXPECT_EQ(reference::float_to_fp16(1.0f + 1.0f / 2048), 0x3C00);  // tie rounds to even
  EXPECT_EQ(reference::float_to_fp16(1.0f + 3.0f / 2048), 0x3C02);
  EXPECT_EQ(reference::float_to_bf16(1.0f + 1.0f / 256), 0x3F80);
  EXPECT_EQ(reference::float_to_bf16(1.0f + 3.0f / 256), 0x3F82);
  EXPECT_EQ(reference::fp16_to_float(0x0001), 5.9604645e-8f);
}

TEST(ReferenceTest, weight_values_depend_on_tensor_position_and_version) {
  int differ_version = 0;
  int differ_tensor = 0;
  for (int row = 0; row < 64; ++row) {
    differ_version += weight_value(3, row, 5, 0) != weight_value(3, row, 5, 1);
    differ_tensor += weight_value(3, row, 5, 0) != weight_value(4, row, 5, 0);
  }
  EXPECT_GT(differ_version, 32);
  EXPECT_GT(differ_tensor, 32);
}

}  // namespace
}  // namespace hybridshard::core
