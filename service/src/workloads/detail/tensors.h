// ATen views of flat buffers (no copies) and the full Hugging Face tensors a buffer's blocks describe.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "hybridshard/core/buffer_layout.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/model_spec.h"

namespace hybridshard::service::workloads::detail {

at::ScalarType scalar_type(core::DType dtype);

// The options of tensors that live where `buffer` lives now (CUDA device memory, or host memory).
at::TensorOptions buffer_options(const core::FlatBuffer& buffer, const core::Device& device);

// The whole buffer as a 1-D tensor of its dtype (bytes / element size elements). Throws Error when not allocated.
at::Tensor flat_view(core::FlatBuffer& buffer, const core::Device& device);

// One local tensor of a flat view: [rows, cols] (`two_d`) or the framework's shape.
at::Tensor tensor_view(const at::Tensor& flat, const core::LocalTensor& tensor, bool two_d = true);

// The full Hugging Face tensors a buffer holds, put together from its blocks.
class HfAssembler {
 public:
  HfAssembler(const core::ModelSpec& spec, const core::BufferLayout& layout);

  const std::vector<core::HfTensor>& hf_tensors() const { return hf_tensors_; }
  // The id of the Hugging Face tensor of `kind` in `layer` (-1 for model-level tensors), of expert `expert` for the
  // expert kinds; -1 when there is none.
  int find(core::HfKind kind, int layer = -1, int expert = -1) const;

  // Full tensor `hf_id` as [rows, cols] (or [rows] when 1-D) in `dtype`, on flat's device. Throws Error when the
  // buffer's blocks do not cover it.
  at::Tensor assemble(const at::Tensor& flat, int hf_id, at::ScalarType dtype) const;

 private:
  struct Source {
    std::size_t tensor = 0;
    core::Block block;
  };
  const core::BufferLayout& layout_;
  std::vector<core::HfTensor> hf_tensors_;
  std::vector<std::vector<Source>> sources_;                // by hf id
  std::map<std::tuple<int, int, int>, int> by_kind_layer_;  // (kind, layer, expert) -> id
};

}  // namespace hybridshard::service::workloads::detail
