// Ranks as threads: every rank of `world_size` runs `body(rank, store)` with a store address on 127.0.0.1 whose
// server the caller's thread hosts; the first rank's exception (by rank order) is rethrown after all have joined.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service::testing {

inline void run_ranks_as_threads(int world_size, const std::string& prefix,
                                 const std::function<void(int rank, const StoreAddress& store)>& body) {
  StoreAddress address;
  address.port = 0;
  address.host_it = true;
  address.prefix = prefix;
  const std::unique_ptr<core::Store> server = open_store(address, -1, std::chrono::seconds(30));
  address.port = server->port();
  address.host_it = false;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world_size));
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        body(rank, address);
      } catch (...) {
        errors[static_cast<std::size_t>(rank)] = std::current_exception();
      }
    });
  }
  for (std::thread& thread : ranks) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

}  // namespace hybridshard::service::testing
