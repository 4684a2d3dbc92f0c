// The training layout: Megatron-Core conventions.
//
// Rank order is tp fastest, then dp, then pp: rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank.
// Layers are split over pp * vpp chunks; with vpp > 1, chunk v of stage p holds layers
// [(v * pp + p) * L / (pp * vpp), (v * pp + p + 1) * L / (pp * vpp)) (Megatron's interleaved schedule).
// Per chunk and tensor-parallel rank t, the local tensors are (Megatron-Core local spec names):
//   embedding.word_embeddings.weight        [Vm/tp, h]   first stage, chunk 0; rows t*Vm/tp.. of the padded vocab
//   decoder.layers.i.input_layernorm.weight [h]          replicated over tp
//   decoder.layers.i.self_attention.linear_qkv.weight [(G/tp)*(q_per_group+2)*d, h]: for each local query group g,
//                                           [q rows of g; k row block of g; v row block of g]
//   decoder.layers.i.self_attention.linear_qkv.bias   (qwen2) same row structure
//   decoder.layers.i.self_attention.linear_proj.weight [h, H*d/tp]  columns t*H*d/tp..
//   decoder.layers.i.pre_mlp_layernorm.weight [h]
//   decoder.layers.i.mlp.linear_fc1.weight  [2*I/tp, h]  [gate rows t*I/tp..; up rows t*I/tp..]
//   decoder.layers.i.mlp.linear_fc2.weight  [h, I/tp]    columns t*I/tp..
//   decoder.final_layernorm.weight          [h]          last stage, last chunk
//   output_layer.weight                     [Vm/tp, h]   last stage, last chunk; with tied embeddings it exists only
//                                                        when pp > 1 (Megatron keeps a copy there) and holds the
//                                                        embedding's rows
// Vm is the vocabulary padded to a multiple of make_vocab_size_divisible_by * tp; padding rows map to nothing.
// Layer index i is local to the chunk (0-based), as in Megatron-Core.
#pragma once

#include <string>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::core {

struct TrainLayout {
  int tp = 1;
  int pp = 1;
  int vpp = 1;
  int dp = 1;
  int make_vocab_size_divisible_by = 128;

  struct Coord {
    int tp_rank = 0;
    int dp_rank = 0;
    int pp_rank = 0;
  };

  int world_size() const { return tp * pp * dp; }
  Coord coord(int rank) const;
  int rank_of(const Coord& coord) const;

  std::int64_t padded_vocab(const ModelSpec& spec) const;

  // Global layer indices held by chunk `vpp_chunk` of stage `pp_rank`, in order.
  std::vector<int> layers_of(const ModelSpec& spec, int pp_rank, int vpp_chunk) const;

  // Every problem at once ("tensor_model_parallel_size 3 does not divide num_attention_heads 32"); empty if usable.
  std::vector<std::string> validate(const ModelSpec& spec) const;
};

// The parameter buffers of train rank (tp_rank, pp_rank): one BufferLayout per vpp chunk, model dtype, tensors in
// the order listed above. Identical for every dp rank.
std::vector<BufferLayout> train_param_buffers(const ModelSpec& spec, const TrainLayout& layout, int tp_rank,
                                              int pp_rank);

}  // namespace hybridshard::core
