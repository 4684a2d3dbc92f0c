#include "hybridshard/service/launch/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
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
#include <sstream>
#include <thread>
#include <vector>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/store.h"
#include "hybridshard/service/launch/event_stream.h"
#include "hybridshard/service/launch/rank_environment.h"
#include "hybridshard/service/observe/event_json.h"

namespace hybridshard::service {
namespace {

std::atomic<int> g_interrupts{0};

void on_interrupt(int) { g_interrupts.fetch_add(1); }

using Clock = std::chrono::steady_clock;

struct RankState {
  pid_t pid = -1;
  bool running = false;
  bool connected = false;
  int exit_code = 0;
  std::string phase = "init";
  int iteration = -1;
  std::string host;
  Clock::time_point last_seen;
  std::int64_t device_used = 0;
  std::int64_t device_total = 0;
};

// Aggregates phase ends over ranks into one progress line per (iteration, phase).
struct PhaseProgress {
  int ranks_done = 0;
  double max_seconds = 0;
  std::int64_t network_bytes = 0;
};

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    return "was killed by signal " + std::to_string(signal_number) + " (" + strsignal(signal_number) + ")";
  }
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}

std::string mib(std::int64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return out.str();
}

pid_t spawn_rank(const LaunchOptions& options, int rank, int master_port, const std::string& events_address) {
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
  environment.push_back("MASTER_ADDR=" + job.runtime.master_addr);
  environment.push_back("MASTER_PORT=" + std::to_string(master_port));
  environment.push_back("HYBRIDSHARD_EVENTS=" + events_address);
  environment.push_back("HYBRIDSHARD_LAUNCHER=1");

  std::vector<std::string> arguments = {options.rank_binary, "--job", options.job_file};
  const pid_t launcher_pid = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) HS_THROW(core::Error, std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    // Own process group: the terminal's Ctrl-C reaches the launcher only, which stops ranks at a boundary.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != launcher_pid) ::_exit(127);
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (std::string& entry : environment) envp.push_back(entry.data());
    envp.push_back(nullptr);
    ::execve(options.rank_binary.c_str(), argv.data(), envp.data());
    std::fprintf(stderr, "hybridshard: cannot start rank %d: %s: %s\n", rank, options.rank_binary.c_str(),
                 std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

void kill_all(std::vector<RankState>& ranks, std::chrono::milliseconds grace) {
  for (RankState& state : ranks) {
    if (!state.running) continue;
    ::kill(state.pid, SIGCONT);  // a stopped process cannot act on SIGTERM
    ::kill(state.pid, SIGTERM);
  }
  const auto deadline = Clock::now() + grace;
  for (RankState& state : ranks) {
    while (state.running) {
      int status = 0;
      const pid_t done = ::waitpid(state.pid, &status, WNOHANG);
      if (done == state.pid || (done < 0 && errno == ECHILD)) {
        state.running = false;
        break;
      }
      if (Clock::now() > deadline) {
        ::kill(state.pid, SIGKILL);
        ::waitpid(state.pid, &status, 0);
        state.running = false;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace

void install_launcher_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

int launcher_interrupt_count() { return g_interrupts.load(); }

LaunchResult run_launcher(const LaunchOptions& options) {
  const JobConfig& job = options.job;
  const int world_size = job.runtime.world_size;
  const auto timeout = job.runtime.timeout;
  const auto started = Clock::now();

  std::mutex mutex;  // guards ranks, progress and the on_event callback
  std::vector<RankState> ranks(static_cast<std::size_t>(world_size));
  std::map<int, int> connection_rank;
  std::map<std::pair<int, std::string>, PhaseProgress> progress;
  std::map<std::pair<int, int>, std::int64_t> enter_network_bytes;  // (rank, iteration) -> received bytes
  std::ostream* out = options.progress;

  auto emit = [&](const nlohmann::json& event) {
    if (options.on_event) options.on_event(event);
  };

  auto on_line = [&](int connection, const std::string& line) {
    nlohmann::json event = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (event.is_discarded() || !event.is_object() || !event.contains("type")) {
      std::cerr << "hybridshard: ignoring a malformed event line from connection " << connection << "\n";
      return;
    }
    std::lock_guard lock(mutex);
    const std::string type = event.value("type", "");
    const int rank = event.value("rank", -1);
    if (type == "hello") {
      if (rank >= 0 && rank < world_size) connection_rank[connection] = rank;
    }
    if (rank < 0 || rank >= world_size) return;
    RankState& state = ranks[static_cast<std::size_t>(rank)];
    state.last_seen = Clock::now();
    state.connected = true;
    if (type == "hello" || type == "heartbeat") return;
    if (type == "rank_up") state.host = event.value("host", "");
    if (type == "phase_begin") {
      state.phase = event.value("phase", "");
      state.iteration = event.value("iteration", -1);
    }
    if (type == "memory") {
      state.device_used = event.value("device_used", std::int64_t{0});
      state.device_total = event.value("device_total", std::int64_t{0});
    }
    if (type == "transfer" && event.value("path", "") == "network" &&
        event.value("operation", "").find("recv") != std::string::npos) {
      enter_network_bytes[{rank, event.value("iteration", -1)}] += event.value("bytes", std::int64_t{0});
    }
    if (type == "phase_end" && out != nullptr) {
      const int iteration = event.value("iteration", -1);
      const std::string phase = event.value("phase", "");
      PhaseProgress& entry = progress[{iteration, phase}];
      entry.ranks_done += 1;
      entry.max_seconds = std::max(entry.max_seconds, event.value("seconds", 0.0));
      if (phase == "enter") entry.network_bytes += enter_network_bytes[{rank, iteration}];
      if (entry.ranks_done == world_size) {
        std::int64_t max_used = 0;
        std::int64_t total = 0;
        for (const RankState& other : ranks) {
          max_used = std::max(max_used, other.device_used);
          total = std::max(total, other.device_total);
        }
        std::ostringstream line_out;
        if (iteration >= 0) {
          line_out << "iter " << (iteration + 1) << "/" << job.schedule.iterations << "  ";
        } else {
          line_out << "          ";
        }
        line_out << std::left << std::setw(8) << phase << std::right << std::fixed << std::setprecision(2)
                 << std::setw(10) << entry.max_seconds * 1e3 << " ms";
        if (phase == "enter") line_out << "  net " << mib(entry.network_bytes / world_size) << "/rank";
        line_out << "  device " << mib(max_used) << " of " << mib(total) << " (max rank)";
        *out << line_out.str() << std::endl;
      }
    }
    emit(event);
  };
  auto on_close = [&](int connection) {
    std::lock_guard lock(mutex);
    connection_rank.erase(connection);
  };

  // Rendezvous store and event stream.
  core::StoreOptions store_options;
  store_options.host = job.runtime.master_addr;
  store_options.port = job.runtime.master_port;
  store_options.is_server = true;
  store_options.world_size = -1;
  store_options.timeout = timeout;
  std::unique_ptr<core::Store> store = core::Store::open(store_options);
  EventStreamServer events("127.0.0.1", 0, on_line, on_close);

  if (out != nullptr) {
    *out << "hybridshard: " << world_size << " ranks, train tp " << job.train.tp << " pp " << job.train.pp << " vpp "
         << job.train.vpp << " dp " << job.train.dp << " -> rollout tp " << job.rollout.tp << " dp " << job.rollout.dp()
         << ", " << job.schedule.iterations << " iterations, store " << job.runtime.master_addr << ":" << store->port()
         << std::endl;
  }

  for (int rank = 0; rank < world_size; ++rank) {
    RankState& state = ranks[static_cast<std::size_t>(rank)];
    state.pid = spawn_rank(options, rank, store->port(), events.address());
    state.running = true;
    state.host = this_host_name();
    state.last_seen = Clock::now();
  }

  LaunchResult result;
  bool stop_requested = false;
  auto fail = [&](int rank, const std::string& reason) {
    std::string phase;
    std::string host;
    {
      std::lock_guard lock(mutex);
      RankState& state = ranks[static_cast<std::size_t>(rank)];
      phase = state.phase;
      host = state.host;
      result.message = "rank " + std::to_string(rank) + " on host " + host + " " + reason + " in phase " + phase +
                       (state.iteration >= 0 ? " of iteration " + std::to_string(state.iteration + 1) : "");
      nlohmann::json event = rank_down_event_json(rank, host, reason, phase, core::wall_time_now());
      event["iteration"] = state.iteration;
      emit(event);
    }
    result.exit_code = 1;
  };

  // Reaps the ranks that exited; appends those that failed to `failures`. Returns how many still run. After a stop
  // request, a rank that stopped at the boundary (exit 130) has not failed.
  struct Failure {
    int rank;
    int status;
  };
  auto reap = [&](std::vector<Failure>& failures) {
    int running = 0;
    for (int rank = 0; rank < world_size; ++rank) {
      RankState& state = ranks[static_cast<std::size_t>(rank)];
      if (!state.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(state.pid, &status, WNOHANG);
      if (done == state.pid) {
        state.running = false;
        const bool ok =
            WIFEXITED(status) && (WEXITSTATUS(status) == 0 || (stop_requested && WEXITSTATUS(status) == 130));
        if (!ok) failures.push_back({rank, status});
        continue;
      }
      ++running;
    }
    return running;
  };
  // Lower is more likely the cause: a signal, then an error of the rank's own, then a collective that failed
  // (kRankExitCommFailure), which is what the peers of a failed rank report.
  auto cause_rank = [](int status) {
    if (WIFSIGNALED(status)) return 0;
    return WEXITSTATUS(status) == kRankExitCommFailure ? 2 : 1;
  };

  while (true) {
    // Children. One failure brings the peers down within moments (their collectives fail), and the rank that failed
    // first may be the last to exit: gather exits for a short while, then name the most likely cause.
    std::vector<Failure> failures;
    int running = reap(failures);
    if (!failures.empty()) {
      const auto settle_until = Clock::now() + std::chrono::milliseconds(1500);
      auto best = [&] {
        return *std::min_element(failures.begin(), failures.end(), [&](const Failure& a, const Failure& b) {
          return cause_rank(a.status) < cause_rank(b.status);
        });
      };
      while (running > 0 && cause_rank(best().status) == 2 && Clock::now() < settle_until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        running = reap(failures);
      }
      const Failure cause = best();
      // Peers that fail on a collective while a rank is silent: the silent (stopped) rank is the cause.
      int silent_rank = -1;
      std::int64_t silent_seconds = 0;
      if (cause_rank(cause.status) == 2) {
        std::lock_guard lock(mutex);
        const auto now = Clock::now();
        for (int rank = 0; rank < world_size && silent_rank < 0; ++rank) {
          const RankState& state = ranks[static_cast<std::size_t>(rank)];
          if (state.running && now - state.last_seen > std::chrono::milliseconds(1500)) {
            silent_rank = rank;
            silent_seconds = std::chrono::duration_cast<std::chrono::seconds>(now - state.last_seen).count();
          }
        }
      }
      if (silent_rank >= 0) {
        fail(silent_rank, "stopped answering (no heartbeat for " + std::to_string(silent_seconds) + " s)");
      } else {
        fail(cause.rank, describe_status(cause.status));
      }
      break;
    }
    if (running == 0) break;

    // Silence.
    {
      const auto now = Clock::now();
      int silent_rank = -1;
      {
        std::lock_guard lock(mutex);
        for (int rank = 0; rank < world_size && silent_rank < 0; ++rank) {
          const RankState& state = ranks[static_cast<std::size_t>(rank)];
          if (state.running && now - state.last_seen > timeout) silent_rank = rank;
        }
      }
      if (silent_rank >= 0) {
        fail(silent_rank, "stopped answering (no heartbeat for " +
                              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                              " s)");
        break;
      }
    }

    // Operator.
    const int interrupts = g_interrupts.load();
    if (interrupts >= 2) {
      result.exit_code = 130;
      result.message = "killed by the operator (second Ctrl-C)";
      break;
    }
    if (interrupts == 1 && !stop_requested) {
      stop_requested = true;
      store->set("stop", "1");
      if (out != nullptr)
        *out << "hybridshard: stopping at the next phase boundary (Ctrl-C again to kill)" << std::endl;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  kill_all(ranks, std::chrono::milliseconds(3000));
  if (result.exit_code == 0 && stop_requested) {
    result.exit_code = 130;
    result.message = "stopped by the operator at a phase boundary";
  }
  if (result.exit_code == 0) result.message = "all " + std::to_string(world_size) + " ranks finished";
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  {
    std::lock_guard lock(mutex);
    emit(job_end_event_json(result.exit_code == 0, result.message, result.seconds, core::wall_time_now()));
  }
  return result;
}

}  // namespace hybridshard::service
