// Shared by the layout tests: build a buffer from a layout's own block description, and check its structure.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/field_problem.h"
#include "hybridshard/core/model_spec.h"
#include "hybridshard/core/weight_generator.h"
#include "reference.h"

namespace hybridshard::core::testing {

// The buffer exactly as the layout's blocks describe it: every block's elements from weight_value, the rest zero.
inline std::vector<std::uint8_t> materialize(const BufferLayout& layout, std::uint32_t version) {
  const std::size_t element = dtype_size(layout.dtype);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(layout.bytes), 0);
  for (const LocalTensor& tensor : layout.tensors) {
    for (const Block& block : tensor.blocks) {
      for (std::int64_t r = 0; r < block.rows; ++r) {
        for (std::int64_t c = 0; c < block.cols; ++c) {
          const std::int64_t index = (block.local_row + r) * tensor.cols + block.local_col + c;
          reference::encode(
              weight_value(block.hf_tensor, block.hf_row + r, block.hf_col + c, version), layout.dtype,
              &bytes[static_cast<std::size_t>(tensor.offset_bytes) + static_cast<std::size_t>(index) * element]);
        }
      }
    }
  }
  return bytes;
}

// Offsets aligned and increasing, tensors inside the buffer and apart, blocks inside their tensor and apart, shapes
// consistent with the canonical 2-D view, blocks inside their full tensor.
inline void expect_well_formed(const BufferLayout& layout, const ModelSpec& spec) {
  const auto hf = spec.hf_tensors();
  const auto element = static_cast<std::int64_t>(dtype_size(layout.dtype));
  std::int64_t end = 0;
  for (const LocalTensor& tensor : layout.tensors) {
    SCOPED_TRACE(layout.name + " " + tensor.name);
    EXPECT_EQ(tensor.offset_bytes % kTensorAlignment, 0);
    EXPECT_GE(tensor.offset_bytes, end);
    end = tensor.offset_bytes + tensor.numel() * element;
    std::int64_t shape_numel = 1;
    for (const std::int64_t s : tensor.shape) shape_numel *= s;
    EXPECT_EQ(shape_numel, tensor.numel());
    EXPECT_EQ(tensor.shape.size() == 1, tensor.cols == 1);
    std::vector<int> owner(static_cast<std::size_t>(tensor.numel()), 0);
    for (const Block& block : tensor.blocks) {
      ASSERT_GE(block.hf_tensor, 0);
      ASSERT_LT(block.hf_tensor, static_cast<int>(hf.size()));
      const HfTensor& full = hf[static_cast<std::size_t>(block.hf_tensor)];
      ASSERT_LE(block.hf_row + block.rows, full.rows);
      ASSERT_LE(block.hf_col + block.cols, full.cols);
      ASSERT_LE(block.local_row + block.rows, tensor.rows);
      ASSERT_LE(block.local_col + block.cols, tensor.cols);
      for (std::int64_t r = 0; r < block.rows; ++r) {
        for (std::int64_t c = 0; c < block.cols; ++c) {
          ++owner[static_cast<std::size_t>((block.local_row + r) * tensor.cols + block.local_col + c)];
        }
      }
    }
    EXPECT_EQ(std::count_if(owner.begin(), owner.end(), [](int n) { return n > 1; }), 0) << "blocks overlap";
  }
  EXPECT_LE(end, layout.bytes);
}

// The names and shapes, in buffer order, of the tensors whose name contains `part`.
struct TensorList {
  std::vector<std::string> names;
  std::vector<std::vector<std::int64_t>> shapes;
};
inline TensorList tensors_named(const BufferLayout& layout, const std::string& part) {
  TensorList list;
  for (const LocalTensor& tensor : layout.tensors) {
    if (tensor.name.find(part) == std::string::npos) continue;
    list.names.push_back(tensor.name);
    list.shapes.push_back(tensor.shape);
  }
  return list;
}

// Whether a problem tagged `field` says `text`.
template <typename Field>
bool mentions(const std::vector<FieldProblem<Field>>& problems, Field field, const std::string& text) {
  return std::any_of(problems.begin(), problems.end(), [&](const FieldProblem<Field>& problem) {
    return problem.field == field && problem.message.find(text) != std::string::npos;
  });
}

// Small models of every kind the layouts must handle.
inline ModelSpec small_model(Architecture architecture, std::int64_t layers, std::int64_t heads, std::int64_t kv_heads,
                             std::int64_t vocab, bool tied, DType dtype) {
  ModelSpec spec;
  spec.architecture = architecture;
  spec.num_hidden_layers = layers;
  spec.hidden_size = 48;
  spec.num_attention_heads = heads;
  spec.num_key_value_heads = kv_heads;
  spec.head_dim = 8;
  spec.intermediate_size = 96;
  spec.vocab_size = vocab;
  spec.tie_word_embeddings = tied;
  spec.dtype = dtype;
  return spec;
}

// A small qwen2_moe (q/k/v biases) with `experts` routed experts of width `expert_width`, top 2, and a shared expert of
// width `shared_width`.
inline ModelSpec small_qwen2_moe(std::int64_t layers, std::int64_t experts, std::int64_t expert_width,
                                 std::int64_t shared_width, bool tied, DType dtype) {
  ModelSpec spec = small_model(Architecture::kQwen2Moe, layers, 4, 2, 300, tied, dtype);
  spec.num_experts = experts;
  spec.num_experts_per_tok = 2;
  spec.moe_intermediate_size = expert_width;
  spec.shared_expert_intermediate_size = shared_width;
  return spec;
}

}  // namespace hybridshard::core::testing
