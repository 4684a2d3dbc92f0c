// The fold: the one place where a job's events become its state — per rank (up, phase, iteration, memory, buffers,
// bytes moved, phase durations, checks) and for the job (description, state, message). The launcher's progress
// line, GET /status, the Prometheus metrics and the record all read this state; the dashboard's replay follows the
// same rules (tests/gui/tst_foldcontract.cpp replays one record through both and compares).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "hybridshard/core/events.h"
#include "hybridshard/service/events/job_event.h"
#include "hybridshard/service/observe/bucketed_history.h"

namespace hybridshard::service {

// What a rank's history may hold, whatever the job's length (docs/record-format.md, "Status"): the newest samples and
// phase intervals at full rate, and the whole job in history_buckets buckets (bucketed_history.h) of memory (the
// lowest and the highest sample of each) and of phases (seconds per phase in each).
struct JobStateLimits {
  std::size_t memory_samples_per_rank = 600;             // newest kept at full rate
  std::size_t phases_per_rank = 200;                     // newest phase intervals kept
  std::size_t history_buckets = kDefaultHistoryBuckets;  // of the whole job's memory, and of its phases
  std::size_t phase_names_per_rank = 32;  // distinct phase names counted (a misbehaving rank cannot grow it)
};

// Buckets of the phase duration histogram (hybridshard_phase_duration_seconds): 1 ms to 60 s.
const std::vector<double>& phase_duration_buckets();

// The phases every rank goes through, in order (others may come; they are counted up to phase_names_per_rank).
inline constexpr std::array<const char*, 6> kStandardPhases = {"init", "train", "enter", "rollout", "exit", "shutdown"};

struct BufferState {
  std::string name;
  core::BufferKind kind = core::BufferKind::kParams;
  core::DType dtype = core::DType::kBFloat16;
  std::int64_t bytes = 0;
  core::Residency residency = core::Residency::kNone;
  double since = 0;
  std::string shape;
};

// `sequence`, `changed`: the fold's sequence number (JobFold::sequence) of the event that made or last changed the
// thing; what a status document since a cursor holds (status_json(fold, since)).
// A memory sample's figures (docs/metrics.md, "Memory"): device_used = tracked + cached + untracked.
struct MemorySampleState {
  double time = 0;
  std::int64_t device_used = 0;
  std::int64_t device_total = 0;
  std::int64_t tracked = 0;
  std::int64_t cached = 0;       // device memory in the device's cache
  std::int64_t cached_host = 0;  // pinned host memory in the device's cache
  BytesByKind by_kind;
  std::uint64_t sequence = 0;
};

// What others hold on the device (CUDA context, NCCL, libraries, other processes): used - tracked - cached. Negative
// only when the figures were not read together (a sample reads them at once: Device::memory()).
std::int64_t untracked_bytes(std::int64_t device_used, std::int64_t tracked, std::int64_t cached);

struct PhaseInterval {
  int iteration = -1;
  std::string phase;
  double begin = 0;
  double end = -1;  // < 0: still running
  std::uint64_t changed = 0;
};

// A memory history bucket: its lowest and its highest sample by device_used (ties: by tracked, then the earlier).
struct MemoryBucket {
  MemorySampleState low;
  MemorySampleState high;
  std::uint64_t changed = 0;
  void add(const MemorySampleState& sample);
  void merge(const MemoryBucket& later);
};

// A phase history bucket: seconds each phase ran within it (ended intervals only), the newest iteration among them.
struct PhaseBucket {
  std::map<std::string, double> seconds;
  int iteration = -1;
  std::uint64_t changed = 0;
  void merge(const PhaseBucket& later);
};

struct PhaseDurations {
  std::vector<std::uint64_t> buckets;  // per bucket of phase_duration_buckets() (not cumulative)
  std::uint64_t count = 0;
  double sum = 0;
};

struct CheckState {
  std::string name;
  bool ok = true;
  std::string detail;
  double time = 0;
};

struct RankState {
  int rank = 0;
  std::string host;
  long pid = 0;
  bool up = false;    // between rank_up and rank_down
  bool down = false;  // rank_down seen (and no rank_up since)
  std::string device;
  std::string down_reason;
  std::string phase;       // the phase in progress ("" between phases)
  double phase_since = 0;  // when it began (or when the last one ended)
  std::string last_phase;  // the phase begun last (stays after it ended): where a failure happened
  int iteration = -1;
  double last_event_time = 0;  // of the newest event of the rank (0: none yet)
  std::int64_t device_used = 0;
  std::int64_t device_total = 0;
  std::int64_t tracked = 0;
  std::int64_t cached = 0;       // device memory in the device's cache
  std::int64_t cached_host = 0;  // pinned host memory in the device's cache
  double last_enter_seconds = 0;
  double last_exit_seconds = 0;
  std::int64_t last_enter_network_bytes = 0;  // sent and received in the last completed enter
  std::int64_t enter_network_bytes = 0;       // sent and received so far in the enter in progress
  bool in_enter = false;
  std::array<std::int64_t, 4> moved_bytes{};  // by core::TransferPath, since the start
  std::int64_t check_failures = 0;
  std::optional<CheckState> last_check;
  std::vector<std::string> phase_names;             // the standard phases, then others in order of appearance
  std::map<std::string, PhaseDurations> durations;  // of the phases that ended (named in phase_names)
  std::vector<BufferState> buffers;                 // in creation order
  std::deque<MemorySampleState> memory;             // the newest samples, as they came
  std::deque<PhaseInterval> phases;                 // the newest intervals, in order of their begin events
  BucketedHistory<MemoryBucket> memory_history;     // every sample of the job
  BucketedHistory<PhaseBucket> phase_history;       // every ended interval of the job
  std::uint64_t changed = 0;          // sequence of the last event of this rank (the rank's fields may have changed)
  std::uint64_t buffers_changed = 0;  // sequence of the last change to `buffers`
};

// A phase that every rank of the job has now ended in one iteration: the launcher's progress line.
struct PhaseRound {
  int iteration = -1;
  std::string phase;
  double max_seconds = 0;
  std::int64_t network_bytes = 0;  // sum over ranks of each rank's network bytes of that enter (sent and received)
  std::int64_t max_device_used = 0;
  std::int64_t max_device_total = 0;
};

struct JobFold {
  nlohmann::json description;  // the job event's fields; null until it arrives
  int world_size = 0;
  std::string state = "starting";  // "starting", "running", "finished", "failed"
  std::string message;
  double time = 0;     // of the newest event
  double started = 0;  // of the job event (or the first event)
  std::map<int, RankState> ranks;
  std::uint64_t sequence = 0;     // events applied so far: every change is stamped with the sequence of its event
  std::uint64_t job_changed = 0;  // sequence of the job event
  std::uint64_t epoch = 0;        // tells this fold's sequence numbers from another's (a job replaced under serve)
  JobStateLimits limits;
};

// Thread-safe: apply() from the event stream, the readers from the HTTP server's threads.
class JobState {
 public:
  explicit JobState(JobStateLimits limits = {});

  // Applies one event. Returns the phase round this event completed, if it did. Throws core::Error, changing
  // nothing, for an event that contradicts the job (a rank beyond its world).
  std::optional<PhaseRound> apply(const JobEvent& event);
  // Decodes and applies (for tests and tools that hold JSON): throws core::Error, changing nothing, when malformed.
  void apply(const nlohmann::json& event);
  void apply(const core::Event& event);

  // Runs `reader` on the folded state, under the lock.
  void read(const std::function<void(const JobFold&)>& reader) const;

  // The status document (docs/record-format.md, "Status"). "time" is the time of the newest event applied (so a
  // replay gives the same document).
  nlohmann::json status_json() const;
  // What changed since the document whose "cursor" is `cursor` (docs/record-format.md, "Incremental status"); the
  // full document when the cursor is of another fold (another epoch) or ahead of this one. Throws core::Error
  // naming the cursor when it does not parse.
  nlohmann::json status_json_since(const std::string& cursor) const;

  // Bytes resident on the device per buffer kind for `rank` (every kind present, 0 if none): the by_kind of a memory
  // sample, for samples that come without one.
  BytesByKind gpu_bytes_by_kind(int rank) const;

  std::string state() const;  // "starting", "running", "finished", "failed"

 private:
  RankState& rank_locked(int rank);
  void apply_rank_event(RankState& rank, const JobEvent& event);
  std::optional<PhaseRound> complete_round(const RankState& rank, const core::Event& end);

  struct RoundProgress {
    int ranks_done = 0;
    double max_seconds = 0;
    std::int64_t network_bytes = 0;
  };

  mutable std::mutex mutex_;
  JobFold fold_;
  std::map<std::pair<int, std::string>, RoundProgress> rounds_;  // (iteration, phase) not yet ended everywhere
};

// The status document of a folded job: everything (since == 0), or what changed after sequence `since`.
nlohmann::json status_json(const JobFold& fold, std::uint64_t since = 0);

// The cursor of a fold's current state ("<epoch>-<sequence>"), and its reading: false when `cursor` does not parse.
std::string status_cursor(const JobFold& fold);
bool parse_status_cursor(const std::string& cursor, std::uint64_t* epoch, std::uint64_t* sequence);

}  // namespace hybridshard::service
