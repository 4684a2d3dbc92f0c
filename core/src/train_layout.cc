#include "hybridshard/core/train_layout.h"

#include <algorithm>
#include <numeric>
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

TrainLayout::Coord TrainLayout::coord(int rank) const {
  Coord result;
  result.tp_rank = rank % tp;
  result.dp_rank = (rank / tp) % dp;
  result.pp_rank = rank / (tp * dp);
  const int in_stage = result.dp_rank * tp + result.tp_rank;
  const int expert_tp_size = std::max(expert_tp(), 1);
  result.etp_rank = in_stage % expert_tp_size;
  result.ep_rank = (in_stage / expert_tp_size) % std::max(ep, 1);
  return result;
}

int TrainLayout::expert_period() const {
  const int slots = std::max(expert_tp(), 1) * std::max(ep, 1);
  return slots / std::gcd(std::max(tp, 1), slots);
}

int TrainLayout::rank_of(const Coord& c) const { return c.pp_rank * (dp * tp) + c.dp_rank * tp + c.tp_rank; }

std::int64_t TrainLayout::padded_vocab(const ModelSpec& spec) const {
  const std::int64_t multiple = static_cast<std::int64_t>(make_vocab_size_divisible_by) * tp;
  if (multiple <= 0) return spec.vocab_size;
  return (spec.vocab_size + multiple - 1) / multiple * multiple;
}

std::vector<int> TrainLayout::layers_of(const ModelSpec& spec, int pp_rank, int vpp_chunk) const {
  const std::int64_t num_chunks = static_cast<std::int64_t>(pp) * vpp;
  const std::int64_t position = static_cast<std::int64_t>(vpp_chunk) * pp + pp_rank;
  const std::int64_t first = position * spec.num_hidden_layers / num_chunks;
  const std::int64_t last = (position + 1) * spec.num_hidden_layers / num_chunks;
  std::vector<int> layers;
  for (std::int64_t layer = first; layer < last; ++layer) layers.push_back(static_cast<int>(layer));
  return layers;
}

std::string_view TrainLayout::field_name(Field field) {
  switch (field) {
    case Field::kTp:
      return "tensor_model_parallel_size";
    case Field::kPp:
      return "pipeline_model_parallel_size";
    case Field::kVpp:
      return "virtual_pipeline_model_parallel_size";
    case Field::kDp:
      return "data_parallel_size";
    case Field::kMakeVocabSizeDivisibleBy:
      return "make_vocab_size_divisible_by";
    case Field::kEp:
      return "expert_model_parallel_size";
    case Field::kEtp:
      return "expert_tensor_parallel_size";
  }
  return "unknown";
}

std::vector<TrainLayout::Problem> TrainLayout::validate(const ModelSpec& spec) const {
  std::vector<Problem> problems;
  const auto problem = [&](Field field, std::string message) { problems.push_back({field, std::move(message)}); };
  const auto positive = [&](Field field, int value) {
    if (value < 1) problem(field, std::string(field_name(field)) + " must be at least 1, got " + num(value));
    return value >= 1;
  };
  const bool tp_ok = positive(Field::kTp, tp);
  const bool pp_ok = positive(Field::kPp, pp);
  const bool vpp_ok = positive(Field::kVpp, vpp);
  positive(Field::kDp, dp);
  positive(Field::kMakeVocabSizeDivisibleBy, make_vocab_size_divisible_by);
  if (tp_ok) {
    if (spec.num_attention_heads > 0 && spec.num_attention_heads % tp != 0) {
      problem(Field::kTp, "tensor_model_parallel_size " + num(tp) + " does not divide num_attention_heads " +
                              num(spec.num_attention_heads));
    }
    if (spec.num_key_value_heads > 0 && spec.num_key_value_heads % tp != 0) {
      problem(Field::kTp, "tensor_model_parallel_size " + num(tp) + " must divide num_key_value_heads " +
                              num(spec.num_key_value_heads) + " (Megatron-Core splits whole query groups)");
    }
    bool dense_mlp = false;
    for (std::int64_t layer = 0; layer < spec.num_hidden_layers; ++layer) dense_mlp |= !spec.layer_has_experts(layer);
    if (dense_mlp && spec.intermediate_size > 0 && spec.intermediate_size % tp != 0) {
      problem(Field::kTp, "tensor_model_parallel_size " + num(tp) + " does not divide intermediate_size " +
                              num(spec.intermediate_size) + " (ffn_hidden_size)");
    }
    if (spec.has_shared_expert() && spec.shared_expert_intermediate_size > 0 &&
        spec.shared_expert_intermediate_size % tp != 0) {
      problem(Field::kTp, "tensor_model_parallel_size " + num(tp) +
                              " does not divide shared_expert_intermediate_size " +
                              num(spec.shared_expert_intermediate_size) +
                              " (Megatron-Core splits the shared expert over tp like the dense MLP)");
    }
  }
  if (pp_ok && vpp_ok) {
    const std::int64_t num_chunks = static_cast<std::int64_t>(pp) * vpp;
    if (spec.num_hidden_layers > 0 && spec.num_hidden_layers % num_chunks != 0) {
      problem(Field::kPp, "num_hidden_layers " + num(spec.num_hidden_layers) +
                              " is not divisible by pipeline_model_parallel_size * "
                              "virtual_pipeline_model_parallel_size = " +
                              num(pp) + " * " + num(vpp));
    }
    if (vpp > 1 && pp == 1) {
      problem(Field::kVpp, "virtual_pipeline_model_parallel_size " + num(vpp) +
                               " needs pipeline_model_parallel_size > 1 (the interleaved schedule)");
    }
  }
  validate_experts(spec, tp_ok, problems);
  return problems;
}

void TrainLayout::validate_experts(const ModelSpec& spec, bool tp_ok, std::vector<Problem>& problems) const {
  const auto problem = [&](Field field, std::string message) { problems.push_back({field, std::move(message)}); };
  if (ep < 1) problem(Field::kEp, "expert_model_parallel_size must be at least 1, got " + num(ep));
  if (etp < 0) {
    problem(Field::kEtp,
            "expert_tensor_parallel_size must be at least 1 (or unset: tensor_model_parallel_size), got " + num(etp));
  }
  if (!spec.is_moe()) {
    if (ep > 1 || etp > 0) {
      problem(ep > 1 ? Field::kEp : Field::kEtp,
              "expert_model_parallel_size / expert_tensor_parallel_size apply to models with experts; " +
                  std::string(architecture_name(spec.architecture)) + " has none");
    }
    return;
  }
  if (ep < 1 || etp < 0 || !tp_ok || dp < 1) return;
  const int expert_tp_size = expert_tp();
  // Unset, the expert tensor parallel size is tp's: a problem with it is tp's to fix.
  const Field expert_tp_field = etp > 0 ? Field::kEtp : Field::kTp;
  if (spec.num_experts > 0 && spec.num_experts % ep != 0) {
    problem(Field::kEp, "expert_model_parallel_size " + num(ep) + " does not divide num_experts " +
                            num(spec.num_experts) + " (Megatron-Core gives every expert-parallel rank num_experts / " +
                            "expert_model_parallel_size whole experts)");
  }
  if (spec.moe_intermediate_size > 0 && spec.moe_intermediate_size % expert_tp_size != 0) {
    problem(expert_tp_field, "expert_tensor_parallel_size " + num(expert_tp_size) +
                                 " does not divide moe_intermediate_size " + num(spec.moe_intermediate_size) +
                                 " (each expert's fc1 and fc2 are split over it)");
  }
  const std::int64_t slots = static_cast<std::int64_t>(expert_tp_size) * ep;
  const std::int64_t ranks = static_cast<std::int64_t>(tp) * dp;
  if (ranks % slots != 0) {
    problem(Field::kEp, "expert_tensor_parallel_size * expert_model_parallel_size = " + num(expert_tp_size) + " * " +
                            num(ep) + " does not divide tensor_model_parallel_size * data_parallel_size = " + num(tp) +
                            " * " + num(dp) +
                            " (Megatron-Core folds the expert groups into each pipeline stage's ranks)");
  }
}

std::vector<BufferLayout> train_param_buffers(const ModelSpec& spec, const TrainLayout& layout, int tp_rank,
                                              int pp_rank) {
  HS_CHECK(tp_rank >= 0 && tp_rank < layout.tp,
           "train tp rank " + num(tp_rank) + " is outside [0, " + num(layout.tp) + ")");
  HS_CHECK(pp_rank >= 0 && pp_rank < layout.pp,
           "train pp rank " + num(pp_rank) + " is outside [0, " + num(layout.pp) + ")");
  return train_param_buffers(spec, layout, layout.coord(layout.rank_of({tp_rank, 0, pp_rank})));
}

std::vector<BufferLayout> train_param_buffers(const ModelSpec& spec, const TrainLayout& layout,
                                              const TrainLayout::Coord& coord) {
  const int tp_rank = coord.tp_rank;
  const int pp_rank = coord.pp_rank;
  HS_CHECK(tp_rank >= 0 && tp_rank < layout.tp,
           "train tp rank " + num(tp_rank) + " is outside [0, " + num(layout.tp) + ")");
  HS_CHECK(pp_rank >= 0 && pp_rank < layout.pp,
           "train pp rank " + num(pp_rank) + " is outside [0, " + num(layout.pp) + ")");
  throw_if_unusable(spec, problem_messages(layout.validate(spec)), "train");
  const HfIndex hf(spec);
  const int tp = layout.tp;
  const std::int64_t h = spec.hidden_size;
  const std::int64_t d = spec.resolved_head_dim();
  const std::int64_t num_groups = spec.num_key_value_heads;
  const std::int64_t q_per_group = spec.num_attention_heads / num_groups;
  const std::int64_t groups_per_rank = num_groups / tp;
  const std::int64_t group_rows = (q_per_group + 2) * d;
  const std::int64_t attn_cols_per_rank = spec.num_attention_heads * d / tp;
  const std::int64_t padded_vocab = layout.padded_vocab(spec);
  const bool last_stage = pp_rank == layout.pp - 1;
  const std::int64_t experts_per_rank = spec.is_moe() ? spec.num_experts / layout.ep : 0;
  const std::int64_t expert_ffn_per_rank = spec.is_moe() ? spec.moe_intermediate_size / layout.expert_tp() : 0;

  // Fused QKV (weight or bias): for each local query group, [q rows; k rows; v rows] of that group.
  const auto fused_qkv = [&](std::string name, const HfTensor& q, const HfTensor& k, const HfTensor& v) {
    const bool is_1d = q.is_1d;
    LocalTensor tensor = make_tensor(std::move(name), groups_per_rank * group_rows, q.cols, is_1d);
    for (std::int64_t g = 0; g < groups_per_rank; ++g) {
      const std::int64_t group = tp_rank * groups_per_rank + g;
      const std::int64_t base = g * group_rows;
      tensor.blocks.push_back(make_block(q, group * q_per_group * d, 0, base, 0, q_per_group * d, q.cols));
      tensor.blocks.push_back(make_block(k, group * d, 0, base + q_per_group * d, 0, d, k.cols));
      tensor.blocks.push_back(make_block(v, group * d, 0, base + (q_per_group + 1) * d, 0, d, v.cols));
    }
    return tensor;
  };

  std::vector<BufferLayout> buffers;
  for (int chunk = 0; chunk < layout.vpp; ++chunk) {
    BufferLayout buffer;
    buffer.name = "train.params.pp" + num(pp_rank) + ".vpp" + num(chunk);
    buffer.dtype = spec.dtype;
    buffer.pp_rank = pp_rank;
    buffer.vpp_chunk = chunk;
    if (pp_rank == 0 && chunk == 0) {
      append_tensor(buffer, vocab_shard("embedding.word_embeddings.weight", hf.embedding(), padded_vocab, tp, tp_rank));
    }
    const std::vector<int> layers = layout.layers_of(spec, pp_rank, chunk);
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const int layer = layers[i];
      const std::string prefix = "decoder.layers." + num(static_cast<std::int64_t>(i)) + ".";
      append_tensor(buffer,
                    whole_vector(prefix + "input_layernorm.weight", hf.layer_tensor(layer, HfKind::kInputNorm)));
      append_tensor(buffer, fused_qkv(prefix + "self_attention.linear_qkv.weight", hf.layer_tensor(layer, HfKind::kQ),
                                      hf.layer_tensor(layer, HfKind::kK), hf.layer_tensor(layer, HfKind::kV)));
      if (spec.has_qkv_bias()) {
        append_tensor(buffer,
                      fused_qkv(prefix + "self_attention.linear_qkv.bias", hf.layer_tensor(layer, HfKind::kQBias),
                                hf.layer_tensor(layer, HfKind::kKBias), hf.layer_tensor(layer, HfKind::kVBias)));
      }
      if (spec.has_qk_norm()) {
        append_tensor(
            buffer, whole_vector(prefix + "self_attention.q_layernorm.weight", hf.layer_tensor(layer, HfKind::kQNorm)));
        append_tensor(
            buffer, whole_vector(prefix + "self_attention.k_layernorm.weight", hf.layer_tensor(layer, HfKind::kKNorm)));
      }
      {
        const HfTensor& o = hf.layer_tensor(layer, HfKind::kO);
        LocalTensor proj = make_tensor(prefix + "self_attention.linear_proj.weight", h, attn_cols_per_rank, false);
        proj.blocks.push_back(make_block(o, 0, tp_rank * attn_cols_per_rank, 0, 0, h, attn_cols_per_rank));
        append_tensor(buffer, std::move(proj));
      }
      append_tensor(buffer,
                    whole_vector(prefix + "pre_mlp_layernorm.weight", hf.layer_tensor(layer, HfKind::kPostAttnNorm)));
      if (spec.layer_has_experts(layer)) {
        append_tensor(buffer, whole_matrix(prefix + "mlp.router.weight", hf.layer_tensor(layer, HfKind::kRouter)));
        const std::int64_t f = expert_ffn_per_rank;
        const std::int64_t u = coord.etp_rank;
        for (std::int64_t j = 0; j < experts_per_rank; ++j) {
          const std::int64_t e = coord.ep_rank * experts_per_rank + j;
          const HfTensor& gate = hf.expert_tensor(layer, HfKind::kExpertGate, e);
          const HfTensor& up = hf.expert_tensor(layer, HfKind::kExpertUp, e);
          LocalTensor fc1 = make_tensor(prefix + "mlp.experts.linear_fc1.weight" + num(j), 2 * f, h, false);
          fc1.blocks.push_back(make_block(gate, u * f, 0, 0, 0, f, h));
          fc1.blocks.push_back(make_block(up, u * f, 0, f, 0, f, h));
          append_tensor(buffer, std::move(fc1));
        }
        for (std::int64_t j = 0; j < experts_per_rank; ++j) {
          const std::int64_t e = coord.ep_rank * experts_per_rank + j;
          const HfTensor& down = hf.expert_tensor(layer, HfKind::kExpertDown, e);
          LocalTensor fc2 = make_tensor(prefix + "mlp.experts.linear_fc2.weight" + num(j), h, f, false);
          fc2.blocks.push_back(make_block(down, 0, u * f, 0, 0, h, f));
          append_tensor(buffer, std::move(fc2));
        }
        if (spec.has_shared_expert()) {  // SharedExpertMLP: split over tp like the dense MLP; gate_weight whole
          append_swiglu_shard(
              buffer, prefix + "mlp.shared_experts.linear_fc1.weight", prefix + "mlp.shared_experts.linear_fc2.weight",
              hf.layer_tensor(layer, HfKind::kSharedGateProj), hf.layer_tensor(layer, HfKind::kSharedUpProj),
              hf.layer_tensor(layer, HfKind::kSharedDownProj), tp, tp_rank);
          append_tensor(buffer, whole_matrix(prefix + "mlp.shared_experts.gate_weight",
                                             hf.layer_tensor(layer, HfKind::kSharedExpertGate)));
        }
        continue;
      }
      append_swiglu_shard(buffer, prefix + "mlp.linear_fc1.weight", prefix + "mlp.linear_fc2.weight",
                          hf.layer_tensor(layer, HfKind::kGate), hf.layer_tensor(layer, HfKind::kUp),
                          hf.layer_tensor(layer, HfKind::kDown), tp, tp_rank);
    }
    if (last_stage && chunk == layout.vpp - 1) {
      append_tensor(buffer, whole_vector("decoder.final_layernorm.weight", hf.final_norm()));
      if (const HfTensor* lm_head = hf.lm_head()) {
        append_tensor(buffer, vocab_shard("output_layer.weight", *lm_head, padded_vocab, tp, tp_rank));
      } else if (layout.pp > 1) {
        // Tied embeddings: Megatron keeps a copy of the embedding on the last stage.
        append_tensor(buffer, vocab_shard("output_layer.weight", hf.embedding(), padded_vocab, tp, tp_rank));
      }
    }
    buffers.push_back(std::move(buffer));
  }
  return buffers;
}

}  // namespace hybridshard::core
