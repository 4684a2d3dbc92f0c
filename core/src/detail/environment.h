// Knobs read from the environment (measuring knobs of the CUDA device and the NCCL communicator).
#pragma once

#include <cstdint>

namespace hybridshard::core::detail {

// A count from the environment variable `name` (bytes, blocks, streams, 0/1), `fallback` when it is unset or empty;
// throws ConfigError naming the variable when it is not a whole number from `least` to `most`.
std::int64_t count_from_environment(const char* name, std::int64_t fallback, std::int64_t least,
                                    std::int64_t most = std::int64_t{1} << 40);

}  // namespace hybridshard::core::detail
