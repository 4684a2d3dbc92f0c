// The jobs `hybridshard serve` watches: any number at once, each named by its ranks' hello (HYBRIDSHARD_JOB), each
// with its own fold and record (ObservedJob). A job opens with its first rank's hello, ends when every rank of it has
// disconnected (ok when each left between phases after its last iteration), and stays visible until the retention
// passes. A second live job with the name of a running one is refused (the hello's instance tells runs apart).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "hybridshard/service/events/event_stream.h"
#include "hybridshard/service/events/job_event.h"
#include "hybridshard/service/observe/observed_job.h"

namespace hybridshard::service {

struct JobDirectoryOptions {
  std::string record_dir;                // "" for no records; else DIR/<job>-<UTC start>.jsonl per job
  std::chrono::seconds retention{3600};  // how long an ended job stays visible
  std::chrono::seconds timeout{120};     // a connected rank silent this long is marked down ("stopped answering")
  JobStateLimits limits;
  std::function<void(const std::string& line)> log;  // a line when a job opens and when it ends; may be empty
};

// A job name: 1 to 64 of [A-Za-z0-9._-], not starting with '.'. Returns "" when valid, else what is wrong.
std::string job_name_problem(const std::string& name);

class JobDirectory {
 public:
  using Clock = std::chrono::steady_clock;

  explicit JobDirectory(JobDirectoryOptions options);

  // The hello of a rank: "" when it joins its job (opening it when new), else why it is refused.
  std::string admit(const StreamHello& hello);
  // One decoded event of that rank. Throws core::Error for an event that contradicts its job.
  void deliver(const StreamHello& hello, JobEvent&& event);
  // Any line from that rank.
  void alive(const StreamHello& hello);
  // Its connection ended: the rank is down; the job ends when every rank is.
  void left(const StreamHello& hello);
  // Marks silent ranks down and drops jobs whose retention passed (call every second or so).
  void sweep(Clock::time_point now = Clock::now());

  // The jobs to show, oldest first (live ones and ended ones within their retention).
  std::vector<std::shared_ptr<const ObservedJob>> jobs() const;
  std::uint64_t generation() const;  // changes whenever a job or the list changes
  // {"instance", "live", "ended_at" (epoch seconds or null), "record"} of a listed job.
  nlohmann::json describe(const ObservedJob& job) const;

 private:
  struct RankLink {
    bool connected = false;
    bool down = false;
    Clock::time_point last_seen;
  };
  struct Entry {
    std::shared_ptr<ObservedJob> job;
    std::string instance;
    std::string secret;  // the first hello's: every later hello of this run must present it
    int world_size = 0;  // from the hellos (0: not said)
    std::map<int, RankLink> ranks;
    bool ended = false;
    Clock::time_point ended_at;
    double ended_wall = 0;
  };

  Entry* live_entry(const std::string& name);
  void rank_down(Entry& entry, int rank, const std::string& reason);
  void end_if_done(Entry& entry);

  JobDirectoryOptions options_;
  mutable std::mutex mutex_;
  std::list<Entry> entries_;  // oldest first
  std::uint64_t list_generation_ = 1;
};

}  // namespace hybridshard::service
