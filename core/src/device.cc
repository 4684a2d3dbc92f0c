// What every device shares: the names of the release policies, applying one after an exit, and count_mismatches'
// argument checks.
#include "hybridshard/core/device.h"

#include <string>

#include "hybridshard/core/error.h"

namespace hybridshard::core {

std::string_view release_on_exit_name(ReleaseOnExit release) {
  return release == ReleaseOnExit::kDriver ? "driver" : "cache";
}

std::optional<ReleaseOnExit> parse_release_on_exit(std::string_view name) {
  if (name == "driver") return ReleaseOnExit::kDriver;
  if (name == "cache") return ReleaseOnExit::kCache;
  return std::nullopt;
}

std::int64_t Device::count_mismatches(const void* actual, const void* expected, std::int64_t bytes, int element_bytes) {
  if (element_bytes != 1 && element_bytes != 2 && element_bytes != 4) {
    HS_THROW(Error, "count_mismatches: element size " + std::to_string(element_bytes) + " is not 1, 2 or 4");
  }
  if (bytes < 0 || bytes % element_bytes != 0) {
    HS_THROW(Error, "count_mismatches: " + std::to_string(bytes) + " bytes is not a whole number of " +
                        std::to_string(element_bytes) + "-byte elements");
  }
  return count_mismatching_elements(actual, expected, bytes, element_bytes);
}

void release_after_exit(Device& device, ReleaseOnExit release) {
  if (release != ReleaseOnExit::kDriver) return;
  device.synchronize();
  device.empty_cache(Residency::kGpu);
}

}  // namespace hybridshard::core
