// Faults end to end: `hybridshard run` on the quickstart job (4 CPU ranks, runtime.timeout 10 s) with one rank made
// to die (SIGKILL), stop (SIGSTOP) or throw in each phase through HYBRIDSHARD_FAULT. The job must end within its
// timeout with exit 1 and a message naming the rank, its host and the phase; no rank process may be left; the run
// record must hold the events up to the fault, then rank_down and job_end. Also Ctrl-C (exit 130 at a phase
// boundary) and a job whose plan does not fit the device memory (refused before any rank starts).
#include <gtest/gtest.h>
#include <unistd.h>

#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "child_process.h"
#include "free_port.h"
#include "hybridshard/service/events/event_stream.h"
#include "hybridshard/service/observe/record.h"
#include "test_http_client.h"

namespace hybridshard::testing {
namespace {

namespace fs = std::filesystem;

struct Fault {
  std::string phase;   // init | train | enter | rollout | exit
  std::string action;  // kill | stop | error
  int rank;
};

std::string fault_name(const ::testing::TestParamInfo<Fault>& info) {
  return info.param.action + "_rank" + std::to_string(info.param.rank) + "_in_" + info.param.phase;
}

std::vector<Fault> every_fault() {
  std::vector<Fault> faults;
  int rank = 0;
  for (const char* phase : {"init", "train", "enter", "rollout", "exit"}) {
    for (const char* action : {"kill", "stop", "error"}) {
      faults.push_back({phase, action, rank});
      rank = (rank + 1) % 4;  // every rank takes its turn, rank 0 (the one that prints) included
    }
  }
  return faults;
}

// The job of these tests: the quickstart with a short timeout, two iterations, no HTTP endpoint.
std::string test_job(const std::map<std::string, std::string>& more = {}) {
  std::map<std::string, std::string> values = {{"timeout", "10s"}, {"iterations", "2"}, {"listen", "\"\""}};
  for (const auto& [key, value] : more) values[key] = value;
  return quickstart_with(values);
}

// Events of the record (final, or .partial when the launcher did not close it).
std::vector<nlohmann::json> read_record(const fs::path& path) {
  const std::string file = fs::exists(path) ? path.string() : path.string() + ".partial";
  service::RecordReadOptions options;
  options.accept_truncated_last_line = true;
  return service::RecordReader::open(file, options).read_all();
}

// The pids of the ranks, from their rank_up events.
std::set<long> rank_pids(const std::vector<nlohmann::json>& events) {
  std::set<long> pids;
  for (const nlohmann::json& event : events) {
    if (event.value("type", "") == "rank_up") pids.insert(event.value("pid", 0L));
  }
  return pids;
}

// Fails the test for every rank process still alive, and kills it.
void expect_no_rank_left(const std::set<long>& pids) {
  reap_orphans();
  for (long pid : pids) {
    EXPECT_FALSE(process_alive(static_cast<pid_t>(pid))) << "rank process " << pid << " is still running";
    if (process_alive(static_cast<pid_t>(pid))) {
      ::kill(static_cast<pid_t>(pid), SIGCONT);
      ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
  }
  reap_orphans();
}

class FaultTest : public ::testing::TestWithParam<Fault> {
 protected:
  static void SetUpTestSuite() { become_child_subreaper(); }
};

TEST_P(FaultTest, job_ends_naming_rank_host_and_phase_and_leaves_no_rank_behind) {
  const Fault& fault = GetParam();
  ScratchDir dir("fault");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << test_job();
  const fs::path record = dir / "run.jsonl";
  const std::string spec = std::to_string(fault.rank) + ":" + fault.phase + ":" + fault.action;

  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--record", record.string()},
                        {{"HYBRIDSHARD_FAULT", spec}}, dir / "launcher");
  // The job's own limit is its 10 s timeout after the fault; 90 s is the harness's, for a loaded CI machine.
  const ChildResult result = launcher.wait(std::chrono::seconds(90));
  ASSERT_FALSE(result.timed_out) << result.describe();
  EXPECT_EQ(result.exit_code, 1) << result.describe();

  const std::string expected_reason = fault.action == "kill"   ? "was killed by signal 9"
                                      : fault.action == "stop" ? "stopped answering"
                                                               : "exited with code 1";
  const std::string host = host_name();
  const std::string named = "rank " + std::to_string(fault.rank) + " on host " + host + " " + expected_reason;
  EXPECT_NE(result.out.find("hybridshard: failed: " + named), std::string::npos) << result.describe();
  EXPECT_NE(result.out.find("in phase " + fault.phase), std::string::npos) << result.describe();
  if (fault.phase != "init") {
    EXPECT_NE(result.out.find("in phase " + fault.phase + " of iteration 1"), std::string::npos) << result.describe();
  }

  // The record: closed (the launcher ended normally), the fault's phase begun, one rank_down naming the rank (the
  // other ranks' last events may follow it while they are stopped), and job_end last.
  EXPECT_TRUE(fs::exists(record)) << "no final record";
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
  const std::vector<nlohmann::json> events = read_record(record);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front().value("type", ""), "job");
  bool phase_begun = false;
  std::vector<nlohmann::json> downs;
  for (const nlohmann::json& event : events) {
    phase_begun = phase_begun || (event.value("type", "") == "phase_begin" && event.value("rank", -1) == fault.rank &&
                                  event.value("phase", "") == fault.phase);
    if (event.value("type", "") == "rank_down") downs.push_back(event);
  }
  EXPECT_TRUE(phase_begun) << "the record lacks rank " << fault.rank << "'s phase_begin of " << fault.phase;
  ASSERT_EQ(downs.size(), 1u);
  const nlohmann::json& down = downs.front();
  EXPECT_EQ(down.value("rank", -1), fault.rank);
  EXPECT_EQ(down.value("host", ""), host);
  EXPECT_EQ(down.value("phase", ""), fault.phase);
  EXPECT_NE(down.value("reason", "").find(expected_reason), std::string::npos) << down.dump();
  const nlohmann::json& end = events.back();
  EXPECT_EQ(end.value("type", ""), "job_end");
  EXPECT_FALSE(end.value("ok", true));
  EXPECT_NE(end.value("message", "").find(named), std::string::npos) << end.dump();

  const std::set<long> pids = rank_pids(events);
  EXPECT_EQ(pids.size(), 4u);
  expect_no_rank_left(pids);
}

INSTANTIATE_TEST_SUITE_P(EveryPhase, FaultTest, ::testing::ValuesIn(every_fault()), fault_name);

class OperatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { become_child_subreaper(); }

  // Starts a 500-iteration job with a record in a scratch directory named `name`; returns once its first iteration
  // has ended (a fatal failure when it does not within 90 s).
  void start_long_job(const std::string& name) {
    dir_.emplace(name);
    const fs::path job = *dir_ / "job.yaml";
    std::ofstream(job) << test_job({{"iterations", "500"}});
    record_ = *dir_ / "run.jsonl";
    launcher_.emplace(std::vector<std::string>{hybridshard_binary(), "run", job.string(), "--record", record_.string()},
                      std::map<std::string, std::string>{}, *dir_ / "launcher");
    ASSERT_TRUE(launcher_->wait_for_output(
        [](const std::string& out) { return out.find("iter 1/500  exit") != std::string::npos; },
        std::chrono::seconds(90)))
        << launcher_->wait(std::chrono::seconds(1)).describe();
  }

  std::optional<ScratchDir> dir_;
  fs::path record_;
  std::optional<ChildProcess> launcher_;
};

TEST_F(OperatorTest, ctrl_c_stops_every_rank_at_a_phase_boundary_with_exit_130) {
  ASSERT_NO_FATAL_FAILURE(start_long_job("ctrl-c"));
  ChildProcess& launcher = *launcher_;
  const fs::path& record = record_;
  // Neither the launcher nor a rank can die of a peer's closed socket: SIGPIPE is ignored (a rank used to die of it
  // when a peer failed first, and the launcher then named that rank).
  EXPECT_TRUE(ignores_signal(launcher.pid(), SIGPIPE)) << "the launcher";
  const std::vector<pid_t> ranks = child_pids(launcher.pid());
  EXPECT_EQ(ranks.size(), 4u);
  for (pid_t rank : ranks) EXPECT_TRUE(ignores_signal(rank, SIGPIPE)) << "rank process " << rank;
  launcher.signal(SIGINT);
  const ChildResult result = launcher.wait(std::chrono::seconds(90));
  ASSERT_FALSE(result.timed_out) << result.describe();
  EXPECT_EQ(result.exit_code, 130) << result.describe();
  EXPECT_NE(result.out.find("stopped by the operator at a phase boundary"), std::string::npos) << result.describe();

  // Every rank ended the same iteration with its exit phase, and nobody was reported down.
  const std::vector<nlohmann::json> events = read_record(record);
  std::map<int, int> last_exit_iteration;
  for (const nlohmann::json& event : events) {
    EXPECT_NE(event.value("type", ""), "rank_down") << event.dump();
    if (event.value("type", "") == "phase_end" && event.value("phase", "") == "exit") {
      last_exit_iteration[event.value("rank", -1)] = event.value("iteration", -1);
    }
  }
  ASSERT_EQ(last_exit_iteration.size(), 4u);
  for (const auto& [rank, iteration] : last_exit_iteration) {
    EXPECT_EQ(iteration, last_exit_iteration.begin()->second) << "rank " << rank;
    EXPECT_LT(iteration, 499) << "the job ran to its end instead of stopping";
  }
  EXPECT_EQ(events.back().value("type", ""), "job_end");
  expect_no_rank_left(rank_pids(events));
}

// The value of `name` in the environment of process `pid` ("" when absent).
std::string environment_of(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  for (std::string entry; std::getline(in, entry, '\0');) {
    if (entry.rfind(name + "=", 0) == 0) return entry.substr(name.size() + 1);
  }
  return "";
}

// Any local process can reach the launcher's event stream; without the job's secret it cannot speak for a rank: its
// hello is refused with one log line and the job goes on (it used to accept forged events of any rank).
TEST_F(OperatorTest, a_connection_without_the_jobs_secret_is_refused_and_the_job_goes_on) {
  ASSERT_NO_FATAL_FAILURE(start_long_job("forged"));
  ChildProcess& launcher = *launcher_;
  const fs::path& record = record_;
  const std::vector<pid_t> ranks = child_pids(launcher.pid());
  ASSERT_FALSE(ranks.empty());
  const std::string address = environment_of(ranks.front(), "HYBRIDSHARD_EVENTS");
  ASSERT_FALSE(address.empty());
  EXPECT_EQ(environment_of(ranks.front(), "HYBRIDSHARD_EVENTS_SECRET").size(), 32u);
  for (const std::string secret : {"", "00000000000000000000000000000000"}) {
    service::StreamHello forged;
    forged.rank = 1;
    forged.pid = 1;
    forged.secret = secret;
    try {
      service::EventStreamClient client(address, forged, std::chrono::seconds(10), std::chrono::seconds(1));
      ADD_FAILURE() << "a hello with secret '" << secret << "' was accepted";
    } catch (const service::StreamRefusedError& error) {
      EXPECT_NE(std::string(error.what()).find("wrong or missing job secret"), std::string::npos) << error.what();
    }
  }
  launcher.signal(SIGINT);
  const ChildResult result = launcher.wait(std::chrono::seconds(90));
  ASSERT_FALSE(result.timed_out) << result.describe();
  EXPECT_EQ(result.exit_code, 130) << result.describe();
  std::size_t refusals = 0;
  for (std::size_t at = 0;
       (at = result.err.find("refused rank 1: wrong or missing job secret", at)) != std::string::npos; ++at) {
    ++refusals;
  }
  EXPECT_EQ(refusals, 2u) << result.describe();
  for (const nlohmann::json& event : read_record(record))
    EXPECT_NE(event.value("type", ""), "rank_down") << event.dump();
}

// The value of the sample of `name` whose labels include every one of `labels` (`rank="2"`), from a /metrics text;
// nullopt when there is none.
std::optional<double> sample_value(const std::string& text, const std::string& name,
                                   const std::vector<std::string>& labels) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0 && line.rfind(name + " ", 0) != 0) continue;
    bool all = true;
    for (const std::string& label : labels) all = all && line.find(label) != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

TEST_F(OperatorTest, metrics_after_a_fault_say_what_happened_and_keep_what_came_before) {
  ScratchDir dir("fault-metrics");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << test_job();
  const int port = free_loopback_port();
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--metrics-listen",
                         "127.0.0.1:" + std::to_string(port), "--linger", "60"},
                        {{"HYBRIDSHARD_FAULT", "2:enter:kill"}}, dir / "launcher");
  ASSERT_TRUE(launcher.wait_for_output(
      [](const std::string& out) { return out.find("hybridshard: serving") != std::string::npos; },
      std::chrono::seconds(90)))
      << launcher.wait(std::chrono::seconds(1)).describe();
  EXPECT_NE(launcher.out().find("failed: rank 2"), std::string::npos) << launcher.out();
  const RawHttpResponse metrics = http_get(port, "/metrics");
  ASSERT_EQ(metrics.status, 200) << metrics.head;
  EXPECT_EQ(sample_value(metrics.body, "hybridshard_job_state", {"state=\"failed\""}), 1.0) << metrics.body;
  EXPECT_EQ(sample_value(metrics.body, "hybridshard_rank_up", {"rank=\"2\""}), 0.0) << metrics.body;
  // What came before the fault: rank 2 finished the train phase of the first iteration (its enter began), and its
  // enter never ended. (The other ranks may have been killed mid-train: they run the phase at their own pace.)
  EXPECT_EQ(sample_value(metrics.body, "hybridshard_phase_duration_seconds_count", {"rank=\"2\"", "phase=\"train\""}),
            1.0)
      << metrics.body;
  const std::optional<double> enters =
      sample_value(metrics.body, "hybridshard_phase_duration_seconds_count", {"rank=\"2\"", "phase=\"enter\""});
  EXPECT_TRUE(!enters.has_value() || *enters == 0.0) << metrics.body;
  const RawHttpResponse status = http_get(port, "/status");
  ASSERT_EQ(status.status, 200);
  const nlohmann::json document = nlohmann::json::parse(status.body);
  EXPECT_EQ(document.value("state", ""), "failed");
  EXPECT_NE(document.value("message", "").find("rank 2"), std::string::npos) << document.dump(1);
}

TEST_F(OperatorTest, a_job_that_does_not_fit_the_device_memory_is_refused_with_its_plan) {
  ScratchDir dir("no-fit");
  const fs::path job = dir / "job.yaml";
  std::ofstream(job) << test_job({{"cpu_device_memory", "1MiB"}});
  const fs::path record = dir / "run.jsonl";
  ChildProcess launcher({hybridshard_binary(), "run", job.string(), "--record", record.string()}, {}, dir / "launcher");
  const ChildResult result = launcher.wait(std::chrono::seconds(60));
  ASSERT_FALSE(result.timed_out) << result.describe();
  EXPECT_EQ(result.exit_code, 1) << result.describe();
  EXPECT_NE(result.err.find("does not fit the device memory"), std::string::npos) << result.describe();
  EXPECT_NE(result.err.find("DOES NOT FIT"), std::string::npos) << "the plan is not printed\n" << result.describe();
  EXPECT_EQ(result.out.find("4 ranks"), std::string::npos) << "ranks were started\n" << result.describe();
  EXPECT_FALSE(fs::exists(record));
  EXPECT_FALSE(fs::exists(record.string() + ".partial"));
}

}  // namespace
}  // namespace hybridshard::testing
