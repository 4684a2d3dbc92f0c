// The inference layout: vLLM conventions and names, so that a vLLM engine could take the shards as they are.
//
// Rank order: tp' fastest, then dp' (= world / tp'). For inference tp rank r (of T = tp'):
//   model.embed_tokens.weight              [Vv/T, h]  rows r*Vv/T..; Vv = vocab padded to a multiple of 64
//   model.layers.N.input_layernorm.weight  [h]
//   model.layers.N.self_attn.qkv_proj.weight [(H/T + 2*Kr)*d, h]: [q rows of heads r*H/T..; k rows of kv heads;
//                                            v rows of kv heads], Kr = max(1, K/T) kv heads per rank; when T > K each
//                                            kv head is replicated on T/K consecutive ranks (head r / (T/K))
//   model.layers.N.self_attn.qkv_proj.bias   (qwen2) same rows
//   model.layers.N.self_attn.o_proj.weight [h, H*d/T] columns r*H*d/T..
//   model.layers.N.post_attention_layernorm.weight [h]
//   model.layers.N.mlp.gate_up_proj.weight [2*I/T, h] [gate rows r*I/T..; up rows r*I/T..]
//   model.layers.N.mlp.down_proj.weight    [h, I/T]   columns r*I/T..
//   model.layers.N.self_attn.q_norm.weight, k_norm.weight [d]  (qwen3) whole on every rank, after qkv_proj
// A layer with experts has, after post_attention_layernorm, instead of gate_up_proj / down_proj (prefix "mlp." for
// qwen2_moe and qwen3_moe, "block_sparse_moe." for mixtral; vLLM's FusedMoE parameters):
//   ...gate.weight                         [E, h]     the router, whole on every rank (ReplicatedLinear)
//   mlp.shared_expert_gate.weight          [1, h]     qwen2_moe only: whole on every rank
//   mlp.shared_expert.gate_up_proj.weight  [2*Is/T, h] qwen2_moe only: [gate rows r*Is/T..; up rows r*Is/T..] (Is =
//                                                     shared_expert_intermediate_size; over tp' also with EP)
//   mlp.shared_expert.down_proj.weight     [h, Is/T]  qwen2_moe only: columns r*Is/T..
//   ...experts.w13_weight                  [El, 2*Ie/Te, h]  per local expert: [gate (w1) rows; up (w3) rows]
//   ...experts.w2_weight                   [El, h, Ie/Te]    per local expert: down (w2) columns
// Tensor-parallel experts (vLLM's default): Te = T, El = E, rows/columns r*Ie/T.. of every expert.
// Expert parallel (enable_expert_parallel): Te = 1 and the T ranks of one engine split the experts with vLLM's
// linear placement: rank r holds experts [r*(E/T) + min(r, E%T), ...), E/T of them plus one when r < E%T, each whole.
//   model.norm.weight                      [h]
//   lm_head.weight                         [Vv/T, h]  untied only (vLLM ties lm_head to embed_tokens)
// Vocabulary padding rows hold zeros.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/field_problem.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::core {

struct InferenceLayout {
  int tp = 1;
  int world_size = 1;  // the same GPUs as training: world_size == TrainLayout::world_size()
  int pad_vocab_to = 64;
  bool expert_parallel = false;  // vLLM's enable_expert_parallel; false: tensor-parallel experts (vLLM's default)

  struct Coord {
    int tp_rank = 0;
    int dp_rank = 0;
  };

  int dp() const { return world_size / tp; }
  Coord coord(int rank) const { return {rank % tp, rank / tp}; }
  int rank_of(const Coord& coord) const { return coord.dp_rank * tp + coord.tp_rank; }

  std::int64_t padded_vocab(const ModelSpec& spec) const;
  std::int64_t kv_heads_per_rank(const ModelSpec& spec) const;
  // The experts tensor-parallel rank `tp_rank` holds: [first, first + count).
  struct ExpertRange {
    std::int64_t first = 0;
    std::int64_t count = 0;
  };
  ExpertRange experts_of(const ModelSpec& spec, int tp_rank) const;

  // The fields validate() can find a problem with; field_name() gives their vLLM names.
  enum class Field : std::uint8_t { kTp, kWorldSize, kPadVocabTo, kExpertParallel };
  using Problem = FieldProblem<Field>;
  static std::string_view field_name(Field field);  // "tensor_model_parallel_size", ...

  // Every problem at once, each a sentence tagged with the layout field to change; empty if usable.
  std::vector<Problem> validate(const ModelSpec& spec) const;
};

// The inference shard of tensor-parallel rank `tp_rank`: one buffer, model dtype, tensors in the order above.
BufferLayout inference_param_buffer(const ModelSpec& spec, const InferenceLayout& layout, int tp_rank);

}  // namespace hybridshard::core
