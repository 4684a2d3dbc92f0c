#include "reference.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>
#include <utility>

#include "hybridshard/core/error.h"
#include "hybridshard/core/weight_generator.h"

namespace hybridshard::reference {
namespace {

using core::ModelSpec;

// A 2-D matrix of floats with the few operations the frameworks' loaders use: narrow, concatenate, pad.
struct Matrix {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<float> values;

  float at(std::int64_t row, std::int64_t col) const { return values[static_cast<std::size_t>(row * cols + col)]; }
};

Matrix narrow_rows(const Matrix& m, std::int64_t first, std::int64_t count) {
  HS_CHECK(first >= 0 && count >= 0 && first + count <= m.rows, "reference: row slice out of range");
  Matrix out{count, m.cols, {}};
  out.values.assign(m.values.begin() + first * m.cols, m.values.begin() + (first + count) * m.cols);
  return out;
}

Matrix narrow_cols(const Matrix& m, std::int64_t first, std::int64_t count) {
  HS_CHECK(first >= 0 && count >= 0 && first + count <= m.cols, "reference: column slice out of range");
  Matrix out{m.rows, count, {}};
  out.values.reserve(static_cast<std::size_t>(m.rows * count));
  for (std::int64_t r = 0; r < m.rows; ++r) {
    for (std::int64_t c = 0; c < count; ++c) out.values.push_back(m.at(r, first + c));
  }
  return out;
}

Matrix concat_rows(const std::vector<Matrix>& parts) {
  Matrix out{0, parts.empty() ? 0 : parts.front().cols, {}};
  for (const Matrix& part : parts) {
    HS_CHECK(part.cols == out.cols, "reference: concatenating matrices of different widths");
    out.rows += part.rows;
    out.values.insert(out.values.end(), part.values.begin(), part.values.end());
  }
  return out;
}

// Zero rows appended up to `rows` (vocabulary padding).
Matrix pad_rows(const Matrix& m, std::int64_t rows) {
  Matrix out = m;
  out.rows = rows;
  out.values.resize(static_cast<std::size_t>(rows * m.cols), 0.0f);
  return out;
}

struct FullTensorInfo {
  int id = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  bool is_1d = false;
};

// Full Hugging Face tensors by name, materialised from core::weight_value.
class Checkpoint {
 public:
  Checkpoint(const ModelSpec& spec, std::uint32_t version) : version_(version) {
    for (const core::HfTensor& t : spec.hf_tensors()) info_[t.name] = FullTensorInfo{t.id, t.rows, t.cols, t.is_1d};
  }

  bool has(const std::string& name) const { return info_.count(name) > 0; }

  const FullTensorInfo& info(const std::string& name) const {
    const auto found = info_.find(name);
    if (found == info_.end()) HS_THROW(core::Error, "reference: the checkpoint has no tensor " + name);
    return found->second;
  }

  Matrix get(const std::string& name) const {
    const FullTensorInfo& i = info(name);
    Matrix m{i.rows, i.cols, {}};
    m.values.reserve(static_cast<std::size_t>(i.rows * i.cols));
    for (std::int64_t r = 0; r < i.rows; ++r) {
      for (std::int64_t c = 0; c < i.cols; ++c) m.values.push_back(core::weight_value(i.id, r, c, version_));
    }
    return m;
  }

 private:
  std::uint32_t version_;
  std::map<std::string, FullTensorInfo> info_;
};

ExpectedTensor as_matrix_tensor(Matrix m) {
  ExpectedTensor t;
  t.shape = {m.rows, m.cols};
  t.rows = m.rows;
  t.cols = m.cols;
  t.values = std::move(m.values);
  return t;
}

ExpectedTensor as_vector_tensor(Matrix m) {
  HS_CHECK(m.cols == 1, "reference: a 1-D tensor must have one column");
  ExpectedTensor t;
  t.shape = {m.rows};
  t.rows = m.rows;
  t.cols = 1;
  t.values = std::move(m.values);
  return t;
}

ExpectedTensor as_tensor(Matrix m, bool is_1d) {
  return is_1d ? as_vector_tensor(std::move(m)) : as_matrix_tensor(std::move(m));
}

std::int64_t head_dim_of(const ModelSpec& spec) {
  return spec.head_dim != 0 ? spec.head_dim : spec.hidden_size / spec.num_attention_heads;
}

std::string layer_prefix(std::int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

// The Hugging Face names of a layer's experts: qwen2_moe / qwen3_moe "mlp.experts.E.{gate,up,down}_proj.weight" under
// router "mlp.gate.weight" (qwen2_moe also "mlp.shared_expert.{gate,up,down}_proj.weight",
// "mlp.shared_expert_gate.weight"); mixtral "block_sparse_moe.experts.E.{w1,w3,w2}.weight" under
// "block_sparse_moe.gate.weight".
struct ExpertNames {
  std::string router;
  std::string block;  // "mlp." or "block_sparse_moe."
  bool mixtral = false;
  std::string gate(std::int64_t e) const { return expert(e) + (mixtral ? "w1.weight" : "gate_proj.weight"); }
  std::string up(std::int64_t e) const { return expert(e) + (mixtral ? "w3.weight" : "up_proj.weight"); }
  std::string down(std::int64_t e) const { return expert(e) + (mixtral ? "w2.weight" : "down_proj.weight"); }
  std::string expert(std::int64_t e) const { return block + "experts." + std::to_string(e) + "."; }
};

// Whether the layer at `prefix` has experts in the checkpoint, and their names.
bool find_experts(const Checkpoint& ckpt, const std::string& prefix, ExpertNames& names) {
  for (const bool mixtral : {false, true}) {
    const std::string block = prefix + (mixtral ? "block_sparse_moe." : "mlp.");
    if (ckpt.has(block + "gate.weight")) {
      names = ExpertNames{block + "gate.weight", block, mixtral};
      return true;
    }
  }
  return false;
}

// A 3-D tensor [n, rows, cols] stacked from n matrices of equal shape.
ExpectedTensor stacked(const std::vector<Matrix>& parts, std::int64_t rows, std::int64_t cols) {
  ExpectedTensor t;
  const auto n = static_cast<std::int64_t>(parts.size());
  t.shape = {n, rows, cols};
  t.rows = n * rows;
  t.cols = cols;
  for (const Matrix& part : parts) {
    HS_CHECK(part.rows == rows && part.cols == cols, "reference: stacking matrices of different shapes");
    t.values.insert(t.values.end(), part.values.begin(), part.values.end());
  }
  return t;
}

}  // namespace

ExpectedTensor full_tensor(const ModelSpec& spec, const std::string& name, std::uint32_t version) {
  const Checkpoint checkpoint(spec, version);
  return as_tensor(checkpoint.get(name), checkpoint.info(name).is_1d);
}

// vLLM: VocabParallelEmbedding pads the vocabulary to a multiple of 64 and gives each rank an equal slice;
// QKVParallelLinear loads q, k, v shards one after the other (k/v replicated when tp > num_key_value_heads);
// MergedColumnParallelLinear loads gate then up; RowParallelLinear splits the input dimension.
ExpectedTensors expected_inference_tensors(const ModelSpec& spec, const core::InferenceLayout& inference, int tp_rank,
                                           std::uint32_t version) {
  const Checkpoint ckpt(spec, version);
  const std::int64_t tp = inference.tp;
  const std::int64_t r = tp_rank;
  const std::int64_t d = head_dim_of(spec);
  const std::int64_t heads = spec.num_attention_heads;
  const std::int64_t kv_heads = spec.num_key_value_heads;
  std::int64_t padded_vocab = spec.vocab_size;
  while (padded_vocab % inference.pad_vocab_to != 0) ++padded_vocab;
  const std::int64_t vocab_per_rank = padded_vocab / tp;

  const auto vocab_slice = [&](const std::string& name) {
    return narrow_rows(pad_rows(ckpt.get(name), padded_vocab), r * vocab_per_rank, vocab_per_rank);
  };
  // q heads [r*H/T, (r+1)*H/T); kv heads: shard r of K/T heads, or with T > K head r / (T/K) on T/K ranks.
  const auto qkv = [&](const std::string& q, const std::string& k, const std::string& v) {
    const std::int64_t q_heads = heads / tp;
    std::int64_t kv_first = 0;
    std::int64_t kv_count = 0;
    if (tp >= kv_heads) {
      const std::int64_t replicas = tp / kv_heads;
      kv_first = r / replicas;
      kv_count = 1;
    } else {
      kv_count = kv_heads / tp;
      kv_first = r * kv_count;
    }
    return concat_rows({narrow_rows(ckpt.get(q), r * q_heads * d, q_heads * d),
                        narrow_rows(ckpt.get(k), kv_first * d, kv_count * d),
                        narrow_rows(ckpt.get(v), kv_first * d, kv_count * d)});
  };

  ExpectedTensors out;
  out["model.embed_tokens.weight"] = as_matrix_tensor(vocab_slice("model.embed_tokens.weight"));
  for (std::int64_t layer = 0; layer < spec.num_hidden_layers; ++layer) {
    const std::string p = layer_prefix(layer);
    out[p + "input_layernorm.weight"] = as_vector_tensor(ckpt.get(p + "input_layernorm.weight"));
    out[p + "self_attn.qkv_proj.weight"] = as_matrix_tensor(
        qkv(p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"));
    if (ckpt.has(p + "self_attn.q_proj.bias")) {
      out[p + "self_attn.qkv_proj.bias"] =
          as_vector_tensor(qkv(p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias"));
    }
    if (ckpt.has(p + "self_attn.q_norm.weight")) {
      out[p + "self_attn.q_norm.weight"] = as_vector_tensor(ckpt.get(p + "self_attn.q_norm.weight"));
      out[p + "self_attn.k_norm.weight"] = as_vector_tensor(ckpt.get(p + "self_attn.k_norm.weight"));
    }
    const Matrix o = ckpt.get(p + "self_attn.o_proj.weight");
    out[p + "self_attn.o_proj.weight"] = as_matrix_tensor(narrow_cols(o, r * (o.cols / tp), o.cols / tp));
    out[p + "post_attention_layernorm.weight"] = as_vector_tensor(ckpt.get(p + "post_attention_layernorm.weight"));
    ExpertNames experts;
    if (find_experts(ckpt, p, experts)) {
      // vLLM FusedMoE: the router is a ReplicatedLinear; w13 [local experts, 2*I', H] = per expert [w1 (gate) shard;
      // w3 (up) shard], w2 [local experts, H, I'] = down shard. Tensor-parallel experts: every expert, I' = I/tp,
      // shard r. enable_expert_parallel: determine_expert_map's linear placement (base E/tp, the first E%tp ranks
      // one more), I' = I.
      const Matrix router = ckpt.get(experts.router);
      out[experts.router] = as_matrix_tensor(router);
      const std::int64_t num_experts = router.rows;
      std::int64_t first = 0;
      std::int64_t count = num_experts;
      std::int64_t shards = tp;
      std::int64_t shard = r;
      if (inference.expert_parallel) {
        const std::int64_t base = num_experts / tp;
        const std::int64_t extra = num_experts % tp;
        count = base + (r < extra ? 1 : 0);
        first = r * base + std::min(r, extra);
        shards = 1;
        shard = 0;
      }
      const std::int64_t width = ckpt.info(experts.gate(0)).rows / shards;
      std::vector<Matrix> w13;
      std::vector<Matrix> w2;
      for (std::int64_t e = first; e < first + count; ++e) {
        w13.push_back(concat_rows({narrow_rows(ckpt.get(experts.gate(e)), shard * width, width),
                                   narrow_rows(ckpt.get(experts.up(e)), shard * width, width)}));
        w2.push_back(narrow_cols(ckpt.get(experts.down(e)), shard * width, width));
      }
      out[experts.block + "experts.w13_weight"] = stacked(w13, 2 * width, spec.hidden_size);
      out[experts.block + "experts.w2_weight"] = stacked(w2, spec.hidden_size, width);
      if (ckpt.has(experts.block + "shared_expert_gate.weight")) {
        // Qwen2MoeSparseMoeBlock: shared_expert_gate is a plain Linear(h, 1), whole; shared_expert a Qwen2MoeMLP
        // whose MergedColumnParallelLinear and RowParallelLinear split over all tp ranks (expert parallel or not).
        out[experts.block + "shared_expert_gate.weight"] =
            as_matrix_tensor(ckpt.get(experts.block + "shared_expert_gate.weight"));
        const Matrix shared_gate = ckpt.get(experts.block + "shared_expert.gate_proj.weight");
        const Matrix shared_up = ckpt.get(experts.block + "shared_expert.up_proj.weight");
        const Matrix shared_down = ckpt.get(experts.block + "shared_expert.down_proj.weight");
        const std::int64_t shared_width = shared_gate.rows / tp;
        out[experts.block + "shared_expert.gate_up_proj.weight"] =
            as_matrix_tensor(concat_rows({narrow_rows(shared_gate, r * shared_width, shared_width),
                                          narrow_rows(shared_up, r * shared_width, shared_width)}));
        out[experts.block + "shared_expert.down_proj.weight"] =
            as_matrix_tensor(narrow_cols(shared_down, r * shared_width, shared_width));
      }
      continue;
    }
    const Matrix gate = ckpt.get(p + "mlp.gate_proj.weight");
    const Matrix up = ckpt.get(p + "mlp.up_proj.weight");
    const std::int64_t ffn = gate.rows / tp;
    out[p + "mlp.gate_up_proj.weight"] =
        as_matrix_tensor(concat_rows({narrow_rows(gate, r * ffn, ffn), narrow_rows(up, r * ffn, ffn)}));
    const Matrix down = ckpt.get(p + "mlp.down_proj.weight");
    out[p + "mlp.down_proj.weight"] = as_matrix_tensor(narrow_cols(down, r * ffn, ffn));
  }
  out["model.norm.weight"] = as_vector_tensor(ckpt.get("model.norm.weight"));
  if (!spec.tie_word_embeddings) out["lm_head.weight"] = as_matrix_tensor(vocab_slice("lm_head.weight"));
  return out;
}

// Megatron-Core: the HF->Megatron converters build the fused QKV as [q_g; k_g; v_g] for every query group g and
// split it evenly over tp; linear_fc1 is [gate shard; up shard]; the vocabulary is padded (Megatron's
// _vocab_size_with_padding) to a multiple of make_vocab_size_divisible_by * tp. Layer offsets follow
// get_transformer_layer_offset for the interleaved schedule.
ExpectedTensors expected_train_tensors(const ModelSpec& spec, const core::TrainLayout& train, int tp_rank, int pp_rank,
                                       int vpp_chunk, std::uint32_t version, int dp_rank) {
  const Checkpoint ckpt(spec, version);
  const std::int64_t tp = train.tp;
  const std::int64_t t = tp_rank;
  const std::int64_t d = head_dim_of(spec);
  const std::int64_t groups = spec.num_key_value_heads;
  const std::int64_t q_per_group = spec.num_attention_heads / groups;
  const std::int64_t multiple = static_cast<std::int64_t>(train.make_vocab_size_divisible_by) * tp;
  std::int64_t padded_vocab = spec.vocab_size;
  while (padded_vocab % multiple != 0) ++padded_vocab;
  const std::int64_t vocab_per_rank = padded_vocab / tp;

  const std::int64_t layers_per_virtual_rank = spec.num_hidden_layers / train.pp / train.vpp;
  const std::int64_t layers_per_virtual_stage = spec.num_hidden_layers / train.vpp;
  const std::int64_t offset = vpp_chunk * layers_per_virtual_stage + pp_rank * layers_per_virtual_rank;
  const bool first_stage = pp_rank == 0 && vpp_chunk == 0;
  const bool last_stage = pp_rank == train.pp - 1 && vpp_chunk == train.vpp - 1;

  const auto vocab_slice = [&](const std::string& name) {
    return narrow_rows(pad_rows(ckpt.get(name), padded_vocab), t * vocab_per_rank, vocab_per_rank);
  };
  const auto fused_qkv = [&](const std::string& q_name, const std::string& k_name, const std::string& v_name) {
    const Matrix q = ckpt.get(q_name);
    const Matrix k = ckpt.get(k_name);
    const Matrix v = ckpt.get(v_name);
    std::vector<Matrix> parts;
    for (std::int64_t g = 0; g < groups; ++g) {
      parts.push_back(narrow_rows(q, g * q_per_group * d, q_per_group * d));
      parts.push_back(narrow_rows(k, g * d, d));
      parts.push_back(narrow_rows(v, g * d, d));
    }
    const Matrix fused = concat_rows(parts);
    return narrow_rows(fused, t * (fused.rows / tp), fused.rows / tp);
  };

  ExpectedTensors out;
  if (first_stage) {
    out["embedding.word_embeddings.weight"] = as_matrix_tensor(vocab_slice("model.embed_tokens.weight"));
  }
  for (std::int64_t i = 0; i < layers_per_virtual_rank; ++i) {
    const std::string hf = layer_prefix(offset + i);
    const std::string m = "decoder.layers." + std::to_string(i) + ".";
    out[m + "input_layernorm.weight"] = as_vector_tensor(ckpt.get(hf + "input_layernorm.weight"));
    out[m + "self_attention.linear_qkv.weight"] = as_matrix_tensor(
        fused_qkv(hf + "self_attn.q_proj.weight", hf + "self_attn.k_proj.weight", hf + "self_attn.v_proj.weight"));
    if (ckpt.has(hf + "self_attn.q_proj.bias")) {
      out[m + "self_attention.linear_qkv.bias"] = as_vector_tensor(
          fused_qkv(hf + "self_attn.q_proj.bias", hf + "self_attn.k_proj.bias", hf + "self_attn.v_proj.bias"));
    }
    if (ckpt.has(hf + "self_attn.q_norm.weight")) {
      out[m + "self_attention.q_layernorm.weight"] = as_vector_tensor(ckpt.get(hf + "self_attn.q_norm.weight"));
      out[m + "self_attention.k_layernorm.weight"] = as_vector_tensor(ckpt.get(hf + "self_attn.k_norm.weight"));
    }
    const Matrix o = ckpt.get(hf + "self_attn.o_proj.weight");
    out[m + "self_attention.linear_proj.weight"] = as_matrix_tensor(narrow_cols(o, t * (o.cols / tp), o.cols / tp));
    out[m + "pre_mlp_layernorm.weight"] = as_vector_tensor(ckpt.get(hf + "post_attention_layernorm.weight"));
    ExpertNames experts;
    if (find_experts(ckpt, hf, experts)) {
      // Megatron-Core: the expert rank generator (order tp-ep-dp-pp, its tp = expert_tensor_parallel_size, default
      // tp) numbers the ranks of a stage as dp_rank * tp + tp_rank; TEGroupedMLP names local expert j
      // linear_fc1.weight<j> = [gate shard; up shard] and linear_fc2.weight<j> = down shard of global expert
      // ep_rank * E/ep + j; the router is whole everywhere.
      const Matrix router = ckpt.get(experts.router);
      out[m + "mlp.router.weight"] = as_matrix_tensor(router);
      const std::int64_t etp = train.etp > 0 ? train.etp : train.tp;
      const std::int64_t stage_rank = static_cast<std::int64_t>(dp_rank) * tp + t;
      const std::int64_t etp_rank = stage_rank % etp;
      const std::int64_t ep_rank = (stage_rank / etp) % train.ep;
      const std::int64_t local = router.rows / train.ep;
      const std::int64_t width = ckpt.info(experts.gate(0)).rows / etp;
      for (std::int64_t j = 0; j < local; ++j) {
        const std::int64_t e = ep_rank * local + j;
        out[m + "mlp.experts.linear_fc1.weight" + std::to_string(j)] =
            as_matrix_tensor(concat_rows({narrow_rows(ckpt.get(experts.gate(e)), etp_rank * width, width),
                                          narrow_rows(ckpt.get(experts.up(e)), etp_rank * width, width)}));
        out[m + "mlp.experts.linear_fc2.weight" + std::to_string(j)] =
            as_matrix_tensor(narrow_cols(ckpt.get(experts.down(e)), etp_rank * width, width));
      }
      if (ckpt.has(experts.block + "shared_expert_gate.weight")) {
        // SharedExpertMLP (an MLP over the tensor-parallel group, not the expert one): linear_fc1 = [gate shard;
        // up shard], linear_fc2 = down shard by tp rank; gate_weight [1, h] whole on every rank.
        const Matrix shared_gate = ckpt.get(experts.block + "shared_expert.gate_proj.weight");
        const Matrix shared_up = ckpt.get(experts.block + "shared_expert.up_proj.weight");
        const Matrix shared_down = ckpt.get(experts.block + "shared_expert.down_proj.weight");
        const std::int64_t shared_width = shared_gate.rows / tp;
        out[m + "mlp.shared_experts.linear_fc1.weight"] =
            as_matrix_tensor(concat_rows({narrow_rows(shared_gate, t * shared_width, shared_width),
                                          narrow_rows(shared_up, t * shared_width, shared_width)}));
        out[m + "mlp.shared_experts.linear_fc2.weight"] =
            as_matrix_tensor(narrow_cols(shared_down, t * shared_width, shared_width));
        out[m + "mlp.shared_experts.gate_weight"] =
            as_matrix_tensor(ckpt.get(experts.block + "shared_expert_gate.weight"));
      }
      continue;
    }
    const Matrix gate = ckpt.get(hf + "mlp.gate_proj.weight");
    const Matrix up = ckpt.get(hf + "mlp.up_proj.weight");
    const std::int64_t ffn = gate.rows / tp;
    out[m + "mlp.linear_fc1.weight"] =
        as_matrix_tensor(concat_rows({narrow_rows(gate, t * ffn, ffn), narrow_rows(up, t * ffn, ffn)}));
    const Matrix down = ckpt.get(hf + "mlp.down_proj.weight");
    out[m + "mlp.linear_fc2.weight"] = as_matrix_tensor(narrow_cols(down, t * ffn, ffn));
  }
  if (last_stage) {
    out["decoder.final_layernorm.weight"] = as_vector_tensor(ckpt.get("model.norm.weight"));
    if (!spec.tie_word_embeddings) {
      out["output_layer.weight"] = as_matrix_tensor(vocab_slice("lm_head.weight"));
    } else if (train.pp > 1) {
      out["output_layer.weight"] = as_matrix_tensor(vocab_slice("model.embed_tokens.weight"));
    }
  }
  return out;
}

std::vector<std::uint8_t> fill_buffer(const ExpectedTensors& expected, const core::BufferLayout& layout) {
  const std::size_t element = core::dtype_size(layout.dtype);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(layout.bytes), 0);
  std::set<std::string> seen;
  for (const core::LocalTensor& tensor : layout.tensors) {
    const auto found = expected.find(tensor.name);
    if (found == expected.end()) {
      HS_THROW(core::Error, "reference: buffer " + layout.name + " holds " + tensor.name + ", which the framework " +
                                "does not have on this rank");
    }
    const ExpectedTensor& want = found->second;
    if (want.shape != tensor.shape || want.rows != tensor.rows || want.cols != tensor.cols) {
      std::ostringstream message;
      message << "reference: " << tensor.name << " in buffer " << layout.name << " has shape [";
      for (const std::int64_t s : tensor.shape) message << s << ' ';
      message << "] (" << tensor.rows << "x" << tensor.cols << "), expected [";
      for (const std::int64_t s : want.shape) message << s << ' ';
      message << "]";
      HS_THROW(core::Error, message.str());
    }
    HS_CHECK(tensor.offset_bytes >= 0 &&
                 tensor.offset_bytes + static_cast<std::int64_t>(want.values.size() * element) <= layout.bytes,
             "reference: " + tensor.name + " lies outside buffer " + layout.name);
    for (std::size_t i = 0; i < want.values.size(); ++i) {
      encode(want.values[i], layout.dtype, &bytes[static_cast<std::size_t>(tensor.offset_bytes) + i * element]);
    }
    seen.insert(tensor.name);
  }
  for (const auto& [name, tensor] : expected) {
    if (seen.count(name) == 0) HS_THROW(core::Error, "reference: buffer " + layout.name + " lacks " + name);
  }
  return bytes;
}

std::vector<std::uint8_t> expected_inference_buffer(const ModelSpec& spec, const core::InferenceLayout& inference,
                                                    int tp_rank, std::uint32_t version,
                                                    const core::BufferLayout& layout) {
  return fill_buffer(expected_inference_tensors(spec, inference, tp_rank, version), layout);
}

std::vector<std::uint8_t> expected_train_buffer(const ModelSpec& spec, const core::TrainLayout& train, int tp_rank,
                                                int pp_rank, int vpp_chunk, std::uint32_t version,
                                                const core::BufferLayout& layout, int dp_rank) {
  return fill_buffer(expected_train_tensors(spec, train, tp_rank, pp_rank, vpp_chunk, version, dp_rank), layout);
}

std::string first_difference(const core::BufferLayout& layout, const std::vector<std::uint8_t>& expected,
                             const std::uint8_t* actual, std::size_t actual_bytes) {
  if (actual_bytes != expected.size()) {
    return "buffer " + layout.name + " has " + std::to_string(actual_bytes) + " bytes, expected " +
           std::to_string(expected.size());
  }
  const std::size_t element = core::dtype_size(layout.dtype);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] == actual[i]) continue;
    const auto offset = static_cast<std::int64_t>(i);
    for (const core::LocalTensor& tensor : layout.tensors) {
      const std::int64_t end = tensor.offset_bytes + tensor.numel() * static_cast<std::int64_t>(element);
      if (offset < tensor.offset_bytes || offset >= end) continue;
      const std::int64_t index = (offset - tensor.offset_bytes) / static_cast<std::int64_t>(element);
      const std::size_t start =
          static_cast<std::size_t>(tensor.offset_bytes + index * static_cast<std::int64_t>(element));
      std::ostringstream message;
      message << layout.name << ": " << tensor.name << " element (" << index / tensor.cols << ", "
              << index % tensor.cols << ") is " << decode(actual + start, layout.dtype) << ", expected "
              << decode(expected.data() + start, layout.dtype);
      return message.str();
    }
    return layout.name + ": byte " + std::to_string(i) + " outside every tensor is " + std::to_string(actual[i]) +
           ", expected " + std::to_string(expected[i]);
  }
  return {};
}

std::uint16_t float_to_bf16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  const std::uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

float bf16_to_float(std::uint16_t bits) { return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16); }

std::uint16_t float_to_fp16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // inf or nan
    return static_cast<std::uint16_t>(sign | 0x7C00u | (magnitude > 0x7F800000u ? 0x200u : 0u));
  }
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds past 65504
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  if (exponent >= -14) {  // normal in fp16
    std::uint32_t mantissa = magnitude & 0x7FFFFFu;
    std::uint32_t half = (static_cast<std::uint32_t>(exponent + 15) << 10) | (mantissa >> 13);
    const std::uint32_t rest = mantissa & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // carries into the exponent correctly
    return static_cast<std::uint16_t>(sign | half);
  }
  if (exponent < -25) return sign;  // below half the smallest subnormal
  // Subnormal: value = m * 2^-24 with m < 1024.
  const std::uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
  const int shift = -exponent - 14 + 13;  // 14..25 + 13
  std::uint32_t half = mantissa >> shift;
  const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
  const std::uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
  return static_cast<std::uint16_t>(sign | half);
}

float fp16_to_float(std::uint16_t bits) {
  const float sign = (bits & 0x8000u) != 0 ? -1.0f : 1.0f;
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -24);
  if (exponent == 31) return mantissa == 0 ? sign * INFINITY : NAN;
  return sign * std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
}

void encode(float value, core::DType dtype, std::uint8_t* bytes) {
  switch (dtype) {
    case core::DType::kFloat32:
      std::memcpy(bytes, &value, 4);
      return;
    case core::DType::kBFloat16: {
      const std::uint16_t bits = float_to_bf16(value);
      std::memcpy(bytes, &bits, 2);
      return;
    }
    case core::DType::kFloat16: {
      const std::uint16_t bits = float_to_fp16(value);
      std::memcpy(bytes, &bits, 2);
      return;
    }
  }
}

float decode(const std::uint8_t* bytes, core::DType dtype) {
  if (dtype == core::DType::kFloat32) {
    float value = 0;
    std::memcpy(&value, bytes, 4);
    return value;
  }
  std::uint16_t bits = 0;
  std::memcpy(&bits, bytes, 2);
  return dtype == core::DType::kBFloat16 ? bf16_to_float(bits) : fp16_to_float(bits);
}

}  // namespace hybridshard::reference
