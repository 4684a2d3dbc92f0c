// Bounds every reader of job events shares (the service's fold and the dashboard's): a header without dependencies so
// that the dashboard and the fuzz build can include it.
#pragma once

namespace hybridshard::service {

// A job's world_size must lie in [1, kMaxWorldSize]: state is kept for every rank index.
inline constexpr int kMaxWorldSize = 1 << 16;

}  // namespace hybridshard::service
