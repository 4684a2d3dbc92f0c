#include "rank_program.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/launch/rank_events.h"
#include "hybridshard/service/rank/phase_events.h"
#include "hybridshard/service/rank/phase_schedule.h"
#include "hybridshard/service/rank/rank_setup.h"
#include "hybridshard/service/rank/rank_workloads.h"

namespace hybridshard::service {
namespace {

// Fault injection for the reliability tests: HYBRIDSHARD_FAULT="RANK:PHASE:ACTION[:ITERATION]" makes rank RANK
// kill itself (ACTION kill), stop itself (stop: SIGSTOP, as a hung process) or throw (error) when PHASE begins
// (in ITERATION, default the first). Off unless the variable is set.
void maybe_inject_fault(int rank, int iteration, const std::string& phase) {
  const char* spec = std::getenv("HYBRIDSHARD_FAULT");
  if (spec == nullptr || *spec == '\0') return;
  std::vector<std::string> parts;
  std::string part;
  for (const char* c = spec;; ++c) {
    if (*c == ':' || *c == '\0') {
      parts.push_back(part);
      part.clear();
      if (*c == '\0') break;
    } else {
      part.push_back(*c);
    }
  }
  if (parts.size() < 3) return;
  const int fault_iteration = parts.size() > 3 ? std::atoi(parts[3].c_str()) : (phase == "init" ? -1 : 0);
  if (std::atoi(parts[0].c_str()) != rank || parts[1] != phase || fault_iteration != iteration) return;
  std::cerr << "[rank " << rank << "] injecting fault '" << parts[2] << "' at " << phase << std::endl;
  if (parts[2] == "kill") ::raise(SIGKILL);
  if (parts[2] == "stop") ::raise(SIGSTOP);
  if (parts[2] == "error") HS_THROW(core::Error, "injected fault in phase " + phase);
}

// Whether every rank stops after `iteration`. Ranks that read the launcher's "stop" key on their own could disagree
// (the key set between two ranks' reads), and a rank that went on would wait for the others in a collective until it
// timed out: rank 0 decides for the iteration and the others read its decision (waiting up to the store's timeout).
bool stop_agreed(core::Store& store, int rank, int iteration) {
  const std::string key = "stop_after/" + std::to_string(iteration);
  if (rank == 0) store.set(key, store.check({"stop"}) ? "1" : "0");
  return store.get(key) == "1";
}

}  // namespace

int run_rank(const JobConfig& job, const RankEnvironment& environment, std::ostream& log) {
  const int rank = environment.rank;
  core::set_error_rank(rank);
  if (environment.world_size != job.runtime.world_size) {
    HS_THROW(core::ConfigError, "the launcher started " + std::to_string(environment.world_size) +
                                    " ranks but runtime.world_size is " + std::to_string(job.runtime.world_size));
  }

  // Events first, so that everything after is reported.
  const std::unique_ptr<StreamEventSink> event_sink = open_rank_events(environment, job, log);
  StreamEventSink& events = *event_sink;

  const std::function<void(int, std::string_view)> inject_fault = [rank](int iteration, std::string_view phase) {
    maybe_inject_fault(rank, iteration, std::string(phase));
  };

  // Setup: the plan is checked against the device before any peer is contacted; the weights load as phase "init".
  RankSetupHooks setup_hooks;
  setup_hooks.device_open = [&](core::Device& device) {
    require_plan_fits(job, rank, environment.host, device);
    events.send(rank_up_event(rank, environment.host, static_cast<long>(::getpid()), device.description(),
                              core::wall_time_now()));
  };
  setup_hooks.around_weights = [&](const std::function<void()>& load) {
    PhaseScope phase(events, rank, -1, "init", inject_fault);
    load();
  };
  RankSetupOptions setup_options = rank_setup_options(job, rank, environment.local_rank, store_address_of(environment));
  setup_options.events = &events;
  RankSetup setup(setup_options, setup_hooks);
  RankWorkloads work(job, setup, &events, log);

  ScheduleHooks schedule_hooks;
  schedule_hooks.iteration_begin = [&](int iteration) { events.set_iteration(iteration); };
  schedule_hooks.phase_begin = inject_fault;
  schedule_hooks.stop_after = [&](int iteration) { return stop_agreed(setup.store(), rank, iteration); };
  const ScheduleResult result = run_phase_schedule(setup, work, schedule_options(job, rank), events, schedule_hooks);
  if (result.stopped) {
    log << "[rank " << rank << "] stopping after iteration " << result.iterations_done << " as the launcher asked\n";
    return 130;
  }
  return 0;
}

}  // namespace hybridshard::service
