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
//   decoder.layers.i.self_attention.q_layernorm.weight, k_layernorm.weight [d]  (qwen3) replicated, after linear_qkv
// A layer with experts (qwen2_moe, qwen3_moe, mixtral) has, after pre_mlp_layernorm, instead of linear_fc1 /
// linear_fc2:
//   decoder.layers.i.mlp.router.weight      [E, h]       replicated on every rank
//   decoder.layers.i.mlp.experts.linear_fc1.weight<j> [2*Ie/etp, h]  local expert j = global expert
//                                           ep_rank*E/ep + j: [gate rows u*Ie/etp..; up rows u*Ie/etp..], u = etp_rank
//   decoder.layers.i.mlp.experts.linear_fc2.weight<j> [h, Ie/etp]    columns u*Ie/etp..
// (TEGroupedMLP's names), then, with a shared expert (qwen2_moe; Megatron-Core's SharedExpertMLP with
// moe_shared_expert_gate), split over tp like the dense MLP:
//   decoder.layers.i.mlp.shared_experts.linear_fc1.weight [2*Is/tp, h]  [gate rows t*Is/tp..; up rows t*Is/tp..]
//   decoder.layers.i.mlp.shared_experts.linear_fc2.weight [h, Is/tp]    columns t*Is/tp..
//   decoder.layers.i.mlp.shared_experts.gate_weight       [1, h]        replicated
// Expert ranks fold over the same GPUs as Megatron-Core's expert rank generator (order
// tp-ep-dp-pp with tp = etp): within a stage, r = dp_rank * tp + tp_rank, etp_rank = r % etp, ep_rank = (r / etp) % ep.
// So with ep > 1 different data-parallel ranks hold different experts.
//   decoder.final_layernorm.weight          [h]          last stage, last chunk
//   output_layer.weight                     [Vm/tp, h]   last stage, last chunk; with tied embeddings it exists only
//                                                        when pp > 1 (Megatron keeps a copy there) and holds the
//                                                        embedding's rows
// Vm is the vocabulary padded to a multiple of make_vocab_size_divisible_by * tp; padding rows map to nothing.
// Layer index i is local to the chunk (0-based), as in Megatron-Core.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/field_problem.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::core {

struct TrainLayout {
  int tp = 1;
  int pp = 1;
  int vpp = 1;
  int dp = 1;
  int make_vocab_size_divisible_by = 128;
  int ep = 1;   // expert_model_parallel_size
  int etp = 0;  // expert_tensor_parallel_size; 0: tp (Megatron-Core's default)

  struct Coord {
    int tp_rank = 0;
    int dp_rank = 0;
    int pp_rank = 0;
    int etp_rank = 0;  // derived by coord(); rank_of ignores it
    int ep_rank = 0;   // derived by coord(); rank_of ignores it
  };

  int world_size() const { return tp * pp * dp; }
  int expert_tp() const { return etp > 0 ? etp : tp; }
  // Data-parallel ranks after which the expert shards repeat: etp*ep / gcd(tp, etp*ep) (1 without experts split
  // over data-parallel ranks). Ranks (t, d, p) and (t, d + period, p) hold the same tensors.
  int expert_period() const;
  Coord coord(int rank) const;
  int rank_of(const Coord& coord) const;

  std::int64_t padded_vocab(const ModelSpec& spec) const;

  // Global layer indices held by chunk `vpp_chunk` of stage `pp_rank`, in order.
  std::vector<int> layers_of(const ModelSpec& spec, int pp_rank, int vpp_chunk) const;

  // The fields validate() can find a problem with; field_name() gives their Megatron-Core names.
  enum class Field : std::uint8_t { kTp, kPp, kVpp, kDp, kMakeVocabSizeDivisibleBy, kEp, kEtp };
  using Problem = FieldProblem<Field>;
  static std::string_view field_name(Field field);  // "tensor_model_parallel_size", ...

  // Every problem at once ("tensor_model_parallel_size 3 does not divide num_attention_heads 32"), each tagged with
  // the layout field to change (a layer count that pp x vpp does not divide: kPp); empty if usable.
  std::vector<Problem> validate(const ModelSpec& spec) const;

 private:
  void validate_experts(const ModelSpec& spec, bool tp_ok, std::vector<Problem>& problems) const;
};

// The parameter buffers of the train rank at `coord` (from TrainLayout::coord): one BufferLayout per vpp chunk, model
// dtype, tensors in the order listed above.
std::vector<BufferLayout> train_param_buffers(const ModelSpec& spec, const TrainLayout& layout,
                                              const TrainLayout::Coord& coord);
// The same for rank (tp_rank, dp 0, pp_rank): every dp rank's when experts are not split over data-parallel ranks.
std::vector<BufferLayout> train_param_buffers(const ModelSpec& spec, const TrainLayout& layout, int tp_rank,
                                              int pp_rank);

}  // namespace hybridshard::core
