// Where each local tensor of a rank sits inside a flat buffer, and which part of which full Hugging Face tensor it
// holds. Both the train layout and the inference layout are described this way; the reshard plan is computed from
// these descriptions alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hybridshard/core/dtype.h"

namespace hybridshard::core {

// Tensors inside a flat buffer start at multiples of this many bytes (16-byte vector loads, CUDA alignment).
inline constexpr std::int64_t kTensorAlignment = 256;

// A rectangle shared by a local tensor and a full Hugging Face tensor: local rows [local_row, local_row + rows) and
// cols [local_col, local_col + cols) hold full-tensor rows [hf_row, ...) and cols [hf_col, ...).
struct Block {
  int hf_tensor = 0;  // HfTensor::id
  std::int64_t hf_row = 0;
  std::int64_t hf_col = 0;
  std::int64_t local_row = 0;
  std::int64_t local_col = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

// One tensor as a framework sees it (a Megatron-Core parameter, a vLLM parameter), placed in a flat buffer.
struct LocalTensor {
  std::string name;                 // "decoder.layers.0.self_attention.linear_qkv.weight" / vLLM name
  std::vector<std::int64_t> shape;  // as the framework sees it (1-D or 2-D)
  std::int64_t rows = 0;            // canonical 2-D view; a 1-D tensor has cols == 1
  std::int64_t cols = 1;
  std::int64_t offset_bytes = 0;  // from the start of the flat buffer, a multiple of kTensorAlignment
  // Where its elements come from. Rows covered by no block are padding (vocabulary padding) and hold zeros in the
  // inference layout. Blocks never overlap.
  std::vector<Block> blocks;
  std::int64_t numel() const { return rows * cols; }
};

// The contents of one flat buffer: one contiguous allocation per (stage/chunk, dtype).
struct BufferLayout {
  std::string name;  // "train.params.pp1.vpp0", "rollout.params"
  DType dtype = DType::kBFloat16;
  int pp_rank = -1;        // train buffers: the pipeline stage; -1 for inference
  int vpp_chunk = -1;      // train buffers: the virtual-pipeline chunk; -1 for inference
  std::int64_t bytes = 0;  // total, including alignment padding
  std::vector<LocalTensor> tensors;
};

// Appends `tensor` at the next aligned offset and grows `layout.bytes`.
void append_tensor(BufferLayout& layout, LocalTensor tensor);

}  // namespace hybridshard::core
