#include "hybridshard/core/inference_layout.h"

#include <algorithm>
#include <string>
#include <utility>

#include "detail/layout_helpers.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

using detail::append_swiglu_shard;
using detail::HfIndex;
using detail::make_block;
using detail::make_tensor;
using detail::throw_if_unusable;
using detail::vocab_shard;
using detail::whole_matrix;
using detail::whole_vector;

std::string num(std::int64_t value) { return std::to_string(value); }

}  // namespace

std::int64_t InferenceLayout::padded_vocab(const ModelSpec& spec) const {
  if (pad_vocab_to <= 0) return spec.vocab_size;
  return (spec.vocab_size + pad_vocab_to - 1) / pad_vocab_to * pad_vocab_to;
}

std::int64_t InferenceLayout::kv_heads_per_rank(const ModelSpec& spec) const {
  if (tp <= 0) return spec.num_key_value_heads;
  return std::max<std::int64_t>(1, spec.num_key_value_heads / tp);
}

InferenceLayout::ExpertRange InferenceLayout::experts_of(const ModelSpec& spec, int tp_rank) const {
  if (!expert_parallel || tp <= 1) return {0, spec.num_experts};
  const std::int64_t base = spec.num_experts / tp;
  const std::int64_t remainder = spec.num_experts % tp;
  const std::int64_t r = tp_rank;
  return {r * base + std::min(r, remainder), base + (r < remainder ? 1 : 0)};
}

std::string_view InferenceLayout::field_name(Field field) {
  switch (field) {
    case Field::kTp:
      return "tensor_model_parallel_size";
    case Field::kWorldSize:
      return "world_size";
    case Field::kPadVocabTo:
      return "pad_vocab_to";
    case Field::kExpertParallel:
      return "enable_expert_parallel";
  }
  return "unknown";
}

std::vector<InferenceLayout::Problem> InferenceLayout::validate(const ModelSpec& spec) const {
  std::vector<Problem> problems;
  const auto problem = [&](Field field, std::string message) { problems.push_back({field, std::move(message)}); };
  const std::string key = "rollout tensor_model_parallel_size";
  if (tp < 1) problem(Field::kTp, key + " must be at least 1, got " + num(tp));
  if (world_size < 1) problem(Field::kWorldSize, "rollout world_size must be at least 1, got " + num(world_size));
  if (pad_vocab_to < 1) {
    problem(Field::kPadVocabTo, "vocabulary padding (vLLM pads to 64) must be at least 1, got " + num(pad_vocab_to));
  }
  if (tp < 1) return problems;
  if (world_size >= 1 && world_size % tp != 0) {
    problem(Field::kTp, key + " " + num(tp) + " does not divide the world size " + num(world_size) +
                            " (vLLM runs world_size / tensor_model_parallel_size data-parallel replicas)");
  }
  if (spec.num_attention_heads > 0 && spec.num_attention_heads % tp != 0) {
    problem(Field::kTp,
            key + " " + num(tp) + " does not divide num_attention_heads " + num(spec.num_attention_heads) + " (vLLM)");
  }
  const std::int64_t kv = spec.num_key_value_heads;
  if (kv > 0 && kv % tp != 0 && tp % kv != 0) {
    problem(Field::kTp, key + " " + num(tp) + " must either divide num_key_value_heads " + num(kv) +
                            " or be a multiple of it (vLLM replicates KV heads only when tensor_model_parallel_size > "
                            "num_key_value_heads)");
  }
  bool dense_mlp = false;
  for (std::int64_t layer = 0; layer < spec.num_hidden_layers; ++layer) dense_mlp |= !spec.layer_has_experts(layer);
  if (dense_mlp && spec.intermediate_size > 0 && spec.intermediate_size % tp != 0) {
    problem(Field::kTp,
            key + " " + num(tp) + " does not divide intermediate_size " + num(spec.intermediate_size) + " (vLLM)");
  }
  if (spec.has_shared_expert() && spec.shared_expert_intermediate_size > 0 &&
      spec.shared_expert_intermediate_size % tp != 0) {
    problem(Field::kTp, key + " " + num(tp) + " does not divide shared_expert_intermediate_size " +
                            num(spec.shared_expert_intermediate_size) + " (vLLM splits the shared expert over tp')");
  }
  if (spec.architecture == Architecture::kQwen2Moe && spec.num_experts > 0 && tp > spec.num_experts) {
    problem(Field::kTp, key + " " + num(tp) + " exceeds num_experts " + num(spec.num_experts) +
                            " (vLLM's Qwen2MoeSparseMoeBlock refuses a tensor parallel size above the expert count)");
  }
  if (!spec.is_moe()) {
    if (expert_parallel) {
      problem(Field::kExpertParallel, "rollout enable_expert_parallel applies to models with experts; " +
                                          std::string(architecture_name(spec.architecture)) + " has none");
    }
  } else if (expert_parallel) {
    if (spec.num_experts > 0 && spec.num_experts < tp) {
      problem(Field::kTp, "rollout enable_expert_parallel: " + key + " " + num(tp) + " exceeds num_experts " +
                              num(spec.num_experts) + " (some rank would hold no expert)");
    }
  } else if (spec.moe_intermediate_size > 0 && spec.moe_intermediate_size % tp != 0) {
    problem(Field::kTp, key + " " + num(tp) + " does not divide moe_intermediate_size " +
                            num(spec.moe_intermediate_size) +
                            " (vLLM's tensor-parallel experts split every expert; or set enable_expert_parallel)");
  }
  if (pad_vocab_to >= 1 && spec.vocab_size > 0 && padded_vocab(spec) % tp != 0) {
    problem(Field::kTp, key + " " + num(tp) + " does not divide the padded vocabulary " + num(padded_vocab(spec)) +
                            " (vocab_size " + num(spec.vocab_size) + " padded to a multiple of " + num(pad_vocab_to) +
                            ", vLLM)");
  }
  return problems;
}

BufferLayout inference_param_buffer(const ModelSpec& spec, const InferenceLayout& layout, int tp_rank) {
  HS_CHECK(tp_rank >= 0 && tp_rank < layout.tp,
           "inference tp rank " + num(tp_rank) + " is outside [0, " + num(layout.tp) + ")");
  throw_if_unusable(spec, problem_messages(layout.validate(spec)), "inference");
  const HfIndex hf(spec);
  const int tp = layout.tp;
  const std::int64_t h = spec.hidden_size;
  const std::int64_t d = spec.resolved_head_dim();
  const std::int64_t heads_per_rank = spec.num_attention_heads / tp;
  const std::int64_t kv_per_rank = layout.kv_heads_per_rank(spec);
  // First kv head of this rank: with tp > K each kv head is replicated on tp / K consecutive ranks.
  const std::int64_t first_kv_head = tp > spec.num_key_value_heads ? tp_rank / (tp / spec.num_key_value_heads)
                                                                   : static_cast<std::int64_t>(tp_rank) * kv_per_rank;
  const std::int64_t attn_cols_per_rank = spec.num_attention_heads * d / tp;
  const std::int64_t padded_vocab = layout.padded_vocab(spec);

  // [q rows of this rank's heads; k rows of its kv heads; v rows of its kv heads] (weight or bias).
  const auto qkv = [&](std::string name, const HfTensor& q, const HfTensor& k, const HfTensor& v) {
    LocalTensor tensor = make_tensor(std::move(name), (heads_per_rank + 2 * kv_per_rank) * d, q.cols, q.is_1d);
    tensor.blocks.push_back(make_block(q, tp_rank * heads_per_rank * d, 0, 0, 0, heads_per_rank * d, q.cols));
    tensor.blocks.push_back(make_block(k, first_kv_head * d, 0, heads_per_rank * d, 0, kv_per_rank * d, k.cols));
    tensor.blocks.push_back(
        make_block(v, first_kv_head * d, 0, (heads_per_rank + kv_per_rank) * d, 0, kv_per_rank * d, v.cols));
    return tensor;
  };

  // Router, [the shared expert's gate and MLP,] then vLLM's fused-MoE parameters w13_weight [El, 2*f, h] and w2_weight
  // [El, h, f] in the 2-D view.
  const InferenceLayout::ExpertRange local = layout.experts_of(spec, tp_rank);
  const std::int64_t f = layout.expert_parallel ? spec.moe_intermediate_size : spec.moe_intermediate_size / tp;
  const std::int64_t u = layout.expert_parallel ? 0 : tp_rank;
  const auto append_experts = [&](BufferLayout& buffer, const std::string& prefix, int layer) {
    append_tensor(buffer, whole_matrix(prefix + "gate.weight", hf.layer_tensor(layer, HfKind::kRouter)));
    if (spec.has_shared_expert()) {
      // Qwen2MoeSparseMoeBlock: shared_expert_gate a whole [1, h] Linear; shared_expert a Qwen2MoeMLP (merged
      // column-parallel gate_up_proj, row-parallel down_proj over tp', with or without expert parallelism).
      append_tensor(buffer, whole_matrix(prefix + "shared_expert_gate.weight",
                                         hf.layer_tensor(layer, HfKind::kSharedExpertGate)));
      append_swiglu_shard(buffer, prefix + "shared_expert.gate_up_proj.weight",
                          prefix + "shared_expert.down_proj.weight", hf.layer_tensor(layer, HfKind::kSharedGateProj),
                          hf.layer_tensor(layer, HfKind::kSharedUpProj),
                          hf.layer_tensor(layer, HfKind::kSharedDownProj), tp, tp_rank);
    }
    LocalTensor w13 = make_tensor(prefix + "experts.w13_weight", local.count * 2 * f, h, false);
    w13.shape = {local.count, 2 * f, h};
    LocalTensor w2 = make_tensor(prefix + "experts.w2_weight", local.count * h, f, false);
    w2.shape = {local.count, h, f};
    for (std::int64_t j = 0; j < local.count; ++j) {
      const std::int64_t e = local.first + j;
      w13.blocks.push_back(make_block(hf.expert_tensor(layer, HfKind::kExpertGate, e), u * f, 0, j * 2 * f, 0, f, h));
      w13.blocks.push_back(make_block(hf.expert_tensor(layer, HfKind::kExpertUp, e), u * f, 0, j * 2 * f + f, 0, f, h));
      w2.blocks.push_back(make_block(hf.expert_tensor(layer, HfKind::kExpertDown, e), 0, u * f, j * h, 0, h, f));
    }
    append_tensor(buffer, std::move(w13));
    append_tensor(buffer, std::move(w2));
  };

  BufferLayout buffer;
  buffer.name = "rollout.params";
  buffer.dtype = spec.dtype;
  append_tensor(buffer, vocab_shard("model.embed_tokens.weight", hf.embedding(), padded_vocab, tp, tp_rank));
  for (int layer = 0; layer < spec.num_hidden_layers; ++layer) {
    const std::string prefix = "model.layers." + num(layer) + ".";
    append_tensor(buffer, whole_vector(prefix + "input_layernorm.weight", hf.layer_tensor(layer, HfKind::kInputNorm)));
    append_tensor(buffer, qkv(prefix + "self_attn.qkv_proj.weight", hf.layer_tensor(layer, HfKind::kQ),
                              hf.layer_tensor(layer, HfKind::kK), hf.layer_tensor(layer, HfKind::kV)));
    if (spec.has_qkv_bias()) {
      append_tensor(buffer, qkv(prefix + "self_attn.qkv_proj.bias", hf.layer_tensor(layer, HfKind::kQBias),
                                hf.layer_tensor(layer, HfKind::kKBias), hf.layer_tensor(layer, HfKind::kVBias)));
    }
    if (spec.has_qk_norm()) {
      append_tensor(buffer, whole_vector(prefix + "self_attn.q_norm.weight", hf.layer_tensor(layer, HfKind::kQNorm)));
      append_tensor(buffer, whole_vector(prefix + "self_attn.k_norm.weight", hf.layer_tensor(layer, HfKind::kKNorm)));
    }
    {
      const HfTensor& o = hf.layer_tensor(layer, HfKind::kO);
      LocalTensor proj = make_tensor(prefix + "self_attn.o_proj.weight", h, attn_cols_per_rank, false);
      proj.blocks.push_back(make_block(o, 0, tp_rank * attn_cols_per_rank, 0, 0, h, attn_cols_per_rank));
      append_tensor(buffer, std::move(proj));
    }
    append_tensor(buffer, whole_vector(prefix + "post_attention_layernorm.weight",
                                       hf.layer_tensor(layer, HfKind::kPostAttnNorm)));
    if (spec.layer_has_experts(layer)) {
      append_experts(buffer, prefix + (spec.architecture == Architecture::kMixtral ? "block_sparse_moe." : "mlp."),
                     layer);
      continue;
    }
    append_swiglu_shard(buffer, prefix + "mlp.gate_up_proj.weight", prefix + "mlp.down_proj.weight",
                        hf.layer_tensor(layer, HfKind::kGate), hf.layer_tensor(layer, HfKind::kUp),
                        hf.layer_tensor(layer, HfKind::kDown), tp, tp_rank);
  }
  append_tensor(buffer, whole_vector("model.norm.weight", hf.final_norm()));
  if (const HfTensor* lm_head = hf.lm_head()) {
    append_tensor(buffer, vocab_shard("lm_head.weight", *lm_head, padded_vocab, tp, tp_rank));
  }
  return buffer;
}

}  // namespace hybridshard::core
