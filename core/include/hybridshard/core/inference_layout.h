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
//   model.norm.weight                      [h]
//   lm_head.weight                         [Vv/T, h]  untied only (vLLM ties lm_head to embed_tokens)
// Vocabulary padding rows hold zeros.
#pragma once

#include <string>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::core {

struct InferenceLayout {
  int tp = 1;
  int world_size = 1;  // the same GPUs as training: world_size == TrainLayout::world_size()
  int pad_vocab_to = 64;

  struct Coord {
    int tp_rank = 0;
    int dp_rank = 0;
  };

  int dp() const { return world_size / tp; }
  Coord coord(int rank) const { return {rank % tp, rank / tp}; }
  int rank_of(const Coord& coord) const { return coord.dp_rank * tp + coord.tp_rank; }

  std::int64_t padded_vocab(const ModelSpec& spec) const;
  std::int64_t kv_heads_per_rank(const ModelSpec& spec) const;

  std::vector<std::string> validate(const ModelSpec& spec) const;
};

// The inference shard of tensor-parallel rank `tp_rank`: one buffer, model dtype, tensors in the order above.
BufferLayout inference_param_buffer(const ModelSpec& spec, const InferenceLayout& layout, int tp_rank);

}  // namespace hybridshard::core
