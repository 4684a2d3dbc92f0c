#include "hybridshard/core/buffer_layout.h"

#include <utility>

#include "hybridshard/core/error.h"

namespace hybridshard::core {

void append_tensor(BufferLayout& layout, LocalTensor tensor) {
  HS_CHECK(tensor.rows >= 0 && tensor.cols >= 0,
           "tensor " + tensor.name + " of buffer " + layout.name + " has a negative shape");
  const std::int64_t offset = (layout.bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
  tensor.offset_bytes = offset;
  layout.bytes = offset + tensor.numel() * static_cast<std::int64_t>(dtype_size(layout.dtype));
  layout.tensors.push_back(std::move(tensor));
}

}  // namespace hybridshard::core
