#include "hybridshard/service/launch/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/events/event_stream.h"
#include "hybridshard/service/files/private_directory.h"
#include "hybridshard/service/launch/child_process.h"
#include "hybridshard/service/launch/rank_environment.h"

namespace hybridshard::service {
namespace {

std::atomic<int> g_interrupts{0};
std::atomic<int> g_last_signal{0};

void on_interrupt(int signal_number) {
  g_last_signal.store(signal_number);
  g_interrupts.fetch_add(1);
}

// How a stop signal reads in the launcher's messages: "Ctrl-C" for SIGINT, else its name ("SIGHUP (Hangup)").
std::string stop_signal_text(int signal_number) {
  if (signal_number == SIGINT || signal_number == 0) return "Ctrl-C";
  const std::string name = signal_number == SIGHUP    ? "SIGHUP"
                           : signal_number == SIGTERM ? "SIGTERM"
                                                      : "signal " + std::to_string(signal_number);
  return name + " (" + strsignal(signal_number) + ")";
}

using Clock = std::chrono::steady_clock;

// A pause of the launcher's loop this long is the process having been stopped, not scheduling.
constexpr Clock::duration kPauseNoticed = std::chrono::seconds(2);

std::string_view backend_name(BackendChoice backend) {
  switch (backend) {
    case BackendChoice::kAuto:
      return "auto";
    case BackendChoice::kNccl:
      return "nccl";
    case BackendChoice::kGloo:
      return "gloo";
  }
  return "auto";
}

std::string mib(std::int64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return out.str();
}

// One progress line: a phase every rank has ended in one iteration.
std::string progress_line(const PhaseRound& round, int iterations, int world_size) {
  std::ostringstream line;
  if (round.iteration >= 0) {
    line << "iter " << (round.iteration + 1) << "/" << iterations << "  ";
  } else {
    line << "          ";
  }
  line << std::left << std::setw(8) << round.phase << std::right << std::fixed << std::setprecision(2) << std::setw(10)
       << round.max_seconds * 1e3 << " ms";
  if (round.phase == "enter") line << "  net " << mib(round.network_bytes / world_size) << "/rank";
  line << "  device " << mib(round.max_device_used) << " of " << mib(round.max_device_total) << " (max rank)";
  return line.str();
}

ChildProcess spawn_rank(const LaunchOptions& options, int rank, const std::string& store_file,
                        const std::string& events_address, const std::string& events_secret) {
  const JobConfig& job = options.job;
  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view item(*entry);
    static constexpr std::string_view kOwned[] = {"RANK=",
                                                  "WORLD_SIZE=",
                                                  "LOCAL_RANK=",
                                                  "MASTER_ADDR=",
                                                  "MASTER_PORT=",
                                                  "HYBRIDSHARD_EVENTS=",
                                                  "HYBRIDSHARD_EVENTS_SECRET=",
                                                  "HYBRIDSHARD_STORE_FILE=",
                                                  "LOCAL_WORLD_SIZE=",
                                                  "TORCHELASTIC_USE_AGENT_STORE=",
                                                  "HYBRIDSHARD_LAUNCHER="};
    bool owned = false;
    for (std::string_view prefix : kOwned) owned = owned || item.starts_with(prefix);
    if (!owned) environment.emplace_back(item);
  }
  environment.push_back("RANK=" + std::to_string(rank));
  environment.push_back("WORLD_SIZE=" + std::to_string(job.runtime.world_size));
  environment.push_back("LOCAL_RANK=" + std::to_string(rank));
  environment.push_back("LOCAL_WORLD_SIZE=" + std::to_string(job.runtime.world_size));
  // The ranks meet in the launcher's file store: no MASTER_ADDR / MASTER_PORT, no port (docs/reliability.md).
  environment.push_back("HYBRIDSHARD_STORE_FILE=" + store_file);
  environment.push_back("HYBRIDSHARD_EVENTS=" + events_address);
  environment.push_back("HYBRIDSHARD_EVENTS_SECRET=" + events_secret);
  environment.push_back("HYBRIDSHARD_LAUNCHER=1");

  // No job file: the rank takes the embedded default job itself (nothing written to a temporary file).
  std::vector<std::string> arguments = {options.rank_binary};
  if (!options.job_file.empty()) arguments.insert(arguments.end(), {"--job", options.job_file});
  return ChildProcess::start({options.rank_binary, arguments, environment, "rank " + std::to_string(rank)});
}

// A rank process that exited unsuccessfully, with its wait status.
struct Failure {
  int rank;
  int status;
};

// The rank processes of one job as the launcher sees them; what the ranks report lives in the job's fold (JobState).
// The event stream's threads call accept() and saw(); everything else runs on the launcher's thread.
class RankProcesses {
 public:
  static constexpr std::chrono::seconds kStartupAllowance{60};

  explicit RankProcesses(int world_size) : ranks_(static_cast<std::size_t>(world_size)) {}

  int world_size() const { return static_cast<int>(ranks_.size()); }

  // A connection's hello: "" accepts it, anything else is the reason it is refused.
  std::string accept(int rank) {
    if (rank >= world_size()) return "rank " + std::to_string(rank) + " is outside the job's world";
    std::lock_guard lock(mutex_);
    Process& process = ranks_[static_cast<std::size_t>(rank)];
    if (process.connected) return "rank " + std::to_string(rank) + " is already connected";
    process.connected = true;
    process.last_seen = Clock::now();
    return "";
  }

  // A line (event or heartbeat) of `rank` arrived.
  void saw(int rank) {
    std::lock_guard lock(mutex_);
    ranks_[static_cast<std::size_t>(rank)].last_seen = Clock::now();
  }

  void spawn_all(const LaunchOptions& options, const std::string& store_file, const std::string& events_address,
                 const std::string& events_secret) {
    for (int rank = 0; rank < world_size(); ++rank) {
      Process& process = ranks_[static_cast<std::size_t>(rank)];
      process.child = spawn_rank(options, rank, store_file, events_address, events_secret);
      std::lock_guard lock(mutex_);
      process.last_seen = Clock::now();
    }
  }

  // Reaps the ranks that exited; appends those that failed to `failures`. Returns how many still run. After a stop
  // request, a rank that stopped at the boundary (exit 130) has not failed.
  int reap(bool stop_requested, std::vector<Failure>& failures) {
    int running = 0;
    for (int rank = 0; rank < world_size(); ++rank) {
      Process& process = ranks_[static_cast<std::size_t>(rank)];
      if (!process.child.running()) continue;
      if (const std::optional<int> exited = process.child.poll()) {
        const int status = *exited;
        const bool ok =
            WIFEXITED(status) && (WEXITSTATUS(status) == 0 || (stop_requested && WEXITSTATUS(status) == 130));
        if (!ok) failures.push_back({rank, status});
        continue;
      }
      ++running;
    }
    return running;
  }

  // A rank that has been silent too long: how long, and what that means ("stopped answering (no heartbeat for 12 s)",
  // or for a rank that never said hello "never connected to the launcher (no hello 61 s after its start)").
  struct Silence {
    int rank = 0;
    std::string what;
  };

  // The first running rank whose last line is older than `limit`. A rank that has not said hello yet is still
  // starting (loading libtorch, on a loaded 2-core machine 10 s and more, seen in fault_test): it is given
  // kStartupAllowance at least.
  std::optional<Silence> silent_longer_than(Clock::duration limit) {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    for (int rank = 0; rank < world_size(); ++rank) {
      const Process& process = ranks_[static_cast<std::size_t>(rank)];
      const Clock::duration allowed = process.connected ? limit : std::max<Clock::duration>(limit, kStartupAllowance);
      if (process.child.running() && now - process.last_seen > allowed) {
        const std::string seconds =
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - process.last_seen).count());
        return Silence{rank, process.connected
                                 ? "stopped answering (no heartbeat for " + seconds + " s)"
                                 : "never connected to the launcher (no hello " + seconds + " s after its start)"};
      }
    }
    return std::nullopt;
  }

  // Every running rank counts as heard from now: the launcher itself was stopped and read nothing meanwhile.
  void forgive_silence() {
    std::lock_guard lock(mutex_);
    for (Process& process : ranks_) process.last_seen = Clock::now();
  }

  // SIGTERM to every running rank, SIGKILL to those still running after `grace`.
  void kill_all(std::chrono::milliseconds grace) {
    std::vector<ChildProcess*> children;
    for (Process& process : ranks_) children.push_back(&process.child);
    stop_children(children, grace);
  }

 private:
  struct Process {
    ChildProcess child;
    bool connected = false;
    Clock::time_point last_seen;  // of its last line (event or heartbeat), or its start; under mutex_
  };
  std::mutex mutex_;
  std::vector<Process> ranks_;
};

// A rank that ended the job, and why ("was killed by signal 9 (Killed)", "stopped answering ...").
struct RankFailure {
  int rank;
  std::string reason;
};

// Reaps the ranks that exited and sets `running` to how many still run. One failure brings the peers down within
// moments (their collectives fail), and the rank that failed first may be the last to exit: on a failure, gathers
// exits for a short while, then names the most likely cause.
std::optional<RankFailure> find_failure(RankProcesses& ranks, bool stop_requested, int& running) {
  std::vector<Failure> failures;
  running = ranks.reap(stop_requested, failures);
  if (failures.empty()) return std::nullopt;
  const auto settle_until = Clock::now() + std::chrono::milliseconds(1500);
  auto best = [&] {
    return *std::min_element(failures.begin(), failures.end(), [](const Failure& a, const Failure& b) {
      return failure_cause_order(a.status) < failure_cause_order(b.status);
    });
  };
  while (running > 0 && failure_cause_order(best().status) == 2 && Clock::now() < settle_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    running = ranks.reap(stop_requested, failures);
  }
  const Failure cause = best();
  // Peers that fail on a collective while a rank is silent: the silent (stopped) rank is the cause.
  if (failure_cause_order(cause.status) == 2) {
    if (const auto silent = ranks.silent_longer_than(std::chrono::milliseconds(1500))) {
      return RankFailure{silent->rank, silent->what};
    }
  }
  return RankFailure{cause.rank, describe_exit_status(cause.status)};
}

// The job's result when `failure` ended it: where the rank was, from its events; the rank_down event recorded.
LaunchResult failed(ObservedJob& watched, const RankFailure& failure) {
  std::string host = this_host_name();
  std::string phase = "init";
  int iteration = -1;
  watched.state().read([&](const JobFold& fold) {
    auto it = fold.ranks.find(failure.rank);
    if (it == fold.ranks.end()) return;
    if (!it->second.host.empty()) host = it->second.host;
    if (!it->second.last_phase.empty()) phase = it->second.last_phase;
    iteration = it->second.iteration;
  });
  LaunchResult result;
  result.message = "rank " + std::to_string(failure.rank) + " on host " + host + " " + failure.reason + " in phase " +
                   phase + (iteration >= 0 ? " of iteration " + std::to_string(iteration + 1) : "");
  watched.apply(rank_down_event(failure.rank, host, failure.reason, phase, core::wall_time_now(), iteration));
  result.exit_code = 1;
  return result;
}

// Every line of a rank is decoded once (EventReceiver); its events go to the job's fold and record, whose phase
// rounds make the progress lines.
EventReceiverHandlers rank_handlers(RankProcesses& ranks, ObservedJob& watched, const JobConfig& job, std::ostream* out,
                                    std::mutex& progress_mutex, const std::string& secret) {
  EventReceiverHandlers handlers;
  // The secret first: a connection without it may not even learn whether its rank is taken.
  handlers.accept = [&ranks, secret](const StreamHello& hello) {
    if (!secrets_match(secret, hello.secret))
      return std::string("wrong or missing job secret (HYBRIDSHARD_EVENTS_SECRET)");
    return ranks.accept(hello.rank);
  };
  handlers.on_alive = [&ranks](const StreamHello& hello) { ranks.saw(hello.rank); };
  handlers.on_event = [&watched, &job, out, &progress_mutex](const StreamHello&, JobEvent&& event) {
    const std::optional<PhaseRound> round = watched.apply(std::move(event));
    if (round && out != nullptr) {
      std::lock_guard lock(progress_mutex);
      *out << progress_line(*round, job.schedule.iterations, job.runtime.world_size) << std::endl;
    }
  };
  return handlers;
}

// Watches the ranks until they have all finished, one fails or falls silent for the job's timeout, or the operator
// stops the job (first Ctrl-C: `stop_requested` and the store key "stop"; second: killed).
LaunchResult watch_ranks(RankProcesses& ranks, core::Store& store, ObservedJob& watched, const JobConfig& job,
                         std::ostream* out, bool& stop_requested) {
  const auto timeout = job.runtime.timeout;
  // The launcher itself stopped (Ctrl-Z, SIGSTOP, a debugger) for half the timeout or more: the ranks' waits on its
  // store time out, and a failure within a timeout of its end is its doing.
  Clock::duration paused_for{};
  Clock::time_point resumed_at;
  const auto blame_pause = [&](LaunchResult result) {
    if (paused_for >= timeout / 2 && Clock::now() - resumed_at < timeout + std::chrono::seconds(5)) {
      result.message = "the launcher was paused for " +
                       std::to_string(std::chrono::duration_cast<std::chrono::seconds>(paused_for).count()) +
                       " s (SIGSTOP or Ctrl-Z; runtime.timeout is " +
                       std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                       " s) and the ranks' waits on it timed out: " + result.message;
    }
    return result;
  };
  while (true) {
    int running = 0;
    if (const auto failure = find_failure(ranks, stop_requested, running)) {
      return blame_pause(failed(watched, *failure));
    }
    if (running == 0) return {};
    // A record that lost a line cannot be trusted with the rest of the job: end it now, non-zero.
    if (const std::string broken = watched.record_failure(); !broken.empty()) {
      return {1, "the run record could not be written (" + broken + "); the job was stopped", 0};
    }
    if (const auto silent = ranks.silent_longer_than(timeout)) {
      return blame_pause(failed(watched, {silent->rank, silent->what}));
    }
    const int interrupts = g_interrupts.load();
    if (interrupts >= 2) {
      LaunchResult result;
      result.exit_code = 128 + g_last_signal.load();
      result.message = "killed by the operator (second " + stop_signal_text(g_last_signal.load()) + ")";
      return result;
    }
    if (interrupts == 1 && !stop_requested) {
      stop_requested = true;
      store.set("stop", "1");
      if (out != nullptr) {
        *out << "hybridshard: " << stop_signal_text(g_last_signal.load())
             << ": stopping at the next phase boundary (Ctrl-C again to kill)" << std::endl;
      }
    }
    const auto before_sleep = Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // A 50 ms sleep that took seconds: this process was stopped. What the ranks sent meanwhile is still unread, so
    // their silence is not theirs.
    const auto slept = Clock::now() - before_sleep;
    if (slept > kPauseNoticed) {
      ranks.forgive_silence();
      paused_for = slept;
      resumed_at = Clock::now();
      if (out != nullptr) {
        *out << "hybridshard: the launcher was paused for "
             << std::chrono::duration_cast<std::chrono::seconds>(slept).count() << " s" << std::endl;
      }
    }
  }
}

}  // namespace

nlohmann::json job_description(const JobConfig& job) {
  const core::ModelSpec& spec = job.model.spec;
  const int rollout_tp = job.rollout.tp;
  return {
      {"model",
       {
           {"architecture", std::string(core::architecture_name(spec.architecture))},
           {"num_hidden_layers", spec.num_hidden_layers},
           {"hidden_size", spec.hidden_size},
           {"num_attention_heads", spec.num_attention_heads},
           {"num_key_value_heads", spec.num_key_value_heads},
           {"intermediate_size", spec.intermediate_size},
           {"vocab_size", spec.vocab_size},
           {"tie_word_embeddings", spec.tie_word_embeddings},
           {"dtype", std::string(core::dtype_name(spec.dtype))},
       }},
      {"train", {{"tp", job.train.tp}, {"pp", job.train.pp}, {"vpp", job.train.vpp}, {"dp", job.train.dp}}},
      {"rollout", {{"tp", rollout_tp}, {"dp", rollout_tp > 0 ? job.rollout.world_size / rollout_tp : 0}}},
      {"backend", std::string(backend_name(job.runtime.backend))},
      {"strategy", std::string(core::strategy_name(job.runtime.strategy))},
      {"iterations", job.schedule.iterations},
      {"job_file", job.file},
  };
}

JobEvent job_event(const JobConfig& job, double time) {
  return service::job_event(job.runtime.world_size, job_description(job), time);
}

void install_launcher_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGHUP, &action, nullptr);  // a closed terminal or ssh session: stop like SIGTERM, record finished
  // A file size limit (RLIMIT_FSIZE) makes a write of the record fail with EFBIG, which the record reports, instead
  // of killing the launcher with its .partial left behind.
  ::signal(SIGXFSZ, SIG_IGN);
}

int launcher_interrupt_count() { return g_interrupts.load(); }

int launcher_last_signal() { return g_last_signal.load(); }

LaunchResult run_launcher(const LaunchOptions& options) {
  const JobConfig& job = options.job;
  const int world_size = job.runtime.world_size;
  const auto started = Clock::now();
  ObservedJob& watched = *options.watched;
  std::ostream* out = options.progress;

  RankProcesses ranks(world_size);
  std::mutex progress_mutex;

  // Rendezvous store and event stream. Every rank runs on this host: the store is a file in a directory only this user
  // can enter (no port for anyone on the network or another local user to reach), removed when the job ends.
  const PrivateDirectory store_directory("store");
  core::StoreOptions store_options;
  store_options.file = store_directory.store_file();
  store_options.timeout = job.runtime.timeout;
  std::unique_ptr<core::Store> store = core::Store::open(store_options);
  const std::string events_secret = new_stream_secret();
  EventReceiver events("127.0.0.1", 0, rank_handlers(ranks, watched, job, out, progress_mutex, events_secret));

  if (out != nullptr) {
    *out << "hybridshard: " << world_size << " ranks, train tp " << job.train.tp << " pp " << job.train.pp << " vpp "
         << job.train.vpp << " dp " << job.train.dp << " -> rollout tp " << job.rollout.tp << " dp " << job.rollout.dp()
         << ", " << job.schedule.iterations << " iterations, store " << store_options.file
         << " (private directory, no port)" << std::endl;
  }

  ranks.spawn_all(options, store_options.file, events.address(), events_secret);
  bool stop_requested = false;
  LaunchResult result = watch_ranks(ranks, *store, watched, job, out, stop_requested);
  ranks.kill_all(std::chrono::milliseconds(3000));
  if (result.exit_code == 0 && stop_requested) {
    const int signal_number = g_last_signal.load();
    result.exit_code = signal_number == 0 ? 130 : 128 + signal_number;
    result.message = signal_number == SIGINT || signal_number == 0
                         ? "stopped by the operator at a phase boundary"
                         : "stopped by " + stop_signal_text(signal_number) + " at a phase boundary";
  }
  if (result.exit_code == 0) result.message = "all " + std::to_string(world_size) + " ranks finished";
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  watched.apply(job_end_event(result.exit_code == 0, result.message, result.seconds, core::wall_time_now()));
  return result;
}

}  // namespace hybridshard::service
