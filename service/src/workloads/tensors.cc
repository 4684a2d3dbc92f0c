#include "detail/tensors.h"

#include "detail/device_sync.h"
#include "hybridshard/core/error.h"

namespace hybridshard::service::workloads::detail {

at::ScalarType scalar_type(core::DType dtype) {
  switch (dtype) {
    case core::DType::kBFloat16:
      return at::kBFloat16;
    case core::DType::kFloat16:
      return at::kHalf;
    case core::DType::kFloat32:
      return at::kFloat;
  }
  HS_THROW(core::Error, "unknown dtype " + std::to_string(static_cast<int>(dtype)));
}

at::TensorOptions buffer_options(const core::FlatBuffer& buffer, const core::Device& device) {
  at::TensorOptions options = at::TensorOptions().dtype(scalar_type(buffer.info().dtype));
  if (device.type() == core::DeviceType::kCuda && buffer.residency() == core::Residency::kGpu) {
    return options.device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device_of(buffer.data()))));
  }
  return options.device(at::kCPU);
}

at::Tensor flat_view(core::FlatBuffer& buffer, const core::Device& device) {
  if (buffer.residency() == core::Residency::kNone || buffer.data() == nullptr) {
    HS_THROW(core::Error, "buffer " + buffer.name() + " is not allocated (residency none)");
  }
  const auto element = static_cast<std::int64_t>(core::dtype_size(buffer.info().dtype));
  HS_CHECK(buffer.bytes() % element == 0, "buffer " + buffer.name() + " holds " + std::to_string(buffer.bytes()) +
                                              " bytes, not a whole number of elements");
  return at::from_blob(buffer.data(), {buffer.bytes() / element}, buffer_options(buffer, device));
}

at::Tensor tensor_view(const at::Tensor& flat, const core::LocalTensor& tensor, bool two_d) {
  const std::int64_t element = static_cast<std::int64_t>(flat.element_size());
  HS_CHECK(tensor.offset_bytes % element == 0, "tensor " + tensor.name + " is not aligned to its element size");
  const std::int64_t start = tensor.offset_bytes / element;
  HS_CHECK(start + tensor.numel() <= flat.numel(), "tensor " + tensor.name + " reaches past the end of its buffer (" +
                                                       std::to_string(flat.numel()) + " elements)");
  at::Tensor view = flat.narrow(0, start, tensor.numel());
  if (two_d) return view.view({tensor.rows, tensor.cols});
  return view.view(tensor.shape);
}

HfAssembler::HfAssembler(const core::ModelSpec& spec, const core::BufferLayout& layout)
    : layout_(layout), hf_tensors_(spec.hf_tensors()), sources_(hf_tensors_.size()) {
  for (const core::HfTensor& hf : hf_tensors_) by_kind_layer_[{static_cast<int>(hf.kind), hf.layer, hf.expert}] = hf.id;
  for (std::size_t t = 0; t < layout.tensors.size(); ++t) {
    for (const core::Block& block : layout.tensors[t].blocks) {
      HS_CHECK(block.hf_tensor >= 0 && static_cast<std::size_t>(block.hf_tensor) < hf_tensors_.size(),
               "tensor " + layout.tensors[t].name + " of " + layout.name + " names Hugging Face tensor " +
                   std::to_string(block.hf_tensor) + ", which the model does not have");
      sources_[static_cast<std::size_t>(block.hf_tensor)].push_back({t, block});
    }
  }
}

int HfAssembler::find(core::HfKind kind, int layer, int expert) const {
  const auto it = by_kind_layer_.find({static_cast<int>(kind), layer, expert});
  return it == by_kind_layer_.end() ? -1 : it->second;
}

at::Tensor HfAssembler::assemble(const at::Tensor& flat, int hf_id, at::ScalarType dtype) const {
  const core::HfTensor& hf = hf_tensors_.at(static_cast<std::size_t>(hf_id));
  at::Tensor full = at::empty({hf.rows, hf.cols}, flat.options().dtype(dtype));
  // Every element is written exactly once when the blocks tile the tensor; coverage is counted per element so
  // that a duplicate block (tied copies) cannot hide a gap.
  at::Tensor covered = at::zeros({hf.rows, hf.cols}, flat.options().dtype(at::kBool));
  for (const Source& source : sources_.at(static_cast<std::size_t>(hf_id))) {
    const core::Block& b = source.block;
    const at::Tensor local = tensor_view(flat, layout_.tensors[source.tensor]);
    full.narrow(0, b.hf_row, b.rows)
        .narrow(1, b.hf_col, b.cols)
        .copy_(local.narrow(0, b.local_row, b.rows).narrow(1, b.local_col, b.cols));
    covered.narrow(0, b.hf_row, b.rows).narrow(1, b.hf_col, b.cols).fill_(true);
  }
  const std::int64_t num_covered = covered.sum().item<std::int64_t>();
  if (num_covered != hf.numel()) {
    HS_THROW(core::Error, "buffer " + layout_.name + " holds " + std::to_string(num_covered) + " of the " +
                              std::to_string(hf.numel()) + " elements of " + hf.name);
  }
  if (hf.is_1d) return full.view({hf.rows});
  return full;
}

}  // namespace hybridshard::service::workloads::detail
