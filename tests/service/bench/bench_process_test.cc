// `hybridshard-bench --ranks process` with Gloo on the CPU (2 ranks, the tiny model, seconds): the rank processes
// measure what ranks as threads measure (the same rows, bounds and bytes, #wrong 0); a rank that fails or is killed
// ends the run at once with a non-zero exit naming it; the rank processes die with the bench. Runs the program itself
// (HYBRIDSHARD_BENCH_PROGRAM) as jobs and scripts do.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/service/launch/child_process.h"

namespace hybridshard::service {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

class BenchProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!core::gloo_available()) GTEST_SKIP() << "built without Gloo";
    directory_ =
        std::filesystem::temp_directory_path() / ("hybridshard-bench-process-test-" + std::to_string(::getpid()) + "-" +
                                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(directory_);
    std::filesystem::create_directories(directory_);
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  // The bench with a tiny Gloo world of 2 (tp 2 -> rollout tp 1) and `extra` flags, its stdout and stderr into `log`.
  ChildProcess start_bench(const std::vector<std::string>& extra, const std::string& log) {
    std::vector<std::string> arguments = {"sh",
                                          "-c",
                                          "exec \"$0\" \"$@\" >" + (directory_ / log).string() + " 2>&1",
                                          HYBRIDSHARD_BENCH_PROGRAM,
                                          "--comm",
                                          "gloo",
                                          "--world",
                                          "2",
                                          "--tp",
                                          "2",
                                          "--rollout-tp",
                                          "1",
                                          "--batch-cols",
                                          "16",
                                          "--cpu-device-memory",
                                          "4294967296",
                                          "--timeout-ms",
                                          "60000"};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    return ChildProcess::start({"/bin/sh", arguments, std::nullopt, "the bench"});
  }

  // Waits for `bench` to exit, at most `limit`; its wait status (the test fails when it did not exit).
  static int wait_for(ChildProcess& bench, std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!bench.poll() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(bench.running()) << "the bench did not exit within " << limit.count() << " s";
    bench.kill();
    return bench.status().value_or(-1);
  }

  std::string read(const std::string& name) const {
    std::ifstream file(directory_ / name);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

  std::filesystem::path directory_;
};

// The processes whose parent is `parent` and whose arguments hold "--run-rank" `rank`.
std::vector<pid_t> rank_processes_of(pid_t parent, int rank) {
  std::vector<pid_t> found;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat_file(entry.path() / "stat");
    const std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    const std::string::size_type close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int parent_pid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &parent_pid) != 2 || parent_pid != parent) continue;
    std::ifstream cmdline_file(entry.path() / "cmdline");
    const std::string cmdline((std::istreambuf_iterator<char>(cmdline_file)), std::istreambuf_iterator<char>());
    if (cmdline.find(std::string("--run-rank\0", 11) + std::to_string(rank) + '\0') != std::string::npos) {
      found.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return found;
}

// Gone, or a zombie nobody reaped yet (it runs no more).
bool has_ended(pid_t pid) {
  std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat_file) return true;
  const std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const std::string::size_type close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

// Waits until `bench` has started its rank processes 0 and 1; their pids.
std::pair<pid_t, pid_t> wait_for_ranks(pid_t bench) {
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    const std::vector<pid_t> rank0 = rank_processes_of(bench, 0);
    const std::vector<pid_t> rank1 = rank_processes_of(bench, 1);
    if (rank0.size() == 1 && rank1.size() == 1) return {rank0.front(), rank1.front()};
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "the bench did not start its two rank processes";
  return {-1, -1};
}

TEST_F(BenchProcessTest, process_ranks_measure_what_thread_ranks_measure) {
  ChildProcess processes = start_bench(
      {"--ranks", "process", "-n", "2", "-w", "1", "--json", (directory_ / "process.json").string()}, "process.log");
  const int process_status = wait_for(processes, std::chrono::seconds(120));
  ChildProcess threads = start_bench(
      {"--ranks", "thread", "-n", "2", "-w", "1", "--json", (directory_ / "thread.json").string()}, "thread.log");
  const int thread_status = wait_for(threads, std::chrono::seconds(120));
  ASSERT_EQ(process_status, 0) << describe_exit_status(process_status) << "\n" << read("process.log");
  ASSERT_EQ(thread_status, 0) << describe_exit_status(thread_status) << "\n" << read("thread.log");
  EXPECT_NE(read("process.log").find("# comm gloo (2 ranks as processes)"), std::string::npos) << read("process.log");
  EXPECT_NE(read("thread.log").find("# comm gloo (2 ranks as threads of one process)"), std::string::npos);

  const Json by_process = Json::parse(read("process.json"));
  const Json by_thread = Json::parse(read("thread.json"));
  EXPECT_EQ(by_process.at("ranks_as"), "process");
  EXPECT_EQ(by_thread.at("ranks_as"), "thread");
  EXPECT_EQ(by_process.at("wrong"), 0);
  // (enter, exit) x 2 strategies x 2 policies x 2 releases, batch pre and post: the same rows in the same order,
  // with the same bytes (the largest of the two ranks: both ranks' results were read and combined).
  const Json& rows = by_process.at("rows");
  ASSERT_EQ(rows.size(), 16u + 2u);
  ASSERT_EQ(rows.size(), by_thread.at("rows").size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Json& row = rows[i];
    const Json& same = by_thread.at("rows")[i];
    const std::string what = row.at("phase").get<std::string>() + " " + row.at("strategy").get<std::string>() + " " +
                             row.at("policy").get<std::string>() + "/" + row.at("release").get<std::string>();
    for (const char* key : {"phase", "strategy", "policy", "release", "bytes", "host_bytes"}) {
      EXPECT_EQ(row.at(key), same.at(key)) << what << ": " << key;
    }
    EXPECT_GT(row.at("time_us").get<double>(), 0) << what;
    if (row.at("phase") == "enter" || row.at("phase").get<std::string>().rfind("batch.", 0) == 0) {
      EXPECT_EQ(row.at("wrong"), 0) << what;  // checked (not null) and right
    }
  }
  ASSERT_EQ(by_process.at("bounds").size(), by_thread.at("bounds").size());
  for (std::size_t i = 0; i < by_process.at("bounds").size(); ++i) {
    EXPECT_EQ(by_process.at("bounds")[i].at("name"), by_thread.at("bounds")[i].at("name"));
    EXPECT_EQ(by_process.at("bounds")[i].at("bytes"), by_thread.at("bounds")[i].at("bytes"));
  }
  EXPECT_EQ(by_process.at("steps").size(), by_thread.at("steps").size());
}

TEST_F(BenchProcessTest, a_rank_that_fails_ends_the_run_with_its_error) {
  // Too little device memory for the shard: each rank process finds out when it allocates (the parent allocates none).
  ChildProcess bench =
      start_bench({"--ranks", "process", "-n", "2", "-w", "1", "--cpu-device-memory", "100000"}, "failed.log");
  const auto started = Clock::now();
  const int status = wait_for(bench, std::chrono::seconds(60));
  const std::string log = read("failed.log");
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(30)) << log;  // --timeout-ms is 60 s: nothing waited for it
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << describe_exit_status(status) << "\n" << log;
  EXPECT_NE(log.find("hybridshard bench: the run failed: "), std::string::npos) << log;
  EXPECT_TRUE(std::regex_search(log, std::regex("rank [01] \\(process [0-9]+\\) exited with code 1: "))) << log;
  EXPECT_NE(log.find("cpu device: cannot allocate"), std::string::npos) << log;  // the rank's own error
}

TEST_F(BenchProcessTest, a_rank_killed_by_a_signal_ends_the_run_at_once_naming_it) {
  // Iterations enough for minutes: only the kill ends this run early.
  ChildProcess bench = start_bench({"--ranks", "process", "-n", "10000000", "-w", "1"}, "killed.log");
  const auto [rank0, rank1] = wait_for_ranks(bench.pid());
  ASSERT_GT(rank1, 0);
  ASSERT_EQ(::kill(rank1, SIGKILL), 0);
  const auto killed_at = Clock::now();
  const int status = wait_for(bench, std::chrono::seconds(60));
  const std::string log = read("killed.log");
  EXPECT_LT(Clock::now() - killed_at, std::chrono::seconds(30)) << log;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << describe_exit_status(status) << "\n" << log;
  EXPECT_NE(log.find("rank 1 (process " + std::to_string(rank1) + ") was killed by signal 9"), std::string::npos)
      << log;
  EXPECT_TRUE(has_ended(rank0)) << "rank 0 (process " << rank0 << ") outlived the bench";
}

TEST_F(BenchProcessTest, the_rank_processes_die_with_the_bench) {
  ChildProcess bench = start_bench({"--ranks", "process", "-n", "10000000", "-w", "1"}, "orphans.log");
  const auto [rank0, rank1] = wait_for_ranks(bench.pid());
  ASSERT_GT(rank0, 0);
  bench.kill();  // SIGKILL: the bench cannot stop them itself
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while ((!has_ended(rank0) || !has_ended(rank1)) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(has_ended(rank0)) << "rank 0 (process " << rank0 << ") outlived the bench";
  EXPECT_TRUE(has_ended(rank1)) << "rank 1 (process " << rank1 << ") outlived the bench";
}

}  // namespace
}  // namespace hybridshard::service
