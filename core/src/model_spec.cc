#include "hybridshard/core/model_spec.h"

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
  }
  return "unknown";
}

std::optional<Architecture> parse_architecture(std::string_view name) {
  if (name == "llama" || name == "LlamaForCausalLM") return Architecture::kLlama;
  if (name == "qwen2" || name == "Qwen2ForCausalLM") return Architecture::kQwen2;
  return std::nullopt;
}

std::vector<std::string> ModelSpec::validate() const {
  std::vector<std::string> problems;
  const auto require_positive = [&](std::string_view key, std::int64_t value) {
    if (value <= 0) problems.push_back(std::string(key) + " must be positive, got " + num(value));
  };
  require_positive("num_hidden_layers", num_hidden_layers);
  require_positive("hidden_size", hidden_size);
  require_positive("num_attention_heads", num_attention_heads);
  require_positive("num_key_value_heads", num_key_value_heads);
  require_positive("intermediate_size", intermediate_size);
  require_positive("vocab_size", vocab_size);
  require_positive("max_position_embeddings", max_position_embeddings);
  if (head_dim < 0)
    problems.push_back("head_dim must be positive (or 0 for hidden_size / num_attention_heads), got " + num(head_dim));
  if (num_attention_heads > 0 && num_key_value_heads > 0 && num_attention_heads % num_key_value_heads != 0) {
    problems.push_back("num_key_value_heads " + num(num_key_value_heads) + " does not divide num_attention_heads " +
                       num(num_attention_heads));
  }
  if (head_dim == 0 && hidden_size > 0 && num_attention_heads > 0 && hidden_size % num_attention_heads != 0) {
    problems.push_back("num_attention_heads " + num(num_attention_heads) + " does not divide hidden_size " +
                       num(hidden_size) + " (set head_dim explicitly)");
  }
  if (!(rope_theta > 0.0)) problems.push_back("rope_theta must be positive, got " + std::to_string(rope_theta));
  if (!(rms_norm_eps > 0.0)) problems.push_back("rms_norm_eps must be positive, got " + std::to_string(rms_norm_eps));
  return problems;
}

std::vector<HfTensor> ModelSpec::hf_tensors() const {
  const std::int64_t d = resolved_head_dim();
  const std::int64_t q_rows = num_attention_heads * d;
  const std::int64_t kv_rows = num_key_value_heads * d;
  std::vector<HfTensor> tensors;
  tensors.reserve(static_cast<std::size_t>(3 + num_hidden_layers * (has_qkv_bias() ? 12 : 9)));
  const auto add = [&](std::string name, HfKind kind, int layer, std::int64_t rows, std::int64_t cols, bool is_1d) {
    HfTensor tensor;
    tensor.id = static_cast<int>(tensors.size());
    tensor.name = std::move(name);
    tensor.kind = kind;
    tensor.layer = layer;
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
    add(prefix + "post_attention_layernorm.weight", HfKind::kPostAttnNorm, layer, hidden_size, 1, true);
    add(prefix + "mlp.gate_proj.weight", HfKind::kGate, layer, intermediate_size, hidden_size, false);
    add(prefix + "mlp.up_proj.weight", HfKind::kUp, layer, intermediate_size, hidden_size, false);
    add(prefix + "mlp.down_proj.weight", HfKind::kDown, layer, hidden_size, intermediate_size, false);
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
  std::int64_t per_layer = 2 * h                         // norms
                           + (q_rows + 2 * kv_rows) * h  // q, k, v
                           + h * q_rows                  // o
                           + 3 * intermediate_size * h;  // gate, up, down
  if (has_qkv_bias()) per_layer += q_rows + 2 * kv_rows;
  std::int64_t total = vocab_size * h + num_hidden_layers * per_layer + h;
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
  return std::nullopt;
}

std::vector<std::string> model_preset_names() {
  return {"tiny", "llama3-8b", "llama3-70b", "qwen2.5-7b", "qwen2.5-32b"};
}

}  // namespace hybridshard::core
