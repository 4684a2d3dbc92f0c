#include "hybridshard/service/files/descriptor_budget.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace hybridshard::service {

std::int64_t thread_rank_descriptors(int world_size, int rollout_tp) {
  const std::int64_t world = world_size;
  const std::int64_t group = rollout_tp > 0 ? rollout_tp : 1;
  return world * (world - 1) + world * (group - 1) + 4 * world + 64;
}

std::string ensure_descriptors(std::int64_t needed, const std::string& what) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return "";
  if (limit.rlim_cur == RLIM_INFINITY || static_cast<std::int64_t>(limit.rlim_cur) >= needed) return "";
  const bool hard_enough = limit.rlim_max == RLIM_INFINITY || static_cast<std::int64_t>(limit.rlim_max) >= needed;
  if (hard_enough) {
    rlimit raised = limit;
    raised.rlim_cur = static_cast<rlim_t>(needed);
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return "";
  }
  return what + " needs about " + std::to_string(needed) + " file descriptors but the limit is " +
         std::to_string(limit.rlim_cur) + " (hard limit " +
         (limit.rlim_max == RLIM_INFINITY ? std::string("unlimited") : std::to_string(limit.rlim_max)) +
         (hard_enough ? std::string(", raising it failed: ") + std::strerror(errno) : std::string()) +
         "); raise it (ulimit -n " + std::to_string(needed) + ", or LimitNOFILE= for a systemd service)";
}

}  // namespace hybridshard::service
