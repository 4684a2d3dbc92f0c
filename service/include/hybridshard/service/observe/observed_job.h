// One job as its watcher sees it: the fold of its events (JobState) and its run record, fed one decoded event at a
// time, in order. The launcher of `hybridshard run` holds one; `hybridshard serve` one per job.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "hybridshard/service/events/job_event.h"
#include "hybridshard/service/observe/job_state.h"
#include "hybridshard/service/observe/record.h"

namespace hybridshard::service {

class ObservedJob {
 public:
  // `record`: the run record's path ("" for none); throws core::Error naming it when it cannot be created.
  ObservedJob(std::string name, JobStateLimits limits, const std::string& record, RecordOptions record_options = {});
  ~ObservedJob();
  ObservedJob(const ObservedJob&) = delete;
  ObservedJob& operator=(const ObservedJob&) = delete;

  // One event: a memory sample without by_kind gets it from the fold, then the fold and the record take it.
  // Thread-safe; events reach the fold and the record in the order of the calls. Returns the phase round the event
  // completed (the launcher's progress line). Throws core::Error, recording nothing, for an event that contradicts
  // the job (a rank beyond its world).
  std::optional<PhaseRound> apply(JobEvent event);

  const std::string& name() const { return name_; }
  const JobState& state() const { return state_; }
  std::uint64_t generation() const { return generation_.load(); }  // bumped by every event applied
  std::string record_path() const;                                 // "" without a record
  std::string record_failure() const;         // "" while the record is whole (RecordWriter::failure)
  std::string stale_record_moved_to() const;  // RecordWriter::stale_partial_moved_to

  // Closes (renames into place) the record. Idempotent; throws when the record cannot be finished.
  void close();

 private:
  std::string name_;
  JobState state_;
  std::unique_ptr<RecordWriter> record_;
  std::mutex order_mutex_;
  std::atomic<std::uint64_t> generation_{1};
};

}  // namespace hybridshard::service
