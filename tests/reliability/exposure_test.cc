// What a running `hybridshard run` exposes (issue 19, docs/reliability.md "Threat model"). While a job runs, every
// listening TCP socket of the launcher and its ranks is on a loopback address: the rendezvous store is a file in a
// directory only this user can enter (mode 0700, owned by us), not a c10d TCPStore on every interface as before; the
// ranks are handed the file and no MASTER_ADDR / MASTER_PORT. When the job ends the directory is gone.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "child_process.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;

// The socket inodes a process holds ("socket:[INODE]" links under /proc/PID/fd).
std::set<std::string> socket_inodes(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", error)) {
    const std::string target = fs::read_symlink(entry.path(), error).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  return inodes;
}

struct Listener {
  std::string address;  // as /proc/net/tcp{,6} writes it (hex, host byte order per 32-bit word)
  bool loopback = false;
};

// The listening sockets among `inodes`, from /proc/net/tcp and /proc/net/tcp6.
std::vector<Listener> listeners_of(const std::set<std::string>& inodes) {
  std::vector<Listener> found;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      if (state != "0A" || inodes.count(inode) == 0) continue;  // 0A: LISTEN
      const std::string host = local.substr(0, local.find(':'));
      // 127.x.x.x is 7F in the last byte of the little-endian word; ::1 is the last word 01000000.
      const bool loopback =
          (host.size() == 8 && host.substr(6, 2) == "7F") || host == "00000000000000000000000001000000";
      found.push_back({local, loopback});
    }
  }
  return found;
}

std::map<std::string, std::string> environment_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::map<std::string, std::string> variables;
  std::string entry;
  while (std::getline(in, entry, '\0')) {
    const std::size_t equals = entry.find('=');
    if (equals != std::string::npos) variables[entry.substr(0, equals)] = entry.substr(equals + 1);
  }
  return variables;
}

TEST(ExposureTest, a_running_job_listens_on_loopback_only_and_meets_in_a_private_file_store) {
  ScratchDir dir("exposure");
  const fs::path tmp = dir / "tmp";
  fs::create_directories(tmp);
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << quickstart_with({{"iterations", "1000000"}, {"listen", "\"127.0.0.1:0\""}});
  ChildProcess launcher({hybridshard_binary(), "run", job.string()}, {{"TMPDIR", tmp.string()}}, dir / "launcher");
  ASSERT_TRUE(launcher.wait_for_output([](const std::string& out) { return out.find("iter 2/") != std::string::npos; },
                                       std::chrono::seconds(120)))
      << launcher.wait(std::chrono::seconds(1)).describe();

  // The store: one private directory under TMPDIR, ours, mode 0700, holding the store file the banner names.
  std::vector<fs::path> stores;
  for (const fs::directory_entry& entry : fs::directory_iterator(tmp)) {
    if (entry.path().filename().string().rfind("hybridshard-store-", 0) == 0) stores.push_back(entry.path());
  }
  ASSERT_EQ(stores.size(), 1u);
  struct stat info {};
  ASSERT_EQ(::stat(stores[0].c_str(), &info), 0);
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0700u);
  EXPECT_EQ(info.st_uid, ::getuid());
  EXPECT_TRUE(fs::is_regular_file(stores[0] / "store"));

  // Every listening socket of the launcher and its ranks is on loopback.
  const std::vector<pid_t> ranks = child_pids(launcher.pid());
  EXPECT_EQ(ranks.size(), 4u);
  std::set<std::string> inodes = socket_inodes(launcher.pid());
  for (pid_t rank : ranks) {
    const std::set<std::string> mine = socket_inodes(rank);
    inodes.insert(mine.begin(), mine.end());
    const std::map<std::string, std::string> environment = environment_of(rank);
    EXPECT_EQ(environment.count("MASTER_PORT"), 0u) << "rank pid " << rank;
    ASSERT_EQ(environment.count("HYBRIDSHARD_STORE_FILE"), 1u) << "rank pid " << rank;
    EXPECT_EQ(fs::path(environment.at("HYBRIDSHARD_STORE_FILE")), stores[0] / "store");
  }
  const std::vector<Listener> listeners = listeners_of(inodes);
  EXPECT_GE(listeners.size(), 2u);  // the event stream and the metrics endpoint at least
  for (const Listener& listener : listeners) EXPECT_TRUE(listener.loopback) << "listens on " << listener.address;

  launcher.signal(SIGINT);
  const ChildResult run = launcher.wait(std::chrono::seconds(120));
  EXPECT_EQ(run.exit_code, 130) << run.describe();
  EXPECT_FALSE(fs::exists(stores[0])) << "the store's directory outlived the job";
}

}  // namespace
}  // namespace hybridshard::testing
