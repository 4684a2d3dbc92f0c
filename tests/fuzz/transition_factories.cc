// The fuzz build links core's transition.cc for its names (strategy_name, strategy_applies, ...) but not the
// executors, which need libtorch and communicators that no reader uses. These two definitions only satisfy the linker;
// a fuzz target that reached them would have left the readers, so they fail loudly.
#include "hybridshard/core/error.h"
#include "transition/transition_internal.h"

namespace hybridshard::core::transition_detail {

std::unique_ptr<Transition> make_hybridshard_transition(RankPlan, Communicator&, Device&, EventSink*,
                                                        TransitionOptions) {
  HS_THROW(Error, "the fuzz build has no transition executors");
}

std::unique_ptr<Transition> make_seed_transition(RankPlan, Communicator&, Device&, EventSink*) {
  HS_THROW(Error, "the fuzz build has no transition executors");
}

}  // namespace hybridshard::core::transition_detail
