// What every device shares: the names of the release policies and applying one after an exit.
#include "hybridshard/core/device.h"

namespace hybridshard::core {

std::string_view release_on_exit_name(ReleaseOnExit release) {
  return release == ReleaseOnExit::kDriver ? "driver" : "cache";
}

std::optional<ReleaseOnExit> parse_release_on_exit(std::string_view name) {
  if (name == "driver") return ReleaseOnExit::kDriver;
  if (name == "cache") return ReleaseOnExit::kCache;
  return std::nullopt;
}

void release_after_exit(Device& device, ReleaseOnExit release) {
  if (release != ReleaseOnExit::kDriver) return;
  device.synchronize();
  device.empty_cache(Residency::kGpu);
}

}  // namespace hybridshard::core
