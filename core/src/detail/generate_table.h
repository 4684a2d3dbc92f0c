// The blocks of a BufferLayout flattened into one table, the form both the CPU device and the generate kernel walk:
// entry i writes weight_value(hf_tensor, hf_row + r, hf_col + c) to element first_element + r * row_elements + c.
#pragma once

#include <cstdint>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/dtype.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core::detail {

struct GenerateEntry {
  int hf_tensor = 0;
  std::int64_t hf_row = 0;
  std::int64_t hf_col = 0;
  std::int64_t first_element = 0;  // element index from the buffer's base
  std::int64_t row_elements = 0;   // the local tensor's columns
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

// Checks that every tensor and block lies inside the buffer, then lists the blocks.
inline std::vector<GenerateEntry> make_generate_table(const BufferLayout& layout) {
  const auto element_bytes = static_cast<std::int64_t>(dtype_size(layout.dtype));
  std::vector<GenerateEntry> table;
  for (const LocalTensor& tensor : layout.tensors) {
    if (tensor.offset_bytes % element_bytes != 0 || tensor.offset_bytes < 0 ||
        tensor.offset_bytes + tensor.numel() * element_bytes > layout.bytes) {
      HS_THROW(Error, "generate: tensor '" + tensor.name + "' of buffer '" + layout.name + "' at offset " +
                          std::to_string(tensor.offset_bytes) + " does not fit its " + std::to_string(layout.bytes) +
                          " bytes");
    }
    for (const Block& block : tensor.blocks) {
      if (block.local_row < 0 || block.local_col < 0 || block.rows < 0 || block.cols < 0 ||
          block.local_row + block.rows > tensor.rows || block.local_col + block.cols > tensor.cols) {
        HS_THROW(Error, "generate: a block of tensor '" + tensor.name + "' (local rows " +
                            std::to_string(block.local_row) + "+" + std::to_string(block.rows) + ", cols " +
                            std::to_string(block.local_col) + "+" + std::to_string(block.cols) + ") lies outside its " +
                            std::to_string(tensor.rows) + "x" + std::to_string(tensor.cols) + " shape");
      }
      if (block.rows == 0 || block.cols == 0) continue;
      GenerateEntry entry;
      entry.hf_tensor = block.hf_tensor;
      entry.hf_row = block.hf_row;
      entry.hf_col = block.hf_col;
      entry.first_element = tensor.offset_bytes / element_bytes + block.local_row * tensor.cols + block.local_col;
      entry.row_elements = tensor.cols;
      entry.rows = block.rows;
      entry.cols = block.cols;
      table.push_back(entry);
    }
  }
  return table;
}

inline int dtype_code(DType dtype) {
  switch (dtype) {
    case DType::kBFloat16:
      return 0;
    case DType::kFloat16:
      return 1;
    case DType::kFloat32:
      return 2;
  }
  return 0;
}

}  // namespace hybridshard::core::detail
