// Programs under test as child processes: started in their own process group with extra environment, stdout and
// stderr captured to files, waited for with a deadline (killed, whole group, when it passes), signalled. Also: this
// process as a child subreaper, so that ranks orphaned by a dying launcher come back to the test to be found.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace hybridshard::testing {

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct ChildResult {
  bool timed_out = false;  // the deadline passed; the group was killed
  int exit_code = -1;      // when it exited
  int signal = 0;          // when a signal ended it
  double seconds = 0;
  std::string out;
  std::string err;
  std::string describe() const {
    std::ostringstream text;
    text << (timed_out ? "timed out; " : "") << "exit " << exit_code << " signal " << signal << " after " << seconds
         << " s\n--- stdout ---\n"
         << out << "--- stderr ---\n"
         << err;
    return text.str();
  }
};

class ChildProcess {
 public:
  // Starts argv[0] (a path) with this environment plus `environment` (which wins), in `directory` when given.
  ChildProcess(const std::vector<std::string>& argv, const std::map<std::string, std::string>& environment,
               const std::filesystem::path& log_prefix, const std::filesystem::path& directory = {})
      : out_path_(log_prefix.string() + ".out"), err_path_(log_prefix.string() + ".err") {
    std::vector<std::string> env_entries;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      const std::string item(*entry);
      const std::string name = item.substr(0, item.find('='));
      if (environment.count(name) == 0) env_entries.push_back(item);
    }
    for (const auto& [name, value] : environment) env_entries.push_back(name + "=" + value);
    std::vector<std::string> arguments = argv;
    started_ = std::chrono::steady_clock::now();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::setpgid(0, 0);
      if (!directory.empty() && ::chdir(directory.c_str()) != 0) ::_exit(126);
      if (std::freopen(out_path_.c_str(), "w", stdout) == nullptr) ::_exit(126);
      if (std::freopen(err_path_.c_str(), "w", stderr) == nullptr) ::_exit(126);
      std::vector<char*> args;
      for (std::string& argument : arguments) args.push_back(argument.data());
      args.push_back(nullptr);
      std::vector<char*> envp;
      for (std::string& entry : env_entries) envp.push_back(entry.data());
      envp.push_back(nullptr);
      ::execve(args[0], args.data(), envp.data());
      std::fprintf(stderr, "cannot exec %s: %s\n", args[0], std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);  // both sides, so that it holds before either runs on
  }

  ~ChildProcess() {
    if (!done_) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int number) const { ::kill(pid_, number); }

  // What it wrote so far.
  std::string out() const { return read_text_file(out_path_); }
  std::string err() const { return read_text_file(err_path_); }

  // True once it has exited (reaps it).
  bool poll() {
    if (done_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) finish(status);
    return done_;
  }

  // Waits until `predicate(stdout so far)` holds, the process ends, or `deadline` passes; true when it held.
  template <typename Predicate>
  bool wait_for_output(Predicate predicate, std::chrono::seconds deadline) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      if (predicate(out())) return true;
      if (poll()) return predicate(out());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Waits for the end; past `deadline` the whole process group is killed and the result says timed_out.
  ChildResult wait(std::chrono::seconds deadline) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (!poll()) {
      if (std::chrono::steady_clock::now() > until) {
        result_.timed_out = true;
        ::kill(-pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        finish(status);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    result_.out = out();
    result_.err = err();
    return result_;
  }

 private:
  void finish(int status) {
    done_ = true;
    result_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) result_.signal = WTERMSIG(status);
  }

  std::string out_path_;
  std::string err_path_;
  pid_t pid_ = -1;
  bool done_ = false;
  std::chrono::steady_clock::time_point started_;
  ChildResult result_;
};

// This host's name, as the launcher reports it.
inline std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

// Makes this process the reaper of its orphaned descendants (ranks whose launcher died), so that they can be found
// and waited for here instead of escaping to init.
inline void become_child_subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

// Reaps any exited descendants handed to this process (zombies left by an orphaned rank).
inline void reap_orphans() {
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

// True while `pid` is a live process (not a zombie, not gone).
inline bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0) return errno == EPERM;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const std::size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() || text[close + 2] != 'Z';
}

// The processes whose parent is `parent` (from /proc/*/stat).
inline std::vector<pid_t> child_pids(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const std::size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(text.substr(close + 2));  // STATE PPID ...
    std::string state;
    long ppid = 0;
    if (fields >> state >> ppid && ppid == parent) children.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return children;
}

// Whether `pid` ignores signal `number` (its SigIgn mask in /proc/PID/status).
inline bool ignores_signal(pid_t pid, int number) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("SigIgn:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> (number - 1)) & 1ULL;
  }
  return false;
}

// The path of the hybridshard binaries and of the source tree, from the build.
#ifndef HYBRIDSHARD_BIN_DIR
#error "HYBRIDSHARD_BIN_DIR must name the directory of hybridshard and hybridshard-rank"
#endif
#ifndef HYBRIDSHARD_SOURCE_DIR
#error "HYBRIDSHARD_SOURCE_DIR must name the source tree"
#endif
inline std::string hybridshard_binary() { return std::string(HYBRIDSHARD_BIN_DIR) + "/hybridshard"; }
inline std::string rank_binary() { return std::string(HYBRIDSHARD_BIN_DIR) + "/hybridshard-rank"; }
inline std::filesystem::path source_path(const std::string& relative) {
  return std::filesystem::path(HYBRIDSHARD_SOURCE_DIR) / relative;
}

// A private temporary directory, removed with everything in it.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) {
    path_ = std::filesystem::temp_directory_path() /
            ("hybridshard-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// A job file of the source tree with some of its values replaced ("key: old" lines, matched on the key).
inline std::string job_with(const std::string& relative, const std::map<std::string, std::string>& values) {
  std::istringstream in(read_text_file(source_path(relative)));
  std::ostringstream out;
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t colon = line.find(':');
    const std::size_t indent = line.find_first_not_of(' ');
    if (colon != std::string::npos && indent != std::string::npos && line[indent] != '#') {
      const std::string key = line.substr(indent, colon - indent);
      if (auto found = values.find(key); found != values.end()) {
        line = line.substr(0, colon + 1) + " " + found->second;
      }
    }
    out << line << "\n";
  }
  return out.str();
}

// The quickstart job with some of its values replaced.
inline std::string quickstart_with(const std::map<std::string, std::string>& values) {
  return job_with("configs/quickstart.yaml", values);
}

}  // namespace hybridshard::testing
