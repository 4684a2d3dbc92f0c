#include "hybridshard/core/dtype.h"

namespace hybridshard::core {

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat16:
      return "fp16";
    case DType::kFloat32:
      return "fp32";
  }
  return "unknown";
}

std::optional<DType> parse_dtype(std::string_view name) {
  if (name == "bf16" || name == "bfloat16") return DType::kBFloat16;
  if (name == "fp16" || name == "float16" || name == "half") return DType::kFloat16;
  if (name == "fp32" || name == "float32" || name == "float") return DType::kFloat32;
  return std::nullopt;
}

}  // namespace hybridshard::core
