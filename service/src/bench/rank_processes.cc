// The ranks of a gloo or nccl bench as processes, as `hybridshard run` runs a job's ranks: the bench starts this
// program again once per rank (hidden flags --run-rank R --rank-dir DIR after this process's own arguments), the
// ranks meet in a file store in DIR (a private directory) and each writes its RankResult there
// (detail/rank_result_file.h). Each process has its own CUDA context: the driver does not serialize one rank's
// cudaMalloc/cudaFree behind another's, as it does for ranks that are threads of one process.
//
// The parent opens no CUDA device (resolving the options only counts them); it forks and the child execs at once
// (/proc/self/exe), so each rank starts with a fresh CUDA runtime. Children die with the parent (PR_SET_PDEATHSIG,
// ChildProcess).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <thread>

#include "detail/rank_result_file.h"
#include "detail/ranks.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/files/private_directory.h"
#include "hybridshard/service/launch/child_process.h"

namespace hybridshard::service::bench::detail {
namespace {

using Clock = std::chrono::steady_clock;

// A rank that finished leaves the others this long past the bench's timeout to finish too; then they are stopped.
constexpr std::chrono::seconds kFinishMargin{30};
// After a rank fails on a collective (most often a peer's failure), how long to wait for the peer that caused it to
// exit too, so that the message names the cause.
constexpr std::chrono::milliseconds kSettle{1500};
// SIGTERM, then SIGKILL after this.
constexpr std::chrono::milliseconds kStopGrace{2000};
constexpr std::chrono::milliseconds kPoll{20};

// This process's arguments (argv, argv[0] first), from /proc/self/cmdline.
std::vector<std::string> own_arguments() {
  std::ifstream file("/proc/self/cmdline", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (!file.eof() && !file) HS_THROW(core::Error, "cannot read /proc/self/cmdline to start the rank processes");
  std::vector<std::string> arguments;
  std::string::size_type start = 0;
  while (start < text.size()) {
    const std::string::size_type end = text.find('\0', start);
    arguments.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (arguments.empty()) HS_THROW(core::Error, "/proc/self/cmdline is empty: cannot start the rank processes");
  return arguments;
}

std::string rank_name(int rank) { return "rank " + std::to_string(rank); }

// What a failed rank process said (its error file), "" when it wrote none (killed by a signal).
std::string error_of(const std::filesystem::path& directory, int rank) {
  const std::filesystem::path file = rank_files(directory, rank).error;
  std::error_code ignored;
  if (!std::filesystem::exists(file, ignored)) return "";
  std::string text = read_text_file(file);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// The rank processes of one bench run, watched until all finished or one failed.
class RankProcessGroup {
 public:
  RankProcessGroup(const BenchConfig& config, const std::filesystem::path& directory)
      : config_(config), directory_(directory) {
    const std::vector<std::string> arguments = own_arguments();
    const int world_size = config.train.world_size();
    children_.resize(static_cast<std::size_t>(world_size));
    for (int rank = 0; rank < world_size; ++rank) {
      std::vector<std::string> rank_arguments = arguments;
      rank_arguments.insert(rank_arguments.end(),
                            {"--run-rank", std::to_string(rank), "--rank-dir", directory.string()});
      // The environment as it is now: what run_bench_report set for the devices reaches the ranks.
      children_[static_cast<std::size_t>(rank)] =
          ChildProcess::start({"/proc/self/exe", rank_arguments, std::nullopt, "bench " + rank_name(rank)});
    }
  }

  // Returns when every rank exited 0. Throws core::Error naming the rank when one fails, dies or (after another
  // finished) does not finish within the bench's timeout and a margin; the others are stopped first.
  void wait() {
    const Clock::duration finish_within = std::chrono::milliseconds(config_.timeout_ms) + kFinishMargin;
    std::optional<Clock::time_point> first_finished;
    int first_finished_rank = -1;
    while (true) {
      const int running = poll(first_finished, first_finished_rank);
      if (!failed_.empty()) fail();
      if (running == 0) return;
      if (first_finished && Clock::now() - *first_finished > finish_within) {
        const int late = first_running();
        stop();
        HS_THROW(core::TimeoutError,
                 rank_name(late) + " did not finish within " +
                     std::to_string(std::chrono::duration_cast<std::chrono::seconds>(finish_within).count()) +
                     " s after " + rank_name(first_finished_rank) + " finished (--timeout-ms " +
                     std::to_string(config_.timeout_ms) + " + " + std::to_string(kFinishMargin.count()) +
                     " s); the rank processes were stopped");
      }
      std::this_thread::sleep_for(kPoll);
    }
  }

 private:
  // Reaps the ranks that exited: a failure goes to failed_, the first success is remembered. Returns how many run.
  int poll(std::optional<Clock::time_point>& first_finished, int& first_finished_rank) {
    int running = 0;
    for (std::size_t rank = 0; rank < children_.size(); ++rank) {
      ChildProcess& child = children_[rank];
      if (!child.running()) continue;
      const std::optional<int> status = child.poll();
      if (!status) {
        ++running;
      } else if (*status != 0) {
        failed_.push_back(static_cast<int>(rank));
      } else if (!first_finished) {
        first_finished = Clock::now();
        first_finished_rank = static_cast<int>(rank);
      }
    }
    return running;
  }

  int first_running() const {
    for (std::size_t rank = 0; rank < children_.size(); ++rank) {
      if (children_[rank].running()) return static_cast<int>(rank);
    }
    return -1;
  }

  int status_of(int rank) const { return children_[static_cast<std::size_t>(rank)].status().value_or(0); }

  // The failed rank most likely to be the cause (a signal, then its own error, then a failed collective).
  int likely_cause() const {
    int cause = failed_.front();
    for (int rank : failed_) {
      if (failure_cause_order(status_of(rank)) < failure_cause_order(status_of(cause))) cause = rank;
    }
    return cause;
  }

  void stop() {
    std::vector<ChildProcess*> children;
    for (ChildProcess& child : children_) children.push_back(&child);
    stop_children(children, kStopGrace);
  }

  [[noreturn]] void fail() {
    // A rank whose collective failed most often reports a peer's failure: give the peer a moment to exit too.
    const Clock::time_point settle_until = Clock::now() + kSettle;
    std::optional<Clock::time_point> unused_finished;
    int unused_rank = -1;
    while (failure_cause_order(status_of(likely_cause())) == 2 && Clock::now() < settle_until &&
           poll(unused_finished, unused_rank) > 0) {
      std::this_thread::sleep_for(kPoll);
    }
    stop();
    const int cause = likely_cause();
    const std::string said = error_of(directory_, cause);
    HS_THROW(core::Error, rank_name(cause) + " (process " +
                              std::to_string(children_[static_cast<std::size_t>(cause)].pid()) + ") " +
                              describe_exit_status(status_of(cause)) + (said.empty() ? "" : ": " + said));
  }

  const BenchConfig& config_;
  std::filesystem::path directory_;
  std::vector<ChildProcess> children_;
  std::vector<int> failed_;
};

}  // namespace

std::vector<RankResult> run_ranks_as_processes(const BenchConfig& config) {
  const PrivateDirectory directory("bench-ranks");
  RankProcessGroup group(config, directory.path());
  group.wait();
  std::vector<RankResult> results;
  for (int rank = 0; rank < config.train.world_size(); ++rank) {
    const std::filesystem::path file = rank_files(directory.path(), rank).result;
    results.push_back(parse_rank_result(read_text_file(file), file.string()));
  }
  return results;
}

int run_rank_process(const BenchOptions& options) {
  const int rank = options.run_rank;
  const RankFiles files = rank_files(options.rank_dir, rank);
  // The error goes to stderr at once and into the error file, which the parent reads when this process failed.
  const auto failed = [&](const std::string& message, int exit_code) {
    std::fprintf(stderr, "hybridshard bench: %s: %s\n", rank_name(rank).c_str(), message.c_str());
    try {
      write_text_file(files.error, message + "\n");
    } catch (const core::Error& error) {
      std::fprintf(stderr, "hybridshard bench: %s: %s\n", rank_name(rank).c_str(), error.what());
    }
    return exit_code;
  };
  try {
    const BenchConfig config = resolve_bench_options(options);
    export_device_settings(config);
    const RankResult result = run_world_rank(config, rank, files.store.string(), nullptr);
    write_text_file(files.result, rank_result_text(result));
    return 0;
  } catch (const core::ConfigError& error) {
    return failed(error.what(), 2);
  } catch (const core::CommError& error) {  // what() names where it was raised
    return failed(error.what(), kExitCommFailure);
  } catch (const std::exception& error) {
    return failed(error.what(), 1);
  }
}

}  // namespace hybridshard::service::bench::detail
