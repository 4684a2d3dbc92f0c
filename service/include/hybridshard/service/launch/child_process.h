// A program this process starts as its child (fork + exec), for the launcher's ranks and the bench's ranks as
// processes: in its own process group (the terminal's Ctrl-C reaches the parent only, which decides what the children
// do), and killed with SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG), so that no child outlives a
// parent that died. Linux only (prctl).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace hybridshard::service {

// Exit code of a rank process whose collective or store operation failed (core::CommError): most often the
// consequence of another rank's failure, so a parent names a rank that failed otherwise when there is one.
inline constexpr int kExitCommFailure = 3;

struct ChildCommand {
  std::string program;                 // the file executed
  std::vector<std::string> arguments;  // argv, argv[0] first
  // "NAME=value" entries; nullopt: this process's environment (as it is when the child starts).
  std::optional<std::vector<std::string>> environment;
  std::string name;  // for the message when exec fails ("rank 3")
};

class ChildProcess {
 public:
  ChildProcess() = default;  // no child
  // Starts `command`. Throws core::Error when fork fails; an exec that fails is the child's exit code 127, with a line
  // on stderr naming `command.name` and the program.
  static ChildProcess start(const ChildCommand& command);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // A child still running is killed (SIGKILL) and reaped: none is left behind.
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !status_; }
  // The wait status once the child has exited (reaped by poll() or stop()).
  std::optional<int> status() const { return status_; }

  // Reaps the child if it has exited; its wait status, or nullopt while it runs.
  std::optional<int> poll();
  // SIGCONT (a stopped process cannot act on SIGTERM) and SIGTERM; does not wait.
  void terminate();
  // SIGKILL and reap.
  void kill();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// SIGTERM to every running child, then SIGKILL to those still running after `grace`; every one reaped on return.
void stop_children(const std::vector<ChildProcess*>& children, std::chrono::milliseconds grace);

// A wait status in words: "exited with code 3", "was killed by signal 9 (Killed)".
std::string describe_exit_status(int status);

// How likely a failed child caused the failure of a group of ranks, lower first: 0 killed by a signal, 1 an error of
// its own, 2 a failed collective (kExitCommFailure), which is what the peers of a failed rank report.
int failure_cause_order(int status);

}  // namespace hybridshard::service
