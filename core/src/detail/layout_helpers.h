// Shared by the train and inference layouts: finding full tensors by (layer, kind) and building local tensors.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::core::detail {

// The full tensors of a spec, found by layer and kind in constant time.
class HfIndex {
 public:
  explicit HfIndex(const ModelSpec& spec) : tensors_(spec.hf_tensors()) {
    by_layer_.assign(static_cast<std::size_t>(std::max<std::int64_t>(spec.num_hidden_layers, 0)), {});
    for (auto& kinds : by_layer_) kinds.fill(-1);
    for (const HfTensor& tensor : tensors_) {
      if (tensor.kind == HfKind::kFinalNorm) final_norm_ = tensor.id;
      // Experts: the kind's slot holds expert 0; expert e's tensors follow at 3 * e (gate, up, down per expert).
      if (tensor.layer >= 0 && tensor.expert <= 0) {
        by_layer_[static_cast<std::size_t>(tensor.layer)][static_cast<std::size_t>(tensor.kind)] = tensor.id;
      }
    }
  }

  const HfTensor& embedding() const { return tensors_.front(); }
  const HfTensor& final_norm() const { return tensors_[static_cast<std::size_t>(final_norm_)]; }
  const HfTensor* lm_head() const { return tensors_.back().kind == HfKind::kLmHead ? &tensors_.back() : nullptr; }

  const HfTensor& layer_tensor(int layer, HfKind kind) const {
    const int id = by_layer_.at(static_cast<std::size_t>(layer))[static_cast<std::size_t>(kind)];
    HS_CHECK(id >= 0, "model has no tensor of kind " + std::to_string(static_cast<int>(kind)) + " in layer " +
                          std::to_string(layer));
    return tensors_[static_cast<std::size_t>(id)];
  }

  // kExpertGate / kExpertUp / kExpertDown of expert `expert` in `layer`.
  const HfTensor& expert_tensor(int layer, HfKind kind, std::int64_t expert) const {
    const HfTensor& first = layer_tensor(layer, kind);
    const HfTensor& tensor = tensors_.at(static_cast<std::size_t>(first.id + 3 * expert));
    HS_CHECK(tensor.kind == kind && tensor.layer == layer && tensor.expert == expert,
             "model has no expert " + std::to_string(expert) + " in layer " + std::to_string(layer));
    return tensor;
  }

 private:
  std::vector<HfTensor> tensors_;
  std::vector<std::array<int, kNumHfKinds>> by_layer_;
  int final_norm_ = 0;
};

inline LocalTensor make_tensor(std::string name, std::int64_t rows, std::int64_t cols, bool is_1d) {
  LocalTensor tensor;
  tensor.name = std::move(name);
  tensor.rows = rows;
  tensor.cols = cols;
  tensor.shape = is_1d ? std::vector<std::int64_t>{rows} : std::vector<std::int64_t>{rows, cols};
  return tensor;
}

inline Block make_block(const HfTensor& hf, std::int64_t hf_row, std::int64_t hf_col, std::int64_t local_row,
                        std::int64_t local_col, std::int64_t rows, std::int64_t cols) {
  return Block{hf.id, hf_row, hf_col, local_row, local_col, rows, cols};
}

// A whole 2-D tensor, replicated on every rank (routers, the shared expert's gate).
inline LocalTensor whole_matrix(std::string name, const HfTensor& hf) {
  LocalTensor tensor = make_tensor(std::move(name), hf.rows, hf.cols, false);
  tensor.blocks.push_back(make_block(hf, 0, 0, 0, 0, hf.rows, hf.cols));
  return tensor;
}

// Shard `rank` of `ranks` of a SwiGLU MLP as Megatron-Core and vLLM both split it: `fused_name` holds the
// column-parallel [gate rows; up rows] of the shard (linear_fc1 / gate_up_proj), `down_name` the row-parallel down
// projection's columns (linear_fc2 / down_proj).
inline void append_swiglu_shard(BufferLayout& buffer, std::string fused_name, std::string down_name,
                                const HfTensor& gate, const HfTensor& up, const HfTensor& down, std::int64_t ranks,
                                std::int64_t rank) {
  const std::int64_t width = gate.rows / ranks;
  const std::int64_t hidden = gate.cols;
  LocalTensor fused = make_tensor(std::move(fused_name), 2 * width, hidden, false);
  fused.blocks.push_back(make_block(gate, rank * width, 0, 0, 0, width, hidden));
  fused.blocks.push_back(make_block(up, rank * width, 0, width, 0, width, hidden));
  append_tensor(buffer, std::move(fused));
  LocalTensor projection = make_tensor(std::move(down_name), down.rows, width, false);
  projection.blocks.push_back(make_block(down, 0, rank * width, 0, 0, down.rows, width));
  append_tensor(buffer, std::move(projection));
}

// A whole 1-D tensor (norms).
inline LocalTensor whole_vector(std::string name, const HfTensor& hf) {
  LocalTensor tensor = make_tensor(std::move(name), hf.rows, 1, true);
  tensor.blocks.push_back(make_block(hf, 0, 0, 0, 0, hf.rows, 1));
  return tensor;
}

// Vocabulary-parallel shard `tp_rank` of a [vocab, hidden] tensor padded to `padded_vocab` rows.
inline LocalTensor vocab_shard(std::string name, const HfTensor& hf, std::int64_t padded_vocab, int tp, int tp_rank) {
  const std::int64_t rows_per_rank = padded_vocab / tp;
  const std::int64_t first = rows_per_rank * tp_rank;
  LocalTensor tensor = make_tensor(std::move(name), rows_per_rank, hf.cols, false);
  const std::int64_t real_rows = std::clamp<std::int64_t>(hf.rows - first, 0, rows_per_rank);
  if (real_rows > 0) tensor.blocks.push_back(make_block(hf, first, 0, 0, 0, real_rows, hf.cols));
  return tensor;
}

// Layouts are only built from a usable spec and layout; anything else is a ConfigError naming every problem.
inline void throw_if_unusable(const ModelSpec& spec, std::vector<std::string> layout_problems, const char* what) {
  std::vector<std::string> problems = problem_messages(spec.validate());
  for (std::string& problem : layout_problems) problems.push_back(std::move(problem));
  if (problems.empty()) return;
  std::string message = std::string("cannot build the ") + what + " layout:";
  for (const std::string& problem : problems) message += "\n  - " + problem;
  HS_THROW(ConfigError, message);
}

}  // namespace hybridshard::core::detail
