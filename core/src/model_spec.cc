#include "hybridshard/core/model_spec.h"

#include <algorithm>
#include <string>
#include <utility>

namespace hybridshard::core {
namespace {

std::string num(std::int64_t value) { return std::to_string(value); }

}  // namespace

std::string_view architecture_name(Architecture architecture) {
  switch (architecture) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kQwen3:
      return "qwen3";
    case Architecture::kQwen3Moe:
      return "qwen3_moe";
    case Architecture::kMixtral:
      return "mixtral";
    case Architecture::kQwen2Moe:
      return "qwen2_moe";
  }
  return "unknown";
}

std::optional<Architecture> parse_architecture(std::string_view name) {
  if (name == "llama" || name == "LlamaForCausalLM") return Architecture::kLlama;
  if (name == "qwen2" || name == "Qwen2ForCausalLM") return Architecture::kQwen2;
  if (name == "qwen3" || name == "Qwen3ForCausalLM") return Architecture::kQwen3;
  if (name == "qwen3_moe" || name == "Qwen3MoeForCausalLM") return Architecture::kQwen3Moe;
  if (name == "mixtral" || name == "MixtralForCausalLM") return Architecture::kMixtral;
  if (name == "qwen2_moe" || name == "Qwen2MoeForCausalLM") return Architecture::kQwen2Moe;
  return std::nullopt;
}

bool ModelSpec::layer_has_experts(std::int64_t layer) const {
  if (!is_moe() || num_experts <= 0 || decoder_sparse_step <= 0) return false;
  for (const std::int64_t dense : mlp_only_layers) {
    if (dense == layer) return false;
  }
  return (layer + 1) % decoder_sparse_step == 0;
}

std::string_view ModelSpec::field_name(Field field) {
  switch (field) {
    case Field::kNumHiddenLayers:
      return "num_hidden_layers";
    case Field::kHiddenSize:
      return "hidden_size";
    case Field::kNumAttentionHeads:
      return "num_attention_heads";
    case Field::kNumKeyValueHeads:
      return "num_key_value_heads";
    case Field::kIntermediateSize:
      return "intermediate_size";
    case Field::kVocabSize:
      return "vocab_size";
    case Field::kHeadDim:
      return "head_dim";
    case Field::kRopeTheta:
      return "rope_theta";
    case Field::kRmsNormEps:
      return "rms_norm_eps";
    case Field::kMaxPositionEmbeddings:
      return "max_position_embeddings";
    case Field::kNumExperts:
      return "num_experts";
    case Field::kNumExpertsPerTok:
      return "num_experts_per_tok";
    case Field::kMoeIntermediateSize:
      return "moe_intermediate_size";
    case Field::kDecoderSparseStep:
      return "decoder_sparse_step";
    case Field::kMlpOnlyLayers:
      return "mlp_only_layers";
    case Field::kSharedExpertIntermediateSize:
      return "shared_expert_intermediate_size";
  }
  return "unknown";
}

std::vector<ModelSpec::Problem> ModelSpec::validate() const {
  std::vector<Problem> problems;
  const auto problem = [&](Field field, std::string message) { problems.push_back({field, std::move(message)}); };
  const auto require_positive = [&](Field field, std::int64_t value) {
    if (value <= 0) problem(field, std::string(field_name(field)) + " must be positive, got " + num(value));
  };
  require_positive(Field::kNumHiddenLayers, num_hidden_layers);
  require_positive(Field::kHiddenSize, hidden_size);
  require_positive(Field::kNumAttentionHeads, num_attention_heads);
  require_positive(Field::kNumKeyValueHeads, num_key_value_heads);
  require_positive(Field::kIntermediateSize, intermediate_size);
  require_positive(Field::kVocabSize, vocab_size);
  require_positive(Field::kMaxPositionEmbeddings, max_position_embeddings);
  if (head_dim < 0) {
    problem(Field::kHeadDim,
            "head_dim must be positive (or 0 for hidden_size / num_attention_heads), got " + num(head_dim));
  }
  if (num_attention_heads > 0 && num_key_value_heads > 0 && num_attention_heads % num_key_value_heads != 0) {
    problem(Field::kNumKeyValueHeads, "num_key_value_heads " + num(num_key_value_heads) +
                                          " does not divide num_attention_heads " + num(num_attention_heads));
  }
  if (head_dim == 0 && hidden_size > 0 && num_attention_heads > 0 && hidden_size % num_attention_heads != 0) {
    problem(Field::kNumAttentionHeads, "num_attention_heads " + num(num_attention_heads) +
                                           " does not divide hidden_size " + num(hidden_size) +
                                           " (set head_dim explicitly)");
  }
  if (is_moe()) {
    require_positive(Field::kNumExperts, num_experts);
    require_positive(Field::kMoeIntermediateSize, moe_intermediate_size);
    require_positive(Field::kDecoderSparseStep, decoder_sparse_step);
    if (num_experts_per_tok < 1 || (num_experts > 0 && num_experts_per_tok > num_experts)) {
      problem(Field::kNumExpertsPerTok, "num_experts_per_tok must be in [1, num_experts = " + num(num_experts) +
                                            "], got " + num(num_experts_per_tok));
    }
    for (const std::int64_t layer : mlp_only_layers) {
      if (layer < 0 || layer >= num_hidden_layers) {
        problem(Field::kMlpOnlyLayers, "mlp_only_layers names layer " + num(layer) +
                                           ", outside [0, num_hidden_layers = " + num(num_hidden_layers) + ")");
      }
    }
    if (architecture == Architecture::kMixtral && (decoder_sparse_step != 1 || !mlp_only_layers.empty())) {
      problem(decoder_sparse_step != 1 ? Field::kDecoderSparseStep : Field::kMlpOnlyLayers,
              "mixtral has experts in every layer: decoder_sparse_step must be 1 and mlp_only_layers empty");
    }
  } else if (num_experts != 0 || num_experts_per_tok != 0 || moe_intermediate_size != 0) {
    problem(num_experts != 0           ? Field::kNumExperts
            : num_experts_per_tok != 0 ? Field::kNumExpertsPerTok
                                       : Field::kMoeIntermediateSize,
            "num_experts, num_experts_per_tok and moe_intermediate_size are for qwen2_moe, qwen3_moe and mixtral; " +
                std::string(architecture_name(architecture)) + " has no experts");
  }
  if (has_shared_expert()) {
    require_positive(Field::kSharedExpertIntermediateSize, shared_expert_intermediate_size);
  } else if (shared_expert_intermediate_size != 0) {
    problem(Field::kSharedExpertIntermediateSize, "shared_expert_intermediate_size is for qwen2_moe; " +
                                                      std::string(architecture_name(architecture)) +
                                                      " has no shared expert");
  }
  if (!(rope_theta > 0.0)) problem(Field::kRopeTheta, "rope_theta must be positive, got " + std::to_string(rope_theta));
  if (!(rms_norm_eps > 0.0)) {
    problem(Field::kRmsNormEps, "rms_norm_eps must be positive, got " + std::to_string(rms_norm_eps));
  }
  return problems;
}

std::vector<HfTensor> ModelSpec::hf_tensors() const {
  const std::int64_t d = resolved_head_dim();
  const std::int64_t q_rows = num_attention_heads * d;
  const std::int64_t kv_rows = num_key_value_heads * d;
  std::vector<HfTensor> tensors;
  tensors.reserve(static_cast<std::size_t>(3 + num_hidden_layers * (18 + 3 * std::max<std::int64_t>(num_experts, 0))));
  const bool mixtral = architecture == Architecture::kMixtral;
  const std::string moe_block = mixtral ? "block_sparse_moe." : "mlp.";
  const std::int64_t moe_rows = moe_intermediate_size;
  const auto add = [&](std::string name, HfKind kind, int layer, std::int64_t rows, std::int64_t cols, bool is_1d,
                       int expert = -1) {
    HfTensor tensor;
    tensor.id = static_cast<int>(tensors.size());
    tensor.name = std::move(name);
    tensor.kind = kind;
    tensor.layer = layer;
    tensor.expert = expert;
    tensor.rows = rows;
    tensor.cols = cols;
    tensor.is_1d = is_1d;
    tensors.push_back(std::move(tensor));
  };
  add("model.embed_tokens.weight", HfKind::kEmbedding, -1, vocab_size, hidden_size, false);
  for (int layer = 0; layer < num_hidden_layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    add(prefix + "input_layernorm.weight", HfKind::kInputNorm, layer, hidden_size, 1, true);
    add(prefix + "self_attn.q_proj.weight", HfKind::kQ, layer, q_rows, hidden_size, false);
    add(prefix + "self_attn.k_proj.weight", HfKind::kK, layer, kv_rows, hidden_size, false);
    add(prefix + "self_attn.v_proj.weight", HfKind::kV, layer, kv_rows, hidden_size, false);
    if (has_qkv_bias()) {
      add(prefix + "self_attn.q_proj.bias", HfKind::kQBias, layer, q_rows, 1, true);
      add(prefix + "self_attn.k_proj.bias", HfKind::kKBias, layer, kv_rows, 1, true);
      add(prefix + "self_attn.v_proj.bias", HfKind::kVBias, layer, kv_rows, 1, true);
    }
    add(prefix + "self_attn.o_proj.weight", HfKind::kO, layer, hidden_size, q_rows, false);
    if (has_qk_norm()) {
      add(prefix + "self_attn.q_norm.weight", HfKind::kQNorm, layer, d, 1, true);
      add(prefix + "self_attn.k_norm.weight", HfKind::kKNorm, layer, d, 1, true);
    }
    add(prefix + "post_attention_layernorm.weight", HfKind::kPostAttnNorm, layer, hidden_size, 1, true);
    if (!layer_has_experts(layer)) {
      add(prefix + "mlp.gate_proj.weight", HfKind::kGate, layer, intermediate_size, hidden_size, false);
      add(prefix + "mlp.up_proj.weight", HfKind::kUp, layer, intermediate_size, hidden_size, false);
      add(prefix + "mlp.down_proj.weight", HfKind::kDown, layer, hidden_size, intermediate_size, false);
      continue;
    }
    add(prefix + moe_block + "gate.weight", HfKind::kRouter, layer, num_experts, hidden_size, false);
    for (int e = 0; e < num_experts; ++e) {
      const std::string expert = prefix + moe_block + "experts." + std::to_string(e) + ".";
      add(expert + (mixtral ? "w1.weight" : "gate_proj.weight"), HfKind::kExpertGate, layer, moe_rows, hidden_size,
          false, e);
      add(expert + (mixtral ? "w3.weight" : "up_proj.weight"), HfKind::kExpertUp, layer, moe_rows, hidden_size, false,
          e);
      add(expert + (mixtral ? "w2.weight" : "down_proj.weight"), HfKind::kExpertDown, layer, hidden_size, moe_rows,
          false, e);
    }
    if (has_shared_expert()) {
      const std::int64_t shared_rows = shared_expert_intermediate_size;
      add(prefix + "mlp.shared_expert.gate_proj.weight", HfKind::kSharedGateProj, layer, shared_rows, hidden_size,
          false);
      add(prefix + "mlp.shared_expert.up_proj.weight", HfKind::kSharedUpProj, layer, shared_rows, hidden_size, false);
      add(prefix + "mlp.shared_expert.down_proj.weight", HfKind::kSharedDownProj, layer, hidden_size, shared_rows,
          false);
      add(prefix + "mlp.shared_expert_gate.weight", HfKind::kSharedExpertGate, layer, 1, hidden_size, false);
    }
  }
  add("model.norm.weight", HfKind::kFinalNorm, -1, hidden_size, 1, true);
  if (!tie_word_embeddings) add("lm_head.weight", HfKind::kLmHead, -1, vocab_size, hidden_size, false);
  return tensors;
}

std::int64_t ModelSpec::num_parameters() const {
  const std::int64_t d = resolved_head_dim();
  const std::int64_t h = hidden_size;
  const std::int64_t q_rows = num_attention_heads * d;
  const std::int64_t kv_rows = num_key_value_heads * d;
  std::int64_t attention = 2 * h                         // norms
                           + (q_rows + 2 * kv_rows) * h  // q, k, v
                           + h * q_rows;                 // o
  if (has_qkv_bias()) attention += q_rows + 2 * kv_rows;
  if (has_qk_norm()) attention += 2 * d;
  std::int64_t total = vocab_size * h + h;
  for (std::int64_t layer = 0; layer < num_hidden_layers; ++layer) {
    total += attention;
    total += layer_has_experts(layer) ? num_experts * h + num_experts * 3 * moe_intermediate_size * h
                                      : 3 * intermediate_size * h;
    if (layer_has_experts(layer) && has_shared_expert()) total += 3 * shared_expert_intermediate_size * h + h;
  }
  if (!tie_word_embeddings) total += vocab_size * h;
  return total;
}

std::optional<ModelSpec> model_preset(std::string_view name) {
  ModelSpec spec;
  spec.dtype = DType::kBFloat16;
  const auto shape = [&spec](Architecture architecture, std::int64_t layers, std::int64_t hidden, std::int64_t heads,
                             std::int64_t kv_heads, std::int64_t intermediate, std::int64_t vocab) {
    spec.architecture = architecture;
    spec.num_hidden_layers = layers;
    spec.hidden_size = hidden;
    spec.num_attention_heads = heads;
    spec.num_key_value_heads = kv_heads;
    spec.intermediate_size = intermediate;
    spec.vocab_size = vocab;
  };
  if (name == "tiny") {
    shape(Architecture::kLlama, 4, 64, 4, 2, 128, 500);
    spec.tie_word_embeddings = false;
    spec.rope_theta = 10000.0;
    spec.rms_norm_eps = 1e-6;
    spec.max_position_embeddings = 4096;
    return spec;
  }
  if (name == "llama3-8b") {
    shape(Architecture::kLlama, 32, 4096, 32, 8, 14336, 128256);
    spec.rope_theta = 500000.0;
    spec.rms_norm_eps = 1e-5;
    spec.max_position_embeddings = 8192;
    return spec;
  }
  if (name == "llama3-70b") {
    shape(Architecture::kLlama, 80, 8192, 64, 8, 28672, 128256);
    spec.rope_theta = 500000.0;
    spec.rms_norm_eps = 1e-5;
    spec.max_position_embeddings = 8192;
    return spec;
  }
  if (name == "qwen2.5-7b") {
    shape(Architecture::kQwen2, 28, 3584, 28, 4, 18944, 152064);
    spec.rope_theta = 1000000.0;
    spec.rms_norm_eps = 1e-6;
    spec.max_position_embeddings = 32768;
    return spec;
  }
  if (name == "qwen2.5-32b") {
    shape(Architecture::kQwen2, 64, 5120, 40, 8, 27648, 152064);
    spec.rope_theta = 1000000.0;
    spec.rms_norm_eps = 1e-6;
    spec.max_position_embeddings = 32768;
    return spec;
  }
  // Qwen3 (Qwen/Qwen3-8B, -30B-A3B, -235B-A22B config.json): explicit head_dim 128, q_norm / k_norm, no QKV bias.
  const auto qwen3 = [&](Architecture architecture, std::int64_t layers, std::int64_t hidden, std::int64_t heads,
                         std::int64_t kv_heads, std::int64_t intermediate) {
    shape(architecture, layers, hidden, heads, kv_heads, intermediate, 151936);
    spec.head_dim = 128;
    spec.rope_theta = 1000000.0;
    spec.rms_norm_eps = 1e-6;
    spec.max_position_embeddings = 40960;
    spec.tie_word_embeddings = false;
  };
  const auto qwen3_experts = [&](std::int64_t moe_intermediate) {
    spec.num_experts = 128;
    spec.num_experts_per_tok = 8;
    spec.moe_intermediate_size = moe_intermediate;
    spec.norm_topk_prob = true;
    spec.decoder_sparse_step = 1;
  };
  if (name == "qwen3-8b") {
    qwen3(Architecture::kQwen3, 36, 4096, 32, 8, 12288);
    return spec;
  }
  if (name == "qwen3-30b-a3b") {
    qwen3(Architecture::kQwen3Moe, 48, 2048, 32, 4, 6144);
    qwen3_experts(768);
    return spec;
  }
  if (name == "qwen3-235b-a22b") {
    qwen3(Architecture::kQwen3Moe, 94, 4096, 64, 4, 12288);
    qwen3_experts(1536);
    return spec;
  }
  if (name == "mixtral-8x7b") {  // mistralai/Mixtral-8x7B-v0.1: 8 experts of width 14336, top 2
    shape(Architecture::kMixtral, 32, 4096, 32, 8, 14336, 32000);
    spec.num_experts = 8;
    spec.num_experts_per_tok = 2;
    spec.moe_intermediate_size = 14336;
    spec.norm_topk_prob = true;
    spec.rope_theta = 1000000.0;
    spec.rms_norm_eps = 1e-5;
    spec.max_position_embeddings = 32768;
    return spec;
  }
  // Qwen2-MoE (Qwen/Qwen1.5-MoE-A2.7B, Qwen/Qwen2-57B-A14B config.json): qwen2's QKV bias, every layer sparse, top-k
  // weights not renormalised, one shared expert per layer beside the routed ones.
  const auto qwen2_moe = [&](std::int64_t layers, std::int64_t hidden, std::int64_t heads, std::int64_t kv_heads,
                             std::int64_t intermediate, std::int64_t experts, std::int64_t top_k,
                             std::int64_t moe_intermediate, std::int64_t shared_intermediate) {
    shape(Architecture::kQwen2Moe, layers, hidden, heads, kv_heads, intermediate, 151936);
    spec.num_experts = experts;
    spec.num_experts_per_tok = top_k;
    spec.moe_intermediate_size = moe_intermediate;
    spec.shared_expert_intermediate_size = shared_intermediate;
    spec.norm_topk_prob = false;
    spec.decoder_sparse_step = 1;
    spec.rope_theta = 1000000.0;
    spec.rms_norm_eps = 1e-6;
    spec.tie_word_embeddings = false;
  };
  if (name == "qwen1.5-moe-a2.7b") {  // 14.3 B parameters: 60 experts of width 1408, top 4, shared expert 5632
    qwen2_moe(24, 2048, 16, 16, 5632, 60, 4, 1408, 5632);
    spec.max_position_embeddings = 8192;
    return spec;
  }
  if (name == "qwen2-57b-a14b") {  // 57.4 B parameters: 64 experts of width 2560, top 8, shared expert 20480
    qwen2_moe(28, 3584, 28, 4, 18944, 64, 8, 2560, 20480);
    spec.max_position_embeddings = 131072;
    return spec;
  }
  return std::nullopt;
}

std::vector<std::string> model_preset_names() {
  return {"tiny",          "llama3-8b",       "llama3-70b",   "qwen2.5-7b",        "qwen2.5-32b",   "qwen3-8b",
          "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen2-57b-a14b"};
}

}  // namespace hybridshard::core
