#include "hybridshard/service/workloads/reference_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <utility>

#include "detail/device_sync.h"
#include "detail/tensors.h"
#include "detail/transformer.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/train_layout.h"

namespace hybridshard::service::workloads {
namespace {

std::string num(std::int64_t value) { return std::to_string(value); }

std::string real(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g", value);
  return text;
}

void require_resident(const core::FlatBuffer& buffer, std::string_view operation) {
  if (buffer.residency() != core::Residency::kGpu) {
    HS_THROW(core::Error, std::string(operation) + ": buffer " + buffer.name() + " is resident on " +
                              std::string(core::residency_name(buffer.residency())) + ", not on the device");
  }
}

}  // namespace

core::BufferLayout full_model_layout(const core::ModelSpec& spec) {
  core::TrainLayout single;  // tp = pp = vpp = dp = 1
  std::vector<core::BufferLayout> buffers = core::train_param_buffers(spec, single, 0, 0);
  HS_CHECK(buffers.size() == 1, "the full model must be one buffer");
  return std::move(buffers.front());
}

void copy_from_full(const core::ModelSpec& spec, const core::BufferLayout& full_layout, core::FlatBuffer& full,
                    const core::BufferLayout& target_layout, core::FlatBuffer& target, core::Device& device) {
  require_resident(full, "copy_from_full");
  require_resident(target, "copy_from_full");
  HS_CHECK(full.bytes() == full_layout.bytes && target.bytes() == target_layout.bytes,
           "copy_from_full: buffers " + full.name() + " and " + target.name() + " do not match their layouts");
  HS_CHECK(full_layout.dtype == target_layout.dtype,
           "copy_from_full: the full model is " + std::string(core::dtype_name(full_layout.dtype)) + ", " +
               target_layout.name + " is " + std::string(core::dtype_name(target_layout.dtype)));
  detail::synchronize_all(device);
  const at::Tensor full_flat = detail::flat_view(full, device);
  at::Tensor target_flat = detail::flat_view(target, device);
  target_flat.zero_();
  const detail::HfAssembler source(spec, full_layout);
  std::map<int, std::vector<std::pair<std::size_t, core::Block>>> wanted;  // hf id -> (target tensor, block)
  for (std::size_t t = 0; t < target_layout.tensors.size(); ++t) {
    for (const core::Block& block : target_layout.tensors[t].blocks) wanted[block.hf_tensor].push_back({t, block});
  }
  for (const auto& [hf_id, blocks] : wanted) {
    const core::HfTensor& hf = source.hf_tensors().at(static_cast<std::size_t>(hf_id));
    const at::Tensor whole = source.assemble(full_flat, hf_id, full_flat.scalar_type()).view({hf.rows, hf.cols});
    for (const auto& [t, b] : blocks) {
      detail::tensor_view(target_flat, target_layout.tensors[t])
          .narrow(0, b.local_row, b.rows)
          .narrow(1, b.local_col, b.cols)
          .copy_(whole.narrow(0, b.hf_row, b.rows).narrow(1, b.hf_col, b.cols));
    }
  }
  detail::synchronize_all(device);
}

struct ReferenceModel::Impl {
  core::ModelSpec spec;
  core::Device& device;
  core::EventSink* events;
  int rank;
  core::BufferLayout layout;
  std::unique_ptr<core::FlatBuffer> params;
  std::unique_ptr<TrainStep> train;
  std::unique_ptr<detail::HfAssembler> assembler;

  Impl(const core::ModelSpec& s, core::Device& d, core::EventSink* e, int r)
      : spec(s), device(d), events(e), rank(r), layout(full_model_layout(s)) {}

  at::Tensor weight(const at::Tensor& flat, core::HfKind kind, int layer, int expert = -1) const {
    const int id = assembler->find(kind, layer, expert);
    HS_CHECK(id >= 0, "the model has no tensor of kind " + num(static_cast<int>(kind)) + " in layer " + num(layer));
    return assembler->assemble(flat, id, at::kFloat);
  }

  // A sparse layer's router and every expert, stacked as one shard holding all of them, and its shared expert.
  void experts(const at::Tensor& flat, int layer, detail::LayerWeights& w) const {
    w.router = weight(flat, core::HfKind::kRouter, layer);
    std::vector<at::Tensor> w13;
    std::vector<at::Tensor> w2;
    for (int e = 0; e < spec.num_experts; ++e) {
      w13.push_back(at::cat(
          {weight(flat, core::HfKind::kExpertGate, layer, e), weight(flat, core::HfKind::kExpertUp, layer, e)}, 0));
      w2.push_back(weight(flat, core::HfKind::kExpertDown, layer, e));
    }
    w.w13 = at::stack(w13);
    w.w2 = at::stack(w2);
    w.first_expert = 0;
    w.top_k = spec.num_experts_per_tok;
    w.norm_topk_prob = spec.norm_topk_prob;
    if (spec.has_shared_expert()) {
      w.shared_gate = weight(flat, core::HfKind::kSharedGateProj, layer);
      w.shared_up = weight(flat, core::HfKind::kSharedUpProj, layer);
      w.shared_down = weight(flat, core::HfKind::kSharedDownProj, layer);
      w.shared_expert_gate = weight(flat, core::HfKind::kSharedExpertGate, layer);
    }
  }

  // Teacher-forced logits over the real vocabulary for ids [B, S]: [B, S, vocab], fp32.
  at::Tensor forward(const at::Tensor& ids) const {
    require_resident(*params, "ReferenceModel");
    detail::synchronize_all(device);
    const at::Tensor flat = detail::flat_view(*params, device);
    const std::int64_t batch = ids.size(0);
    const std::int64_t length = ids.size(1);
    const std::int64_t d = spec.resolved_head_dim();
    const at::Tensor embedding = weight(flat, core::HfKind::kEmbedding, -1);
    at::Tensor hidden = embedding.index_select(0, ids.reshape({-1})).view({batch, length, spec.hidden_size});
    const detail::Rotary rope = detail::rotary(0, length, d, spec.rope_theta, hidden.options());
    const detail::AttentionShape shape{spec.num_attention_heads, spec.num_key_value_heads, d};
    const detail::AllReduce single_rank = [](at::Tensor&) {};
    for (int layer = 0; layer < spec.num_hidden_layers; ++layer) {
      detail::LayerWeights w;
      w.input_norm = weight(flat, core::HfKind::kInputNorm, layer);
      w.q = weight(flat, core::HfKind::kQ, layer);
      w.k = weight(flat, core::HfKind::kK, layer);
      w.v = weight(flat, core::HfKind::kV, layer);
      if (spec.has_qkv_bias()) {
        w.q_bias = weight(flat, core::HfKind::kQBias, layer);
        w.k_bias = weight(flat, core::HfKind::kKBias, layer);
        w.v_bias = weight(flat, core::HfKind::kVBias, layer);
      }
      if (spec.has_qk_norm()) {
        w.q_norm = weight(flat, core::HfKind::kQNorm, layer);
        w.k_norm = weight(flat, core::HfKind::kKNorm, layer);
      }
      w.o = weight(flat, core::HfKind::kO, layer);
      w.post_norm = weight(flat, core::HfKind::kPostAttnNorm, layer);
      if (spec.layer_has_experts(layer)) {
        experts(flat, layer, w);
      } else {
        w.gate = weight(flat, core::HfKind::kGate, layer);
        w.up = weight(flat, core::HfKind::kUp, layer);
        w.down = weight(flat, core::HfKind::kDown, layer);
      }
      hidden =
          detail::decoder_layer(hidden, w, shape, rope, 0, at::Tensor(), at::Tensor(), single_rank, spec.rms_norm_eps);
    }
    hidden = detail::rms_norm(hidden, weight(flat, core::HfKind::kFinalNorm, -1), spec.rms_norm_eps);
    const at::Tensor head = spec.tie_word_embeddings ? embedding : weight(flat, core::HfKind::kLmHead, -1);
    return at::matmul(hidden, head.t());
  }

  at::Tensor ids_tensor(const std::vector<std::int64_t>& ids, std::int64_t rows, std::int64_t cols) const {
    const at::TensorOptions options = detail::buffer_options(*params, device);
    return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({rows, cols}).to(options.device());
  }

  void check_tokens(const core::TokenBatch& batch, std::string_view what) const {
    HS_CHECK(
        batch.rows > 0 && batch.cols > 0 && static_cast<std::int64_t>(batch.tokens.size()) == batch.rows * batch.cols,
        "ReferenceModel: " + std::string(what) + " must be rows x cols tokens with rows, cols > 0");
    for (const std::int32_t token : batch.tokens) {
      HS_CHECK(token >= 0 && token < spec.vocab_size, "ReferenceModel: " + std::string(what) + " token " + num(token) +
                                                          " is outside the vocabulary [0, " + num(spec.vocab_size) +
                                                          ")");
    }
  }
};

ReferenceModel::ReferenceModel(const core::ModelSpec& spec, core::Device& device, core::EventSink* events, int rank,
                               AdamOptions adam, std::uint32_t seed_version, const FullModelLoader& loader)
    : impl_(std::make_unique<Impl>(spec, device, events, rank)) {
  const std::vector<std::string> problems = core::problem_messages(spec.validate());
  if (!problems.empty()) {
    std::string message = "ReferenceModel: the model spec is unusable:";
    for (const std::string& problem : problems) message += " " + problem + ";";
    HS_THROW(core::ConfigError, message);
  }
  core::BufferLayout named = impl_->layout;
  named.name = "reference.params";
  impl_->params = std::make_unique<core::FlatBuffer>(named, core::BufferKind::kParams, device, events, rank);
  impl_->params->move_to(core::Residency::kGpu, /*keep_contents=*/false);
  device.fill_zero(impl_->params->data(), impl_->params->bytes());
  if (loader) {
    detail::synchronize_all(device);
    loader(impl_->layout, *impl_->params);
  } else {
    device.generate(impl_->layout, seed_version, impl_->params->data());
  }
  detail::synchronize_all(device);
  impl_->assembler = std::make_unique<detail::HfAssembler>(spec, impl_->layout);
  impl_->train = std::make_unique<TrainStep>(std::vector<core::BufferLayout>{impl_->layout},
                                             std::vector<core::FlatBuffer*>{impl_->params.get()}, device, events, rank,
                                             adam, "reference");
}

ReferenceModel::~ReferenceModel() = default;

const core::BufferLayout& ReferenceModel::layout() const { return impl_->layout; }
core::FlatBuffer& ReferenceModel::params() { return *impl_->params; }
TrainStep& ReferenceModel::train_step() { return *impl_->train; }

void ReferenceModel::step(int iteration) {
  impl_->params->set_iteration(iteration);
  impl_->train->step(iteration);
}

core::TokenBatch ReferenceModel::generate(const core::TokenBatch& prompts, std::int64_t max_new_tokens) {
  impl_->check_tokens(prompts, "prompts");
  HS_CHECK(max_new_tokens > 0, "ReferenceModel::generate: max_new_tokens must be positive");
  const std::int64_t batch = prompts.rows;
  std::vector<std::vector<std::int64_t>> rows(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    rows[static_cast<std::size_t>(b)].assign(prompts.tokens.begin() + b * prompts.cols,
                                             prompts.tokens.begin() + (b + 1) * prompts.cols);
  }
  core::TokenBatch out;
  out.rows = batch;
  out.cols = max_new_tokens;
  out.tokens.assign(static_cast<std::size_t>(batch * max_new_tokens), 0);
  for (std::int64_t step = 0; step < max_new_tokens; ++step) {
    const std::int64_t length = prompts.cols + step;
    std::vector<std::int64_t> ids;
    for (const auto& row : rows) ids.insert(ids.end(), row.begin(), row.end());
    const at::Tensor logits = impl_->forward(impl_->ids_tensor(ids, batch, length));
    const at::Tensor next = logits.select(1, length - 1).argmax(-1).to(at::kCPU).contiguous();
    for (std::int64_t b = 0; b < batch; ++b) {
      const std::int64_t token = next[b].item<std::int64_t>();
      rows[static_cast<std::size_t>(b)].push_back(token);
      out.tokens[static_cast<std::size_t>(b * max_new_tokens + step)] = static_cast<std::int32_t>(token);
    }
  }
  return out;
}

CheckResult ReferenceModel::check(const core::TokenBatch& prompts, const core::TokenBatch& generated,
                                  const std::vector<float>& token_logits, const CheckOptions& options) {
  impl_->check_tokens(prompts, "prompts");
  impl_->check_tokens(generated, "generated tokens");
  HS_CHECK(generated.rows == prompts.rows, "ReferenceModel::check: " + num(generated.rows) +
                                               " rows of generated tokens for " + num(prompts.rows) + " prompts");
  const bool with_logits = !token_logits.empty();
  HS_CHECK(!with_logits || static_cast<std::int64_t>(token_logits.size()) == generated.rows * generated.cols,
           "ReferenceModel::check: " + num(static_cast<std::int64_t>(token_logits.size())) + " logits for " +
               num(generated.rows * generated.cols) + " generated tokens");
  const std::int64_t batch = prompts.rows;
  const std::int64_t prompt_length = prompts.cols;
  const std::int64_t new_tokens = generated.cols;
  std::vector<std::int64_t> ids;
  ids.reserve(static_cast<std::size_t>(batch * (prompt_length + new_tokens)));
  for (std::int64_t b = 0; b < batch; ++b) {
    ids.insert(ids.end(), prompts.tokens.begin() + b * prompt_length, prompts.tokens.begin() + (b + 1) * prompt_length);
    ids.insert(ids.end(), generated.tokens.begin() + b * new_tokens, generated.tokens.begin() + (b + 1) * new_tokens);
  }
  // Position p's logits predict token p + 1: generated token j comes from position prompt_length - 1 + j.
  const at::Tensor all = impl_->forward(impl_->ids_tensor(ids, batch, prompt_length + new_tokens));
  const at::Tensor logits = all.narrow(1, prompt_length - 1, new_tokens).to(at::kCPU).contiguous();
  const auto [top_values, top_indices] = logits.topk(std::min<std::int64_t>(2, impl_->spec.vocab_size), -1);
  const at::Tensor top_v = top_values.contiguous();
  const at::Tensor top_i = top_indices.contiguous();
  const std::int64_t vocab = logits.size(2);
  const std::int64_t k = top_v.size(2);
  const float* logit_data = logits.data_ptr<float>();
  const float* top_data = top_v.data_ptr<float>();
  const std::int64_t* index_data = top_i.data_ptr<std::int64_t>();

  CheckResult result;
  result.tokens_checked = batch * new_tokens;
  result.min_margin = std::numeric_limits<double>::infinity();
  std::string first_wrong;
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t j = 0; j < new_tokens; ++j) {
      const std::int64_t position = b * new_tokens + j;
      const std::int32_t token = generated.tokens[static_cast<std::size_t>(position)];
      const float best = top_data[position * k];
      const float second = k > 1 ? top_data[position * k + 1] : -std::numeric_limits<float>::infinity();
      const std::int64_t best_token = index_data[position * k];
      const float token_logit = logit_data[position * vocab + token];
      result.min_margin = std::min(result.min_margin, static_cast<double>(best - second));
      double diff = 0;
      if (with_logits) {
        diff = std::fabs(static_cast<double>(token_logits[static_cast<std::size_t>(position)]) - token_logit);
        if (!(diff <= result.max_logit_diff)) result.max_logit_diff = diff;  // NaN counts as the largest
      }
      const bool argmax_ok = token == best_token || best - token_logit <= options.margin_epsilon;
      const bool logit_ok = !with_logits || diff <= options.logit_tolerance;
      if (argmax_ok && logit_ok) {
        if (token != best_token) ++result.near_ties;
        continue;
      }
      ++result.tokens_wrong;
      if (first_wrong.empty()) {
        first_wrong = "row " + num(b) + ", new token " + num(j) + ": generated " + num(token) + " (reference logit " +
                      real(token_logit) +
                      (with_logits ? ", rollout logit " + real(token_logits[static_cast<std::size_t>(position)])
                                   : std::string()) +
                      "), reference argmax " + num(best_token) + " (logit " + real(best) + ", margin to the second " +
                      real(best - second) + ")";
      }
    }
  }
  if (result.tokens_checked == 0) result.min_margin = 0;
  result.ok = result.tokens_wrong == 0;
  const std::string logit_text =
      with_logits ? "max |logit diff| " + real(result.max_logit_diff) : std::string("rollout logits not given");
  if (result.ok) {
    result.detail = num(batch) + " x " + num(new_tokens) + " generated tokens agree with the single-rank reference (" +
                    logit_text + ", near-ties " + num(result.near_ties) + ", smallest top-2 margin " +
                    real(result.min_margin) + ")";
  } else {
    result.detail =
        num(result.tokens_wrong) + " of " + num(result.tokens_checked) +
        " generated tokens disagree with the single-rank reference (stale or wrong weights?); first: " + first_wrong +
        "; " + logit_text;
  }
  if (impl_->events != nullptr) {
    core::Event event;
    event.type = core::EventType::kCheck;
    event.time = core::wall_time_now();
    event.rank = impl_->rank;
    event.iteration = iteration_;
    event.phase = "rollout";
    event.operation = "rollout_reference";
    event.ok = result.ok;
    event.detail = result.detail;
    impl_->events->on_event(event);
  }
  return result;
}

}  // namespace hybridshard::service::workloads
