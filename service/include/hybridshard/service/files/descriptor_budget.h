// The file descriptors a process needs before it starts work that opens many (ranks as threads of one process: each
// holds a socket to every peer), checked up front against RLIMIT_NOFILE instead of failing half-way with EMFILE.
#pragma once

#include <cstdint>
#include <string>

namespace hybridshard::service {

// Descriptors `world_size` Gloo ranks as threads of one process hold: a socket for each ordered pair of the world
// group and of the rollout groups (`rollout_tp` ranks each), each rank's store connection and its server side, and a
// margin for files, listeners and the runtime.
std::int64_t thread_rank_descriptors(int world_size, int rollout_tp);

// Makes sure the process may open `needed` descriptors: raises the soft limit up to the hard one when that is enough,
// else returns what to tell the operator ("export of 64 ranks as threads of this process needs about 4600 file
// descriptors but the limit is 1024 (hard limit 1024): raise it, e.g. ulimit -n 4600"). "" when it is fine.
std::string ensure_descriptors(std::int64_t needed, const std::string& what);

}  // namespace hybridshard::service
