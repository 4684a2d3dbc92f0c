#include "dlpack_tensor.h"

#include "hybridshard/core/error.h"

namespace hybridshard::python {
namespace {

// The DLManagedTensor with the arrays it points at and the lease it holds.
struct ManagedView {
  DLManagedTensor managed{};
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
  std::shared_ptr<ViewLease> lease;
  std::size_t index = 0;
};

void delete_view(DLManagedTensor* managed) {
  auto* view = static_cast<ManagedView*>(managed->manager_ctx);
  view->lease->release(view->index);
  delete view;
}

DLDataType dlpack_dtype(core::DType dtype) {
  switch (dtype) {
    case core::DType::kBFloat16:
      return {static_cast<std::uint8_t>(kDLBfloat), 16, 1};
    case core::DType::kFloat16:
      return {static_cast<std::uint8_t>(kDLFloat), 16, 1};
    case core::DType::kFloat32:
      return {static_cast<std::uint8_t>(kDLFloat), 32, 1};
  }
  return {static_cast<std::uint8_t>(kDLFloat), 32, 1};
}

}  // namespace

DLManagedTensor* to_dlpack(const TensorView& view) {
  auto owned = std::make_unique<ManagedView>();
  owned->shape = view.shape;
  owned->strides.assign(view.shape.size(), 1);
  for (std::size_t i = view.shape.size(); i-- > 1;) owned->strides[i - 1] = owned->strides[i] * view.shape[i];
  owned->lease = view.lease;
  owned->index = view.index;

  DLTensor& tensor = owned->managed.dl_tensor;
  tensor.data = view.data;
  tensor.device.device_type = view.device_type == core::DeviceType::kCuda ? kDLCUDA : kDLCPU;
  tensor.device.device_id = view.device_type == core::DeviceType::kCuda ? view.device_index : 0;
  tensor.ndim = static_cast<std::int32_t>(owned->shape.size());
  tensor.dtype = dlpack_dtype(view.dtype);
  tensor.shape = owned->shape.data();
  tensor.strides = owned->strides.data();
  tensor.byte_offset = 0;
  owned->managed.manager_ctx = owned.get();
  owned->managed.deleter = delete_view;

  view.lease->acquire(view.index);
  return &owned.release()->managed;
}

const void* dlpack_bytes(const DLTensor& tensor, const std::string& name, core::DType dtype, std::int64_t numel,
                         core::DeviceType device_type) {
  const DLDataType expected = dlpack_dtype(dtype);
  if (tensor.dtype.code != expected.code || tensor.dtype.bits != expected.bits || tensor.dtype.lanes != 1) {
    HS_THROW(core::ConfigError, "'" + name + "': not of the job's dtype " + std::string(core::dtype_name(dtype)));
  }
  const bool on_cuda = tensor.device.device_type == kDLCUDA;
  if (on_cuda != (device_type == core::DeviceType::kCuda) || (!on_cuda && tensor.device.device_type != kDLCPU)) {
    HS_THROW(core::ConfigError, "'" + name + "': not on the engine's device");
  }
  std::int64_t count = 1;
  std::int64_t stride = 1;
  bool contiguous = true;
  for (std::int32_t i = tensor.ndim; i-- > 0;) {
    count *= tensor.shape[i];
    if (tensor.strides != nullptr && tensor.shape[i] != 1 && tensor.strides[i] != stride) contiguous = false;
    stride *= tensor.shape[i];
  }
  if (count != numel || !contiguous) {
    HS_THROW(core::ConfigError, "'" + name + "': " + std::to_string(count) + " elements (" +
                                    (contiguous ? "contiguous" : "not contiguous") + "), expected " +
                                    std::to_string(numel) + " contiguous");
  }
  return static_cast<const std::uint8_t*>(tensor.data) + tensor.byte_offset;
}

}  // namespace hybridshard::python
