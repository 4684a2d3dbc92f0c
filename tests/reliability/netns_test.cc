// Multi-host over real network namespaces: two "hosts" (namespaces this test makes, joined by a veth pair with the
// TEST-NET addresses 192.0.2.1/24 and 192.0.2.2/24), two hybridshard-rank processes in each, started the way an
// external launcher would: host A torchrun-style (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), host B
// Slurm-style (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID), MASTER_ADDR on host A, rank 0 hosting the store. The
// quickstart job must run across them over Gloo to success, and its bytes must have crossed the veth pair. The
// namespaces go away at the end whatever happens.
//
// Needs root and iproute2 (`ip netns`); exits 77 (skipped) otherwise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "child_process.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;

const char* ip_binary() {
  for (const char* candidate : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(candidate, X_OK) == 0) return candidate;
  }
  return nullptr;
}

// Runs `ip ARGS` quietly; true when it succeeded.
bool ip(const std::string& arguments) {
  const std::string command = std::string(ip_binary()) + " " + arguments + " >/dev/null 2>&1";
  return std::system(command.c_str()) == 0;
}

std::string ip_output(const std::string& arguments) {
  const std::string command = std::string(ip_binary()) + " " + arguments + " 2>&1";
  std::string text;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) text.append(buffer, n);
    ::pclose(pipe);
  }
  return text;
}

// Two namespaces joined by a veth pair; removed in the destructor (removing a namespace removes its veth end).
class TwoHosts {
 public:
  TwoHosts() {
    const std::string tag = std::to_string(::getpid() % 100000);
    ns_a_ = "hs-host-a-" + tag;
    ns_b_ = "hs-host-b-" + tag;
    veth_a_ = "hsva" + tag;  // interface names: at most 15 characters
    veth_b_ = "hsvb" + tag;
    remove();
    ok_ = ip("netns add " + ns_a_) && ip("netns add " + ns_b_) &&
          ip("link add " + veth_a_ + " type veth peer name " + veth_b_) &&
          ip("link set " + veth_a_ + " netns " + ns_a_) && ip("link set " + veth_b_ + " netns " + ns_b_) &&
          ip("-n " + ns_a_ + " addr add 192.0.2.1/24 dev " + veth_a_) &&
          ip("-n " + ns_b_ + " addr add 192.0.2.2/24 dev " + veth_b_) && ip("-n " + ns_a_ + " link set lo up") &&
          ip("-n " + ns_b_ + " link set lo up") && ip("-n " + ns_a_ + " link set " + veth_a_ + " up") &&
          ip("-n " + ns_b_ + " link set " + veth_b_ + " up");
  }
  ~TwoHosts() { remove(); }
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;

  bool ok() const { return ok_; }
  const std::string& ns_a() const { return ns_a_; }
  const std::string& ns_b() const { return ns_b_; }
  const std::string& veth_a() const { return veth_a_; }
  const std::string& veth_b() const { return veth_b_; }

  // Bytes received on host A's end of the pair (what host B sent to it).
  long long received_by_a() const {
    const std::string text = ip_output("-n " + ns_a_ + " -s link show " + veth_a_);
    // "RX:  bytes packets ..." then the numbers on the next line.
    const std::size_t rx = text.find("RX:");
    if (rx == std::string::npos) return -1;
    const std::size_t line = text.find('\n', rx);
    return line == std::string::npos ? -1 : std::atoll(text.c_str() + line + 1);
  }

 private:
  void remove() {
    ip("netns del " + ns_a_);
    ip("netns del " + ns_b_);
    ip("link del " + veth_a_);  // only left over when moving it into a namespace failed
  }

  std::string ns_a_, ns_b_, veth_a_, veth_b_;
  bool ok_ = false;
};

TEST(NetnsTest, quickstart_runs_across_two_hosts_over_gloo) {
  TwoHosts hosts;
  ASSERT_TRUE(hosts.ok()) << "could not make the namespaces and the veth pair";

  ScratchDir dir("netns");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << quickstart_with({{"timeout", "20s"}, {"listen", "\"\""}});

  const std::string port = "29500";  // each namespace has its own ports: no clash with this host's
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int rank = 0; rank < 4; ++rank) {
    const bool on_a = rank < 2;
    const std::string local = std::to_string(rank % 2);
    std::map<std::string, std::string> environment = {{"MASTER_ADDR", "192.0.2.1"},
                                                      {"MASTER_PORT", port},
                                                      {"GLOO_SOCKET_IFNAME", on_a ? hosts.veth_a() : hosts.veth_b()},
                                                      // Nothing of this process's own launch environment may leak in.
                                                      {"HYBRIDSHARD_EVENTS", ""},
                                                      {"HYBRIDSHARD_LAUNCHER", ""},
                                                      {"TORCHELASTIC_USE_AGENT_STORE", ""}};
    if (on_a) {  // torchrun
      environment.insert(
          {{"RANK", std::to_string(rank)}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", local}, {"LOCAL_WORLD_SIZE", "2"}});
    } else {  // Slurm (srun)
      environment.insert({{"RANK", ""},
                          {"WORLD_SIZE", ""},
                          {"SLURM_PROCID", std::to_string(rank)},
                          {"SLURM_NTASKS", "4"},
                          {"SLURM_LOCALID", local}});
    }
    ranks.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{ip_binary(), "netns", "exec", on_a ? hosts.ns_a() : hosts.ns_b(), rank_binary(),
                                 "--job", job.string()},
        environment, dir / ("rank" + std::to_string(rank))));
  }

  std::vector<ChildResult> results;
  for (auto& rank : ranks) results.push_back(rank->wait(std::chrono::seconds(180)));
  for (std::size_t rank = 0; rank < results.size(); ++rank) {
    EXPECT_FALSE(results[rank].timed_out) << "rank " << rank << ": " << results[rank].describe();
    EXPECT_EQ(results[rank].exit_code, 0) << "rank " << rank << ": " << results[rank].describe();
  }
  // Without our launcher, rank 0 prints the progress: every iteration's exit phase.
  EXPECT_NE(results[0].out.find("] iter 3  exit"), std::string::npos) << results[0].describe();
  // The job's traffic crossed the pair: enter alone moves about 0.3 MiB per rank per iteration.
  EXPECT_GT(hosts.received_by_a(), 256 * 1024) << ip_output("-n " + hosts.ns_a() + " -s link show " + hosts.veth_a());
}

}  // namespace
}  // namespace hybridshard::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "netns_test: skipped: needs root to make network namespaces\n");
    return 77;
  }
  if (hybridshard::testing::ip_binary() == nullptr || !hybridshard::testing::ip("netns list")) {
    std::fprintf(stderr, "netns_test: skipped: iproute2 with network namespace support is missing\n");
    return 77;
  }
  return RUN_ALL_TESTS();
}
