// The model: architecture and shapes in Hugging Face names, and the full (unsharded) tensors they imply.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/core/dtype.h"
#include "hybridshard/core/field_problem.h"

namespace hybridshard::core {

// Hugging Face model_type values. qwen3 adds q_norm / k_norm (RMSNorm over head_dim, before rotary) and drops the QKV
// bias; qwen2_moe, qwen3_moe and mixtral replace the MLP of their sparse layers by a router and experts; qwen2_moe
// (Qwen1.5-MoE, Qwen2-57B-A14B) keeps qwen2's QKV bias and adds a shared expert beside the routed ones, scaled per
// token by sigmoid(shared_expert_gate . x).
enum class Architecture : std::uint8_t { kLlama, kQwen2, kQwen3, kQwen3Moe, kMixtral, kQwen2Moe };

// "llama", "qwen2", "qwen3", "qwen3_moe", "mixtral", "qwen2_moe"
std::string_view architecture_name(Architecture architecture);
std::optional<Architecture> parse_architecture(std::string_view name);

// What a full Hugging Face tensor is, independent of its layer.
enum class HfKind : std::uint8_t {
  kEmbedding,         // model.embed_tokens.weight            [vocab, hidden]
  kInputNorm,         // model.layers.N.input_layernorm.weight [hidden]
  kQ,                 // ...self_attn.q_proj.weight            [heads*head_dim, hidden]
  kK,                 // ...self_attn.k_proj.weight            [kv_heads*head_dim, hidden]
  kV,                 // ...self_attn.v_proj.weight            [kv_heads*head_dim, hidden]
  kQBias,             // ...self_attn.q_proj.bias (qwen2)      [heads*head_dim]
  kKBias,             // ...self_attn.k_proj.bias (qwen2)      [kv_heads*head_dim]
  kVBias,             // ...self_attn.v_proj.bias (qwen2)      [kv_heads*head_dim]
  kO,                 // ...self_attn.o_proj.weight            [hidden, heads*head_dim]
  kPostAttnNorm,      // ...post_attention_layernorm.weight    [hidden]
  kGate,              // ...mlp.gate_proj.weight               [intermediate, hidden]
  kUp,                // ...mlp.up_proj.weight                 [intermediate, hidden]
  kDown,              // ...mlp.down_proj.weight               [hidden, intermediate]
  kFinalNorm,         // model.norm.weight                     [hidden]
  kLmHead,            // lm_head.weight (untied only)          [vocab, hidden]
  kQNorm,             // ...self_attn.q_norm.weight (qwen3)    [head_dim]
  kKNorm,             // ...self_attn.k_norm.weight (qwen3)    [head_dim]
  kRouter,            // ...mlp.gate.weight (qwen3_moe) / ...block_sparse_moe.gate.weight (mixtral) [experts, hidden]
  kExpertGate,        // ...mlp.experts.E.gate_proj.weight / ...block_sparse_moe.experts.E.w1.weight [moe_inter, hidden]
  kExpertUp,          // ...mlp.experts.E.up_proj.weight   / ...experts.E.w3.weight                  [moe_inter, hidden]
  kExpertDown,        // ...mlp.experts.E.down_proj.weight / ...experts.E.w2.weight                  [hidden, moe_inter]
  kSharedGateProj,    // ...mlp.shared_expert.gate_proj.weight (qwen2_moe)  [shared_inter, hidden]
  kSharedUpProj,      // ...mlp.shared_expert.up_proj.weight                [shared_inter, hidden]
  kSharedDownProj,    // ...mlp.shared_expert.down_proj.weight              [hidden, shared_inter]
  kSharedExpertGate,  // ...mlp.shared_expert_gate.weight                   [1, hidden]
};
inline constexpr int kNumHfKinds = 25;

// One full tensor of the Hugging Face checkpoint. 1-D tensors have cols == 1 (rows x cols is the canonical 2-D view
// used by every block and piece in the engine).
struct HfTensor {
  int id = 0;        // index into ModelSpec::hf_tensors(); stable for a given spec
  std::string name;  // e.g. "model.layers.3.self_attn.q_proj.weight"
  HfKind kind = HfKind::kEmbedding;
  int layer = -1;   // -1 for embedding, final norm, lm_head
  int expert = -1;  // the expert of kExpertGate / kExpertUp / kExpertDown, else -1
  std::int64_t rows = 0;
  std::int64_t cols = 1;
  bool is_1d = false;
  std::int64_t numel() const { return rows * cols; }
};

struct ModelSpec {
  Architecture architecture = Architecture::kLlama;
  std::int64_t num_hidden_layers = 4;
  std::int64_t hidden_size = 64;
  std::int64_t num_attention_heads = 4;
  std::int64_t num_key_value_heads = 2;
  std::int64_t intermediate_size = 128;
  std::int64_t vocab_size = 500;
  std::int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
  bool tie_word_embeddings = false;
  DType dtype = DType::kBFloat16;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  std::int64_t max_position_embeddings = 4096;

  // Mixture of experts (qwen2_moe, qwen3_moe, mixtral); num_experts == 0 for dense architectures. Mixtral's config
  // calls the expert count num_local_experts and the expert width intermediate_size; both land here.
  std::int64_t num_experts = 0;
  std::int64_t num_experts_per_tok = 0;
  std::int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = true;                 // renormalise the top-k routing weights (Mixtral always does)
  std::int64_t decoder_sparse_step = 1;       // qwen3_moe: layer l has experts when (l + 1) % step == 0 ...
  std::vector<std::int64_t> mlp_only_layers;  // ... and l is not listed here (those keep a dense MLP)
  // qwen2_moe: the shared expert's width (a SwiGLU MLP every token passes through in each sparse layer); 0 elsewhere.
  std::int64_t shared_expert_intermediate_size = 0;

  std::int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  bool has_qkv_bias() const { return architecture == Architecture::kQwen2 || architecture == Architecture::kQwen2Moe; }
  bool has_qk_norm() const { return architecture == Architecture::kQwen3 || architecture == Architecture::kQwen3Moe; }
  bool is_moe() const {
    return architecture == Architecture::kQwen3Moe || architecture == Architecture::kMixtral ||
           architecture == Architecture::kQwen2Moe;
  }
  // Whether each sparse layer has a shared expert and its gate (qwen2_moe).
  bool has_shared_expert() const { return architecture == Architecture::kQwen2Moe; }
  // Whether layer `layer` has a router and experts (Hugging Face's rule); false for every layer of a dense model.
  bool layer_has_experts(std::int64_t layer) const;

  // The fields validate() can find a problem with; field_name() gives their Hugging Face key.
  enum class Field : std::uint8_t {
    kNumHiddenLayers,
    kHiddenSize,
    kNumAttentionHeads,
    kNumKeyValueHeads,
    kIntermediateSize,
    kVocabSize,
    kHeadDim,
    kRopeTheta,
    kRmsNormEps,
    kMaxPositionEmbeddings,
    kNumExperts,
    kNumExpertsPerTok,
    kMoeIntermediateSize,
    kDecoderSparseStep,
    kMlpOnlyLayers,
    kSharedExpertIntermediateSize,
  };
  using Problem = FieldProblem<Field>;
  static std::string_view field_name(Field field);  // "num_hidden_layers", ...

  // Every problem at once, each a sentence naming the Hugging Face key, tagged with the field it is about (a rule
  // between two fields names the one to change); empty when the spec is usable.
  std::vector<Problem> validate() const;

  // All full tensors, in checkpoint order: embedding, then per layer (input norm, q, k, v, [q/k/v bias], o,
  // [q_norm, k_norm], post-attention norm, then gate, up, down, or for a layer with experts: router, then per expert
  // gate, up, down, then [shared expert gate, up, down, shared_expert_gate]), final norm, lm_head (untied). ids are
  // positions in this vector.
  std::vector<HfTensor> hf_tensors() const;

  std::int64_t num_parameters() const;  // unpadded, as in the checkpoint
};

// Shapes of well-known models: "tiny" (the quickstart's), "llama3-8b", "llama3-70b", "qwen2.5-7b", "qwen2.5-32b",
// "qwen3-8b", "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen2-57b-a14b" (from their
// published config.json files).
std::optional<ModelSpec> model_preset(std::string_view name);
std::vector<std::string> model_preset_names();

}  // namespace hybridshard::core
