#include "hybridshard/core/communicator.h"

namespace hybridshard::core {

std::string_view backend_name(Backend backend) {
  switch (backend) {
    case Backend::kGloo:
      return "gloo";
    case Backend::kNccl:
      return "nccl";
    case Backend::kLoopback:
      return "loopback";
  }
  return "unknown";
}

}  // namespace hybridshard::core
