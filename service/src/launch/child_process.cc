#include "hybridshard/service/launch/child_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "hybridshard/core/error.h"

extern char** environ;

namespace hybridshard::service {
namespace {

std::vector<char*> pointers_of(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (std::string& item : strings) pointers.push_back(item.data());
  pointers.push_back(nullptr);
  return pointers;
}

}  // namespace

ChildProcess ChildProcess::start(const ChildCommand& command) {
  // Everything the child needs is built before fork: between fork and exec a child of a process with threads may
  // only make async-signal-safe calls (no allocation).
  std::vector<std::string> arguments = command.arguments;
  std::vector<char*> argv = pointers_of(arguments);
  std::vector<std::string> environment = command.environment.value_or(std::vector<std::string>{});
  std::vector<char*> envp = pointers_of(environment);
  char* const* child_environment = command.environment ? envp.data() : environ;
  char exec_failed[512];
  std::snprintf(exec_failed, sizeof exec_failed, "hybridshard: cannot start %s: %s: ", command.name.c_str(),
                command.program.c_str());

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) HS_THROW(core::Error, "cannot start " + command.name + ": fork failed: " + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    ::execve(command.program.c_str(), argv.data(), child_environment);
    const int error = errno;
    const char* reason = std::strerror(error);
    [[maybe_unused]] ssize_t written = ::write(STDERR_FILENO, exec_failed, std::strlen(exec_failed));
    written = ::write(STDERR_FILENO, reason, std::strlen(reason));
    written = ::write(STDERR_FILENO, "\n", 1);
    ::_exit(127);
  }
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept : pid_(other.pid_), status_(other.status_) {
  other.pid_ = -1;
  other.status_.reset();
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (running()) kill();
    pid_ = other.pid_;
    status_ = other.status_;
    other.pid_ = -1;
    other.status_.reset();
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (running()) kill();
}

std::optional<int> ChildProcess::poll() {
  if (!running()) return status_;
  int status = 0;
  const pid_t done = ::waitpid(pid_, &status, WNOHANG);
  if (done == pid_) {
    status_ = status;
  } else if (done < 0 && errno == ECHILD) {
    status_ = 0;  // reaped elsewhere (a SIGCHLD set to SIG_IGN): its status is lost
  }
  return status_;
}

void ChildProcess::terminate() {
  if (!running()) return;
  ::kill(pid_, SIGCONT);
  ::kill(pid_, SIGTERM);
}

void ChildProcess::kill() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  status_ = status;
}

void stop_children(const std::vector<ChildProcess*>& children, std::chrono::milliseconds grace) {
  for (ChildProcess* child : children) child->terminate();
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (ChildProcess* child : children) {
    while (!child->poll() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    child->kill();  // no-op for one that exited
  }
}

std::string describe_exit_status(int status) {
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    return "was killed by signal " + std::to_string(signal_number) + " (" + strsignal(signal_number) + ")";
  }
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}

int failure_cause_order(int status) {
  if (WIFSIGNALED(status)) return 0;
  return WEXITSTATUS(status) == kExitCommFailure ? 2 : 1;
}

}  // namespace hybridshard::service
