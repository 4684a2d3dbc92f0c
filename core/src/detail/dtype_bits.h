// Writing weight_value() into buffers of any dtype, shared by the CPU device and the CUDA kernels (host and device),
// so that both write the same bytes. The conversions themselves are hybridshard/core/dtype_bits.h.
#pragma once

#include <cstdint>

#include "hybridshard/core/dtype_bits.h"
#include "hybridshard/core/weight_generator.h"

namespace hybridshard::core::detail {

// Writes weight_value(...) as element `index` of an array of `element_bytes`-byte elements of `dtype_code`
// (0 bf16, 1 fp16, 2 fp32: DType's values).
HS_HOST_DEVICE inline void store_weight(void* base, std::int64_t index, int dtype_code, float value) {
  if (dtype_code == 2) {
    static_cast<std::uint32_t*>(base)[index] = float_bits(value);
  } else if (dtype_code == 1) {
    static_cast<std::uint16_t*>(base)[index] = float_to_fp16_bits(value);
  } else {
    static_cast<std::uint16_t*>(base)[index] = float_to_bf16_bits(value);
  }
}

}  // namespace hybridshard::core::detail
