// The sparse layers' experts (detail::experts_forward) against a direct per-token evaluation of Hugging Face's
// Qwen3MoeSparseMoeBlock written here with plain loops in double: softmax over the router logits, the top-k experts,
// weights renormalised when norm_topk_prob, each chosen expert's SwiGLU output weighted and summed. Also: shards of
// the experts as vLLM splits them (tensor-parallel: parts of every expert; expert-parallel: whole experts) add up to
// the whole layer. Qwen2-MoE's shared expert (detail::shared_expert_forward) against Qwen2MoeSparseMoeBlock's
// sigmoid(shared_expert_gate . x) * SwiGLU(x) per token, and its tensor-parallel parts adding up.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "detail/transformer.h"

namespace hybridshard::service::workloads {
namespace {

constexpr std::int64_t kTokens = 7;
constexpr std::int64_t kHidden = 12;
constexpr std::int64_t kExperts = 6;
constexpr std::int64_t kWidth = 8;
constexpr std::int64_t kSharedWidth = 10;

detail::LayerWeights random_layer(std::int64_t top_k, bool normalize) {
  at::manual_seed(3);
  detail::LayerWeights w;
  w.router = at::randn({kExperts, kHidden});
  w.w13 = at::randn({kExperts, 2 * kWidth, kHidden}) * 0.3;
  w.w2 = at::randn({kExperts, kHidden, kWidth}) * 0.3;
  w.top_k = top_k;
  w.norm_topk_prob = normalize;
  return w;
}

// The same layer with Qwen2-MoE's shared expert and its gate.
detail::LayerWeights random_layer_with_shared_expert(std::int64_t top_k, bool normalize) {
  detail::LayerWeights w = random_layer(top_k, normalize);
  w.shared_gate = at::randn({kSharedWidth, kHidden}) * 0.3;
  w.shared_up = at::randn({kSharedWidth, kHidden}) * 0.3;
  w.shared_down = at::randn({kHidden, kSharedWidth}) * 0.3;
  w.shared_expert_gate = at::randn({1, kHidden});
  return w;
}

// x [kTokens, kHidden] in double, row-major.
std::vector<double> doubles(const at::Tensor& t) {
  const at::Tensor host = t.to(at::kDouble).contiguous();
  return {host.data_ptr<double>(), host.data_ptr<double>() + host.numel()};
}

// Qwen2MoeSparseMoeBlock's shared part, token by token, in double: sigmoid(g . x) * down(silu(gate x) * up x).
std::vector<double> direct_shared(const at::Tensor& x, const detail::LayerWeights& w) {
  const std::vector<double> xs = doubles(x);
  const std::vector<double> g = doubles(w.shared_gate);
  const std::vector<double> u = doubles(w.shared_up);
  const std::vector<double> d = doubles(w.shared_down);
  const std::vector<double> gate = doubles(w.shared_expert_gate);
  std::vector<double> out(static_cast<std::size_t>(kTokens * kHidden), 0.0);
  for (std::int64_t n = 0; n < kTokens; ++n) {
    double logit = 0;
    for (std::int64_t i = 0; i < kHidden; ++i) logit += gate[i] * xs[n * kHidden + i];
    const double scale = 1.0 / (1.0 + std::exp(-logit));
    std::vector<double> act(kSharedWidth);
    for (std::int64_t f = 0; f < kSharedWidth; ++f) {
      double a = 0;
      double b = 0;
      for (std::int64_t i = 0; i < kHidden; ++i) {
        a += g[f * kHidden + i] * xs[n * kHidden + i];
        b += u[f * kHidden + i] * xs[n * kHidden + i];
      }
      act[f] = a / (1.0 + std::exp(-a)) * b;
    }
    for (std::int64_t i = 0; i < kHidden; ++i) {
      double y = 0;
      for (std::int64_t f = 0; f < kSharedWidth; ++f) y += d[i * kSharedWidth + f] * act[f];
      out[n * kHidden + i] = scale * y;
    }
  }
  return out;
}

// Hugging Face's block, token by token, in double.
std::vector<double> direct(const at::Tensor& x, const detail::LayerWeights& w) {
  const at::Tensor xc = x.to(at::kDouble).contiguous();
  const at::Tensor router = w.router.to(at::kDouble).contiguous();
  const at::Tensor w13 = w.w13.to(at::kDouble).contiguous();
  const at::Tensor w2 = w.w2.to(at::kDouble).contiguous();
  const double* xs = xc.data_ptr<double>();
  const double* r = router.data_ptr<double>();
  const double* a = w13.data_ptr<double>();
  const double* b = w2.data_ptr<double>();
  std::vector<double> out(static_cast<std::size_t>(kTokens * kHidden), 0.0);
  for (std::int64_t n = 0; n < kTokens; ++n) {
    std::vector<double> logits(kExperts, 0.0);
    for (std::int64_t e = 0; e < kExperts; ++e) {
      for (std::int64_t i = 0; i < kHidden; ++i) logits[e] += r[e * kHidden + i] * xs[n * kHidden + i];
    }
    const double top = *std::max_element(logits.begin(), logits.end());
    std::vector<double> probs(kExperts);
    double total = 0;
    for (std::int64_t e = 0; e < kExperts; ++e) total += probs[e] = std::exp(logits[e] - top);
    for (double& p : probs) p /= total;
    std::vector<std::int64_t> order(kExperts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t i, std::int64_t j) { return probs[i] > probs[j]; });
    order.resize(static_cast<std::size_t>(w.top_k));
    double chosen_total = 0;
    for (const std::int64_t e : order) chosen_total += probs[e];
    for (const std::int64_t e : order) {
      const double weight = w.norm_topk_prob ? probs[e] / chosen_total : probs[e];
      std::vector<double> act(kWidth);
      for (std::int64_t f = 0; f < kWidth; ++f) {
        double gate = 0;
        double up = 0;
        for (std::int64_t i = 0; i < kHidden; ++i) {
          gate += a[(e * 2 * kWidth + f) * kHidden + i] * xs[n * kHidden + i];
          up += a[(e * 2 * kWidth + kWidth + f) * kHidden + i] * xs[n * kHidden + i];
        }
        act[f] = gate / (1.0 + std::exp(-gate)) * up;
      }
      for (std::int64_t i = 0; i < kHidden; ++i) {
        double y = 0;
        for (std::int64_t f = 0; f < kWidth; ++f) y += b[(e * kHidden + i) * kWidth + f] * act[f];
        out[n * kHidden + i] += weight * y;
      }
    }
  }
  return out;
}

void expect_close(const at::Tensor& actual, const std::vector<double>& expected) {
  const at::Tensor host = actual.to(at::kDouble).contiguous();
  ASSERT_EQ(host.numel(), static_cast<std::int64_t>(expected.size()));
  const double* values = host.data_ptr<double>();
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(values[i], expected[i], 1e-4) << "element " << i;
}

TEST(ExpertsTest, top_k_routing_matches_hugging_faces_block_token_by_token) {
  for (const auto& [top_k, normalize] : std::vector<std::pair<std::int64_t, bool>>{{2, true}, {3, false}, {1, true}}) {
    SCOPED_TRACE("top_k " + std::to_string(top_k) + (normalize ? " renormalised" : " raw"));
    const detail::LayerWeights w = random_layer(top_k, normalize);
    const at::Tensor x = at::randn({kTokens, kHidden});
    expect_close(detail::experts_forward(x, w), direct(x, w));
  }
}

TEST(ExpertsTest, vllm_shards_of_the_experts_add_up_to_the_whole_layer) {
  const detail::LayerWeights w = random_layer(2, true);
  const at::Tensor x = at::randn({kTokens, kHidden});
  const std::vector<double> whole = direct(x, w);
  // Tensor-parallel experts, 2 shards: [gate rows; up rows] and down columns of half the width each.
  at::Tensor tp_sum = at::zeros({kTokens, kHidden});
  for (std::int64_t shard = 0; shard < 2; ++shard) {
    detail::LayerWeights part = w;
    const std::int64_t f = kWidth / 2;
    part.w13 = at::cat({w.w13.narrow(1, shard * f, f), w.w13.narrow(1, kWidth + shard * f, f)}, 1);
    part.w2 = w.w2.narrow(2, shard * f, f);
    tp_sum += detail::experts_forward(x, part);
  }
  expect_close(tp_sum, whole);
  // Expert parallel over 4 ranks as vLLM places 6 experts: 2, 2, 1, 1 whole experts.
  at::Tensor ep_sum = at::zeros({kTokens, kHidden});
  const std::vector<std::pair<std::int64_t, std::int64_t>> placement = {{0, 2}, {2, 2}, {4, 1}, {5, 1}};
  for (const auto& [first, count] : placement) {
    detail::LayerWeights part = w;
    part.w13 = w.w13.narrow(0, first, count);
    part.w2 = w.w2.narrow(0, first, count);
    part.first_expert = first;
    ep_sum += detail::experts_forward(x, part);
  }
  expect_close(ep_sum, whole);
}

TEST(ExpertsTest, shared_expert_matches_qwen2_moes_block_token_by_token_and_its_shards_add_up) {
  const detail::LayerWeights w = random_layer_with_shared_expert(4, false);  // Qwen2-MoE: top 4, not renormalised
  const at::Tensor x = at::randn({kTokens, kHidden});
  const std::vector<double> shared = direct_shared(x, w);
  expect_close(detail::shared_expert_forward(x, w), shared);
  // The whole sparse block: routed experts plus the gated shared expert.
  std::vector<double> block = direct(x, w);
  for (std::size_t i = 0; i < block.size(); ++i) block[i] += shared[i];
  expect_close(detail::experts_forward(x, w) + detail::shared_expert_forward(x, w), block);
  // vLLM's Qwen2MoeMLP over tp' 2: rows of gate and up, columns of down; the gate whole on both shards.
  at::Tensor sum = at::zeros({kTokens, kHidden});
  for (std::int64_t shard = 0; shard < 2; ++shard) {
    detail::LayerWeights part = w;
    const std::int64_t f = kSharedWidth / 2;
    part.shared_gate = w.shared_gate.narrow(0, shard * f, f);
    part.shared_up = w.shared_up.narrow(0, shard * f, f);
    part.shared_down = w.shared_down.narrow(1, shard * f, f);
    sum += detail::shared_expert_forward(x, part);
  }
  expect_close(sum, shared);
}

}  // namespace
}  // namespace hybridshard::service::workloads
