#include "hybridshard/service/serve/job_directory.h"

#include <algorithm>
#include <ctime>
#include <filesystem>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {
namespace {

constexpr const char* kCleanExit = "exited";

std::string utc_stamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y%m%dT%H%M%SZ", &utc);
  return text;
}

// DIR/<name>-<UTC start>.jsonl, with a counter when that exists already.
std::string record_path_for(const std::string& dir, const std::string& name) {
  const std::string base = (std::filesystem::path(dir) / (name + "-" + utc_stamp())).string();
  std::string path = base + ".jsonl";
  for (int counter = 2; std::filesystem::exists(path) || std::filesystem::exists(path + ".partial"); ++counter) {
    path = base + "-" + std::to_string(counter) + ".jsonl";
  }
  return path;
}

}  // namespace

std::string job_name_problem(const std::string& name) {
  if (name.empty()) return "no job name (set HYBRIDSHARD_JOB)";
  if (name.size() > 64) return "longer than 64 characters";
  if (name.front() == '.') return "starts with '.'";
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return "has a character other than letters, digits, '.', '_' and '-'";
  }
  return "";
}

JobDirectory::JobDirectory(JobDirectoryOptions options) : options_(std::move(options)) {}

JobDirectory::Entry* JobDirectory::live_entry(const std::string& name) {
  for (Entry& entry : entries_) {
    if (!entry.ended && entry.job->name() == name) return &entry;
  }
  return nullptr;
}

std::string JobDirectory::admit(const StreamHello& hello) {
  const std::string problem = job_name_problem(hello.job);
  if (!problem.empty()) return "job name '" + hello.job + "': " + problem;
  std::lock_guard lock(mutex_);
  Entry* entry = live_entry(hello.job);
  if (entry != nullptr) {
    if (entry->instance != hello.instance) {
      return "a job named '" + hello.job + "' is already running (run " + entry->instance +
             "); give this one another name (HYBRIDSHARD_JOB)";
    }
    if (!secrets_match(entry->secret, hello.secret)) {
      return "wrong or missing secret for job '" + hello.job + "' (HYBRIDSHARD_EVENTS_SECRET)";
    }
    if (hello.world_size > 0 && entry->world_size > 0 && hello.world_size != entry->world_size) {
      return "job '" + hello.job + "' has " + std::to_string(entry->world_size) + " ranks, this rank says " +
             std::to_string(hello.world_size);
    }
    auto link = entry->ranks.find(hello.rank);
    if (link != entry->ranks.end() && link->second.connected) {
      return "rank " + std::to_string(hello.rank) + " of job '" + hello.job + "' is already connected";
    }
    if (link != entry->ranks.end()) {
      return "rank " + std::to_string(hello.rank) + " of job '" + hello.job + "' has already left";
    }
  } else {
    // A new run of this name replaces an ended one.
    std::erase_if(entries_, [&](const Entry& old) { return old.ended && old.job->name() == hello.job; });
    Entry fresh;
    try {
      const std::string record = options_.record_dir.empty() ? "" : record_path_for(options_.record_dir, hello.job);
      fresh.job = std::make_shared<ObservedJob>(hello.job, options_.limits, record);
    } catch (const core::Error& error) {
      return "cannot record job '" + hello.job + "': " + error_message(error);
    }
    fresh.instance = hello.instance;
    fresh.secret = hello.secret;
    entries_.push_back(std::move(fresh));
    entry = &entries_.back();
    if (options_.log) {
      options_.log("job '" + hello.job + "' opened by rank " + std::to_string(hello.rank) + " (run " + hello.instance +
                   ")" + (entry->job->record_path().empty() ? "" : ", recording to " + entry->job->record_path()));
    }
  }
  if (hello.world_size > 0) entry->world_size = hello.world_size;
  if (entry->world_size > 0 && hello.rank >= entry->world_size) {
    return "rank " + std::to_string(hello.rank) + " is outside job '" + hello.job + "' of " +
           std::to_string(entry->world_size) + " ranks";
  }
  RankLink& link = entry->ranks[hello.rank];
  link.connected = true;
  link.last_seen = Clock::now();
  ++list_generation_;
  return "";
}

void JobDirectory::deliver(const StreamHello& hello, JobEvent&& event) {
  std::shared_ptr<ObservedJob> job;
  {
    std::lock_guard lock(mutex_);
    Entry* entry = live_entry(hello.job);
    if (entry == nullptr) HS_THROW(core::Error, "job '" + hello.job + "' is not open");
    auto link = entry->ranks.find(hello.rank);
    if (link != entry->ranks.end()) link->second.last_seen = Clock::now();
    job = entry->job;
  }
  job->apply(std::move(event));
}

void JobDirectory::alive(const StreamHello& hello) {
  std::lock_guard lock(mutex_);
  if (Entry* entry = live_entry(hello.job)) {
    auto link = entry->ranks.find(hello.rank);
    if (link != entry->ranks.end()) link->second.last_seen = Clock::now();
  }
}

void JobDirectory::rank_down(Entry& entry, int rank, const std::string& reason) {
  RankLink& link = entry.ranks[rank];
  if (link.down) return;
  link.down = true;
  std::string host;
  std::string phase;
  int iteration = -1;
  entry.job->state().read([&](const JobFold& fold) {
    auto it = fold.ranks.find(rank);
    if (it == fold.ranks.end()) return;
    host = it->second.host;
    phase = it->second.phase.empty() ? it->second.last_phase : it->second.phase;
    iteration = it->second.iteration;
  });
  try {
    entry.job->apply(rank_down_event(rank, host, reason, phase, core::wall_time_now(), iteration));
  } catch (const core::Error&) {
    // A rank beyond the job's world never got into the fold; nothing to mark.
  }
}

void JobDirectory::left(const StreamHello& hello) {
  std::lock_guard lock(mutex_);
  Entry* entry = live_entry(hello.job);
  if (entry == nullptr) return;
  auto link = entry->ranks.find(hello.rank);
  if (link == entry->ranks.end()) return;
  link->second.connected = false;
  // Clean: it left between phases, after its last iteration when the job says how many.
  bool clean = false;
  std::string where = "before any phase";
  entry->job->state().read([&](const JobFold& fold) {
    auto it = fold.ranks.find(hello.rank);
    if (it == fold.ranks.end() || it->second.last_phase.empty()) return;
    const RankState& rank = it->second;
    where = "in phase " + (rank.phase.empty() ? rank.last_phase : rank.phase) +
            (rank.iteration >= 0 ? " of iteration " + std::to_string(rank.iteration + 1) : "");
    const int iterations = fold.description.is_object() ? fold.description.value("iterations", 0) : 0;
    clean = rank.phase.empty() && (iterations <= 0 || (rank.iteration >= iterations - 1 && rank.last_phase == "exit"));
  });
  rank_down(*entry, hello.rank, clean ? kCleanExit : "disconnected " + where);
  end_if_done(*entry);
  ++list_generation_;
}

void JobDirectory::end_if_done(Entry& entry) {
  if (entry.ended) return;
  int world_size = entry.world_size;
  entry.job->state().read([&](const JobFold& fold) { world_size = std::max(world_size, fold.world_size); });
  const int known = world_size > 0 ? world_size : static_cast<int>(entry.ranks.size());
  std::string failure;
  for (int rank = 0; rank < known; ++rank) {
    auto link = entry.ranks.find(rank);
    if (link == entry.ranks.end() || !link->second.down || link->second.connected) return;
  }
  entry.job->state().read([&](const JobFold& fold) {
    for (const auto& [index, rank] : fold.ranks) {
      if (failure.empty() && rank.down_reason != kCleanExit) {
        failure = "rank " + std::to_string(index) + (rank.host.empty() ? "" : " on host " + rank.host) + " " +
                  rank.down_reason;
      }
    }
  });
  double started = 0;
  entry.job->state().read([&](const JobFold& fold) { started = fold.started; });
  const double now = core::wall_time_now();
  const std::string message = failure.empty() ? "all " + std::to_string(known) + " ranks finished" : failure;
  entry.job->apply(job_end_event(failure.empty(), message, started > 0 ? now - started : 0, now));
  entry.ended = true;
  entry.ended_at = Clock::now();
  entry.ended_wall = now;
  if (options_.log) {
    options_.log("job '" + entry.job->name() + "' " + (failure.empty() ? "finished: " : "failed: ") + message);
  }
  try {
    entry.job->close();
  } catch (const core::Error& error) {
    std::fprintf(stderr, "hybridshard serve: job '%s': %s\n", entry.job->name().c_str(), error.what());
  }
}

void JobDirectory::sweep(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  for (Entry& entry : entries_) {
    if (entry.ended) continue;
    for (auto& [rank, link] : entry.ranks) {
      if (link.connected && !link.down && now - link.last_seen > options_.timeout) {
        rank_down(entry, rank, "stopped answering (no event for " + std::to_string(options_.timeout.count()) + " s)");
        ++list_generation_;
      }
    }
  }
  const auto before = entries_.size();
  std::erase_if(entries_, [&](const Entry& entry) { return entry.ended && now - entry.ended_at > options_.retention; });
  if (entries_.size() != before) ++list_generation_;
}

std::vector<std::shared_ptr<const ObservedJob>> JobDirectory::jobs() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<const ObservedJob>> result;
  for (const Entry& entry : entries_) result.push_back(entry.job);
  return result;
}

std::uint64_t JobDirectory::generation() const {
  std::lock_guard lock(mutex_);
  std::uint64_t generation = list_generation_;
  for (const Entry& entry : entries_) generation += entry.job->generation();
  return generation;
}

nlohmann::json JobDirectory::describe(const ObservedJob& job) const {
  std::lock_guard lock(mutex_);
  for (const Entry& entry : entries_) {
    if (entry.job.get() != &job) continue;
    return {{"instance", entry.instance},
            {"live", !entry.ended},
            {"ended_at", entry.ended ? nlohmann::json(entry.ended_wall) : nlohmann::json(nullptr)},
            {"record", entry.job->record_path()}};
  }
  return nlohmann::json::object();
}

}  // namespace hybridshard::service
