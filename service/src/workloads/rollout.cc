#include "hybridshard/service/workloads/rollout.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <map>
#include <string>
#include <utility>

#include "detail/device_sync.h"
#include "detail/tensors.h"
#include "detail/transformer.h"
#include "hybridshard/core/error.h"

namespace hybridshard::service::workloads {
namespace {

// lm_head rows cast to fp32 at a time (bounds the temporary on large vocabularies).
constexpr std::int64_t kLmHeadRowsPerChunk = 16384;

std::string num(std::int64_t value) { return std::to_string(value); }

}  // namespace

std::int64_t kv_cache_bytes_per_token(const core::ModelSpec& spec, const core::InferenceLayout& layout) {
  return spec.num_hidden_layers * 2 * layout.kv_heads_per_rank(spec) * spec.resolved_head_dim() *
         static_cast<std::int64_t>(sizeof(float));
}

struct Rollout::Impl {
  core::ModelSpec spec;
  core::InferenceLayout layout;
  int tp_rank = 0;
  core::Communicator* group = nullptr;
  core::Device& device;
  core::BufferLayout params_layout;
  std::map<std::string, std::size_t> tensor_index;
  std::int64_t bytes_per_token = 0;
  std::unique_ptr<core::FlatBuffer> kv_cache;

  Impl(const core::ModelSpec& s, const core::InferenceLayout& l, int r, core::Communicator* g, core::Device& d)
      : spec(s), layout(l), tp_rank(r), group(g), device(d) {}

  const core::LocalTensor& tensor(const std::string& name) const {
    const auto it = tensor_index.find(name);
    if (it == tensor_index.end()) HS_THROW(core::Error, "inference shard has no tensor " + name);
    return params_layout.tensors[it->second];
  }

  at::Tensor view(const at::Tensor& flat, const std::string& name) const {
    return detail::tensor_view(flat, tensor(name), /*two_d=*/false);  // the framework's shape: [h] for norms
  }

  void all_reduce(at::Tensor& tensor) const {
    if (group == nullptr || group->size() == 1) return;
    HS_CHECK(tensor.is_contiguous() && tensor.scalar_type() == at::kFloat, "all-reduce needs a contiguous fp32 tensor");
    detail::synchronize_all(device);
    group->all_reduce_sum(tensor.data_ptr<float>(), static_cast<std::size_t>(tensor.numel()));
  }

  // Layer `layer`'s weights from the vLLM shard, cast to fp32 (one layer at a time).
  detail::LayerWeights layer_weights(const at::Tensor& flat, std::int64_t layer) const {
    const std::string prefix = "model.layers." + num(layer) + ".";
    const std::int64_t d = spec.resolved_head_dim();
    const std::int64_t q_rows = spec.num_attention_heads / layout.tp * d;
    const std::int64_t kv_rows = layout.kv_heads_per_rank(spec) * d;
    const std::int64_t ffn = spec.intermediate_size / layout.tp;
    detail::LayerWeights w;
    w.input_norm = view(flat, prefix + "input_layernorm.weight").to(at::kFloat);
    const at::Tensor qkv = view(flat, prefix + "self_attn.qkv_proj.weight").to(at::kFloat);
    HS_CHECK(qkv.size(0) == q_rows + 2 * kv_rows, "qkv_proj of layer " + num(layer) + " has " + num(qkv.size(0)) +
                                                      " rows, expected " + num(q_rows + 2 * kv_rows));
    w.q = qkv.narrow(0, 0, q_rows);
    w.k = qkv.narrow(0, q_rows, kv_rows);
    w.v = qkv.narrow(0, q_rows + kv_rows, kv_rows);
    if (spec.has_qkv_bias()) {
      const at::Tensor bias = view(flat, prefix + "self_attn.qkv_proj.bias").to(at::kFloat);
      w.q_bias = bias.narrow(0, 0, q_rows);
      w.k_bias = bias.narrow(0, q_rows, kv_rows);
      w.v_bias = bias.narrow(0, q_rows + kv_rows, kv_rows);
    }
    if (spec.has_qk_norm()) {
      w.q_norm = view(flat, prefix + "self_attn.q_norm.weight").to(at::kFloat);
      w.k_norm = view(flat, prefix + "self_attn.k_norm.weight").to(at::kFloat);
    }
    w.o = view(flat, prefix + "self_attn.o_proj.weight").to(at::kFloat);
    w.post_norm = view(flat, prefix + "post_attention_layernorm.weight").to(at::kFloat);
    if (spec.layer_has_experts(layer)) {
      // vLLM's FusedMoE parameters: w13 [El, 2f, h], w2 [El, h, f]; the router is replicated.
      const std::string block =
          prefix + (spec.architecture == core::Architecture::kMixtral ? "block_sparse_moe." : "mlp.");
      w.router = view(flat, block + "gate.weight").to(at::kFloat);
      w.w13 = view(flat, block + "experts.w13_weight").to(at::kFloat);
      w.w2 = view(flat, block + "experts.w2_weight").to(at::kFloat);
      w.first_expert = layout.experts_of(spec, tp_rank).first;
      w.top_k = spec.num_experts_per_tok;
      w.norm_topk_prob = spec.norm_topk_prob;
      if (spec.has_shared_expert()) {  // Qwen2MoeMLP over tp' (also with expert parallelism); the gate whole
        const std::int64_t shared = spec.shared_expert_intermediate_size / layout.tp;
        const at::Tensor shared_gate_up = view(flat, block + "shared_expert.gate_up_proj.weight").to(at::kFloat);
        w.shared_gate = shared_gate_up.narrow(0, 0, shared);
        w.shared_up = shared_gate_up.narrow(0, shared, shared);
        w.shared_down = view(flat, block + "shared_expert.down_proj.weight").to(at::kFloat);
        w.shared_expert_gate = view(flat, block + "shared_expert_gate.weight").to(at::kFloat);
      }
      return w;
    }
    const at::Tensor gate_up = view(flat, prefix + "mlp.gate_up_proj.weight").to(at::kFloat);
    w.gate = gate_up.narrow(0, 0, ffn);
    w.up = gate_up.narrow(0, ffn, ffn);
    w.down = view(flat, prefix + "mlp.down_proj.weight").to(at::kFloat);
    return w;
  }

  // Vocabulary-parallel embedding: rows outside this shard read as zero, the all-reduce fills them in.
  at::Tensor embed(const at::Tensor& flat, const at::Tensor& ids) const {
    const at::Tensor table = view(flat, "model.embed_tokens.weight");
    const std::int64_t rows = table.size(0);
    const std::int64_t first = tp_rank * rows;
    const at::Tensor local = ids - first;
    const at::Tensor inside = (local >= 0).logical_and(local < rows);
    const at::Tensor index = local.masked_fill(inside.logical_not(), 0).reshape({-1});
    at::Tensor hidden = table.index_select(0, index).to(at::kFloat).view({ids.size(0), ids.size(1), table.size(1)});
    hidden = (hidden * inside.unsqueeze(-1).to(at::kFloat)).contiguous();
    all_reduce(hidden);
    return hidden;
  }

  // Greedy choice from the vocabulary-parallel lm_head for hidden [B, h] (after the final norm): every rank gets the
  // same (token, logit) per row: the largest logit over all shards, the lowest vocabulary index on a tie.
  std::vector<std::pair<std::int32_t, float>> choose(const at::Tensor& flat, const at::Tensor& hidden) const {
    const at::Tensor head = view(flat, spec.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
    const std::int64_t rows = head.size(0);
    const std::int64_t first = tp_rank * rows;
    const std::int64_t batch = hidden.size(0);
    std::vector<at::Tensor> parts;
    for (std::int64_t row = 0; row < rows; row += kLmHeadRowsPerChunk) {
      const std::int64_t count = std::min(kLmHeadRowsPerChunk, rows - row);
      parts.push_back(at::matmul(hidden, head.narrow(0, row, count).to(at::kFloat).t()));
    }
    at::Tensor logits = at::cat(parts, 1);  // [B, rows]
    // vLLM's padding rows are no tokens.
    const std::int64_t real = std::clamp<std::int64_t>(spec.vocab_size - first, 0, rows);
    if (real < rows) logits.narrow(1, real, rows - real).fill_(-std::numeric_limits<float>::infinity());
    const auto [values, indices] = logits.max(1);
    at::Tensor mine = at::stack({values, (indices + first).to(at::kFloat)}, 1).contiguous();  // [B, 2]
    at::Tensor all = mine;
    if (group != nullptr && group->size() > 1) {
      all = at::empty({group->size(), batch, 2}, mine.options());
      detail::synchronize_all(device);
      group->all_gather(mine.data_ptr(), all.data_ptr(), static_cast<std::size_t>(mine.numel()) * sizeof(float));
    }
    const at::Tensor host = all.reshape({-1, batch, 2}).to(at::kCPU).contiguous();
    const float* data = host.data_ptr<float>();
    std::vector<std::pair<std::int32_t, float>> chosen(static_cast<std::size_t>(batch), {-1, 0.0f});
    for (std::int64_t shard = 0; shard < host.size(0); ++shard) {
      for (std::int64_t b = 0; b < batch; ++b) {
        const float value = data[(shard * batch + b) * 2];
        const auto token = static_cast<std::int32_t>(data[(shard * batch + b) * 2 + 1]);
        auto& best = chosen[static_cast<std::size_t>(b)];
        if (value == -std::numeric_limits<float>::infinity()) continue;
        if (best.first < 0 || value > best.second || (value == best.second && token < best.first))
          best = {token, value};
      }
    }
    for (std::int64_t b = 0; b < batch; ++b) {
      HS_CHECK(chosen[static_cast<std::size_t>(b)].first >= 0,
               "no finite logit for row " + num(b) + " (non-finite activations?)");
    }
    return chosen;
  }
};

Rollout::Rollout(const core::ModelSpec& spec, const core::InferenceLayout& layout, int tp_rank,
                 core::Communicator* tp_group, core::Device& device, core::EventSink* events, int rank,
                 std::int64_t kv_cache_bytes)
    : impl_(std::make_unique<Impl>(spec, layout, tp_rank, tp_group, device)) {
  const std::vector<std::string> problems = core::problem_messages(layout.validate(spec));
  if (!problems.empty()) {
    std::string message = "Rollout: the inference layout does not fit the model:";
    for (const std::string& problem : problems) message += " " + problem + ";";
    HS_THROW(core::ConfigError, message);
  }
  if (tp_group != nullptr) {
    HS_CHECK(tp_group->size() == layout.tp, "Rollout: the rollout group has " + num(tp_group->size()) +
                                                " ranks, the inference layout's tensor_model_parallel_size is " +
                                                num(layout.tp));
  } else {
    HS_CHECK(layout.tp == 1, "Rollout: tensor_model_parallel_size " + num(layout.tp) + " needs a rollout group");
  }
  HS_CHECK(spec.vocab_size < (std::int64_t{1} << 24), "Rollout: vocabularies above 2^24 tokens are not supported");
  impl_->params_layout = core::inference_param_buffer(spec, layout, tp_rank);
  for (std::size_t i = 0; i < impl_->params_layout.tensors.size(); ++i) {
    impl_->tensor_index[impl_->params_layout.tensors[i].name] = i;
  }
  impl_->bytes_per_token = kv_cache_bytes_per_token(spec, layout);
  if (kv_cache_bytes < impl_->bytes_per_token) {
    HS_THROW(core::ConfigError, "Rollout: a KV cache of " + num(kv_cache_bytes) + " bytes holds no token; one token " +
                                    "position takes " + num(impl_->bytes_per_token) + " bytes on each rank (" +
                                    num(spec.num_hidden_layers) + " layers x keys and values x " +
                                    num(layout.kv_heads_per_rank(spec)) + " kv heads x head_dim " +
                                    num(spec.resolved_head_dim()) + " x fp32)");
  }
  const std::int64_t tokens = kv_cache_bytes / impl_->bytes_per_token;
  core::FlatBufferInfo info;
  info.name = "rollout.kv_cache";
  info.kind = core::BufferKind::kKvCache;
  info.dtype = core::DType::kFloat32;
  info.bytes = tokens * impl_->bytes_per_token;
  info.shape = num(tokens) + " token positions x " + num(spec.num_hidden_layers) + " layers x k,v x " +
               num(layout.kv_heads_per_rank(spec)) + " heads x " + num(spec.resolved_head_dim());
  impl_->kv_cache = std::make_unique<core::FlatBuffer>(info, device, events, rank);
}

Rollout::~Rollout() = default;

core::FlatBuffer& Rollout::kv_cache() { return *impl_->kv_cache; }

std::int64_t Rollout::kv_cache_token_capacity() const { return impl_->kv_cache->bytes() / impl_->bytes_per_token; }

void Rollout::release_kv_cache() {
  detail::synchronize_all(impl_->device);
  impl_->kv_cache->release();
}

void Rollout::set_iteration(int iteration) { impl_->kv_cache->set_iteration(iteration); }

core::TokenBatch Rollout::generate(core::FlatBuffer& params, const core::TokenBatch& prompts,
                                   std::int64_t max_new_tokens) {
  Impl& s = *impl_;
  const core::ModelSpec& spec = s.spec;
  const std::int64_t batch = prompts.rows;
  const std::int64_t prompt_length = prompts.cols;
  HS_CHECK(batch > 0 && prompt_length > 0 && static_cast<std::int64_t>(prompts.tokens.size()) == batch * prompt_length,
           "Rollout::generate: prompts must be rows x cols tokens with rows, cols > 0 (got " + num(batch) + " x " +
               num(prompt_length) + ", " + num(static_cast<std::int64_t>(prompts.tokens.size())) + " tokens)");
  HS_CHECK(max_new_tokens > 0, "Rollout::generate: max_new_tokens must be positive, got " + num(max_new_tokens));
  for (std::size_t i = 0; i < prompts.tokens.size(); ++i) {
    const std::int32_t token = prompts.tokens[i];
    HS_CHECK(token >= 0 && token < spec.vocab_size, "Rollout::generate: prompt token " + num(token) + " at row " +
                                                        num(static_cast<std::int64_t>(i) / prompt_length) +
                                                        " is outside the vocabulary [0, " + num(spec.vocab_size) + ")");
  }
  const std::int64_t sequence = prompt_length + max_new_tokens;
  HS_CHECK(sequence <= spec.max_position_embeddings,
           "Rollout::generate: " + num(prompt_length) + " prompt + " + num(max_new_tokens) +
               " new tokens exceed max_position_embeddings " + num(spec.max_position_embeddings));
  if (batch * sequence > kv_cache_token_capacity()) {
    HS_THROW(core::OutOfMemoryError,
             "Rollout::generate: the batch needs " + num(batch) + " rows x " + num(sequence) + " positions = " +
                 num(batch * sequence) + " KV cache token positions (" + num(batch * sequence * s.bytes_per_token) +
                 " bytes), the KV cache holds " + num(kv_cache_token_capacity()) + " (" + num(s.kv_cache->bytes()) +
                 " bytes); lower the batch or max_new_tokens, or raise gpu_memory_utilization / kv_cache_bytes");
  }
  HS_CHECK(params.bytes() == s.params_layout.bytes && params.info().dtype == s.params_layout.dtype,
           "Rollout::generate: buffer " + params.name() + " (" + num(params.bytes()) +
               " bytes) is not inference shard " + num(s.tp_rank) + " (" + num(s.params_layout.bytes) + " bytes, " +
               std::string(core::dtype_name(s.params_layout.dtype)) + ")");
  HS_CHECK(params.info().kind == core::BufferKind::kInferenceParams,
           "Rollout::generate: buffer " + params.name() + " holds " +
               std::string(core::buffer_kind_name(params.info().kind)) + ", not an inference shard (inference_params)");
  HS_CHECK(params.residency() == core::Residency::kGpu,
           "Rollout::generate: buffer " + params.name() + " is resident on " +
               std::string(core::residency_name(params.residency())) + ", not on the device");
  if (s.kv_cache->residency() != core::Residency::kGpu) {
    s.kv_cache->move_to(core::Residency::kGpu, /*keep_contents=*/false);
  }
  detail::synchronize_all(s.device);

  const at::Tensor flat = detail::flat_view(params, s.device);
  const at::TensorOptions fp32 = flat.options().dtype(at::kFloat);
  const std::int64_t layers = spec.num_hidden_layers;
  const std::int64_t kv_heads = s.layout.kv_heads_per_rank(spec);
  const std::int64_t d = spec.resolved_head_dim();
  const detail::AttentionShape shape{spec.num_attention_heads / s.layout.tp, kv_heads, d};
  // [layers, 2, B, sequence, kv_heads, d] at the front of the cache.
  const at::Tensor cache = detail::flat_view(*s.kv_cache, s.device)
                               .narrow(0, 0, layers * 2 * batch * sequence * kv_heads * d)
                               .view({layers, 2, batch, sequence, kv_heads, d});
  const detail::AllReduce reduce = [&s](at::Tensor& tensor) { s.all_reduce(tensor); };
  const at::Tensor final_norm = s.view(flat, "model.norm.weight").to(at::kFloat);

  std::vector<std::int64_t> prompt_ids(prompts.tokens.begin(), prompts.tokens.end());
  at::Tensor ids =
      at::tensor(prompt_ids, at::TensorOptions().dtype(at::kLong)).view({batch, prompt_length}).to(fp32.device());
  core::TokenBatch out;
  out.rows = batch;
  out.cols = max_new_tokens;
  out.tokens.assign(static_cast<std::size_t>(batch * max_new_tokens), 0);
  last_token_logits_.assign(static_cast<std::size_t>(batch * max_new_tokens), 0.0f);

  std::int64_t position = 0;
  for (std::int64_t step = 0; step < max_new_tokens; ++step) {
    // Step 0 is the prefill of the whole prompt; later steps feed the token chosen last.
    const std::int64_t length = ids.size(1);
    at::Tensor hidden = s.embed(flat, ids);
    const detail::Rotary rope = detail::rotary(position, length, d, spec.rope_theta, fp32);
    for (std::int64_t layer = 0; layer < layers; ++layer) {
      const detail::LayerWeights weights = s.layer_weights(flat, layer);
      hidden = detail::decoder_layer(hidden, weights, shape, rope, position, cache[layer][0], cache[layer][1], reduce,
                                     spec.rms_norm_eps);
    }
    position += length;
    const at::Tensor last = detail::rms_norm(hidden.select(1, length - 1), final_norm, spec.rms_norm_eps);
    const auto chosen = s.choose(flat, last);
    std::vector<std::int64_t> next(static_cast<std::size_t>(batch));
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto index = static_cast<std::size_t>(b * max_new_tokens + step);
      out.tokens[index] = chosen[static_cast<std::size_t>(b)].first;
      last_token_logits_[index] = chosen[static_cast<std::size_t>(b)].second;
      next[static_cast<std::size_t>(b)] = chosen[static_cast<std::size_t>(b)].first;
    }
    if (step + 1 < max_new_tokens) {
      ids = at::tensor(next, at::TensorOptions().dtype(at::kLong)).view({batch, 1}).to(fp32.device());
    }
  }
  detail::synchronize_all(s.device);
  return out;
}

}  // namespace hybridshard::service::workloads
