// Built when libtorch's c10d has no Gloo: the Gloo communicator is not available.
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {

bool gloo_available() { return false; }

std::unique_ptr<Communicator> make_gloo_communicator(Store& store, int rank, int world_size,
                                                     std::chrono::milliseconds timeout) {
  HS_THROW(Error, "gloo communicator requested (rank " + std::to_string(rank) + " of " + std::to_string(world_size) +
                      ") but hybridshard was built without c10d's ProcessGroupGloo (no gloo headers found)");
}

}  // namespace hybridshard::core
