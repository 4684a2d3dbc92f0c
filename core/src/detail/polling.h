// How a thread that polls for something (an NCCL operation, a host meeting) passes the time between two checks.
#pragma once

#include <chrono>
#include <thread>

namespace hybridshard::core::detail {

// Yields while the wait is younger than `yield_for` (a sleep lasts the kernel's timer slack, ~50 us, beyond what it
// asks, too long for a wait that ends in microseconds), then sleeps 20 us a time.
inline void pause_between_checks(std::chrono::steady_clock::time_point now,
                                 std::chrono::steady_clock::time_point started,
                                 std::chrono::steady_clock::duration yield_for) {
  if (now - started < yield_for) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace hybridshard::core::detail
