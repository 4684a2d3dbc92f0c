// hybridshard::process: a child started by fork + exec, its exit in words, and the ways it is stopped.
#include "hybridshard/service/launch/child_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace hybridshard::service {
namespace {

using Clock = std::chrono::steady_clock;

ChildProcess shell(const std::string& script, std::optional<std::vector<std::string>> environment = std::nullopt) {
  return ChildProcess::start({"/bin/sh", {"sh", "-c", script}, std::move(environment), "test shell"});
}

int wait_for(ChildProcess& child) {
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!child.poll() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(child.running());
  return child.status().value_or(-1);
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

TEST(ChildProcessTest, exit_codes_and_signals_read_in_words_and_order_the_likely_cause) {
  ChildProcess ok = shell("exit 0");
  const int ok_status = wait_for(ok);
  EXPECT_TRUE(WIFEXITED(ok_status) && WEXITSTATUS(ok_status) == 0);

  ChildProcess comm = shell("exit " + std::to_string(kExitCommFailure));
  const int comm_status = wait_for(comm);
  EXPECT_EQ(describe_exit_status(comm_status), "exited with code 3");
  EXPECT_EQ(failure_cause_order(comm_status), 2);

  ChildProcess own = shell("exit 1");
  EXPECT_EQ(failure_cause_order(wait_for(own)), 1);

  ChildProcess killed = shell("kill -9 $$");
  const int killed_status = wait_for(killed);
  EXPECT_EQ(describe_exit_status(killed_status), "was killed by signal 9 (Killed)");
  EXPECT_EQ(failure_cause_order(killed_status), 0);
}

TEST(ChildProcessTest, a_program_that_cannot_be_executed_exits_127) {
  ChildProcess missing = ChildProcess::start({"/nonexistent/program", {"program"}, std::nullopt, "rank 7"});
  const int status = wait_for(missing);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 127) << describe_exit_status(status);
}

TEST(ChildProcessTest, the_environment_is_this_process_s_or_the_one_given) {
  ::setenv("HYBRIDSHARD_CHILD_PROCESS_TEST", "inherited", 1);
  ChildProcess inherited = shell("test \"$HYBRIDSHARD_CHILD_PROCESS_TEST\" = inherited");
  EXPECT_EQ(wait_for(inherited), 0);
  ChildProcess given = shell("test \"$HYBRIDSHARD_CHILD_PROCESS_TEST\" = given",
                             std::vector<std::string>{"HYBRIDSHARD_CHILD_PROCESS_TEST=given"});
  EXPECT_EQ(wait_for(given), 0);
  ::unsetenv("HYBRIDSHARD_CHILD_PROCESS_TEST");
}

TEST(ChildProcessTest, stop_children_ends_every_one_and_kills_those_that_ignore_sigterm) {
  ChildProcess polite = shell("exec sleep 100");
  // The stubborn one says when its trap is set (a file), so that SIGTERM cannot come before it.
  const std::filesystem::path ready =
      std::filesystem::temp_directory_path() / ("hybridshard-child-process-test-" + std::to_string(::getpid()));
  std::filesystem::remove(ready);
  ChildProcess stubborn = shell("trap '' TERM; : > " + ready.string() + "; while true; do sleep 0.05; done");
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!std::filesystem::exists(ready) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::filesystem::remove(ready);
  const auto start = Clock::now();
  stop_children({&polite, &stubborn}, std::chrono::milliseconds(500));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
  ASSERT_FALSE(polite.running());
  ASSERT_FALSE(stubborn.running());
  EXPECT_EQ(WTERMSIG(*polite.status()), SIGTERM);
  EXPECT_EQ(WTERMSIG(*stubborn.status()), SIGKILL);
}

TEST(ChildProcessTest, a_child_still_running_is_killed_when_its_owner_goes) {
  pid_t pid = -1;
  {
    ChildProcess child = shell("exec sleep 100");
    pid = child.pid();
    EXPECT_TRUE(alive(pid));
    ChildProcess moved = std::move(child);  // the moved-from one owns nothing
    EXPECT_FALSE(child.running());
    EXPECT_TRUE(moved.running());
  }
  EXPECT_FALSE(alive(pid));  // killed and reaped: not even a zombie
}

}  // namespace
}  // namespace hybridshard::service
