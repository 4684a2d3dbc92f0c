// Ranks of one communicator that all run on one host meet through a small segment of POSIX shared memory
// (shm_open): a barrier in microseconds where a collective through the device costs hundreds (NCCL's enqueue of one
// small all-gather on a non-blocking communicator: 150-240 us on 2 x H200, session 7). The NCCL communicator's peer
// path uses it for the line-up before a landing pass and the barrier after it when every rank shares the host.
//
// One rank creates the segment under a fresh name (O_EXCL, mode 0600: the same user only) and passes the name to the
// others (share_memory's records); each joins; once all have joined, the creator removes the name (the mappings
// stay), so nothing is left in /dev/shm by a process that dies later.
//
// Meeting n (a rank's n-th call of meet) posts the rank's flags for n and waits until every rank has posted n. The
// flags of two meetings in a row live apart, so a rank that has gone on to meeting n + 1 does not overwrite what a
// slower rank still reads of meeting n (it cannot reach n + 2 before that rank has posted n + 1).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hybridshard::core::detail {

class HostMeeting {
 public:
  using Clock = std::chrono::steady_clock;

  // What one meeting came to.
  struct Outcome {
    enum class State : std::uint8_t { kMet, kTimedOut, kAbandoned, kAborted };
    State state = State::kMet;
    std::uint64_t flags = 0;   // kMet: every rank's flags OR-ed
    std::vector<int> missing;  // kTimedOut: the ranks that had not arrived
    int abandoned_by = -1;     // kAbandoned: the rank that gave up
  };

  // A new segment for `size` ranks; nullptr with `why` set when the system refuses one.
  static std::unique_ptr<HostMeeting> create(int size, std::string& why);
  // The segment named `name`, made for `size` ranks; nullptr with `why` set when it cannot be opened or was made for
  // another number of ranks.
  static std::unique_ptr<HostMeeting> join(const std::string& name, int size, std::string& why);

  ~HostMeeting();
  HostMeeting(const HostMeeting&) = delete;
  HostMeeting& operator=(const HostMeeting&) = delete;

  const std::string& name() const { return name_; }
  // Removes the name from the system (the creator, once every rank has joined); the segment stays mapped.
  void forget_name();

  // This rank's next meeting: posts `flags` and waits until every rank has posted the same meeting, until `deadline`
  // or until `aborted()` says so (polled while waiting). `rank` is this rank's slot, the same in every call.
  Outcome meet(int rank, std::uint64_t flags, Clock::time_point deadline, const std::function<bool()>& aborted);

  // Every rank's meetings, now and later, end at once as kAbandoned (this rank failed: nobody waits for it).
  void abandon(int rank);

 private:
  struct Header;
  struct Slot;
  HostMeeting(std::string name, void* mapping, std::size_t bytes, int size, bool owner);
  Header& header() const;
  Slot& slot(int rank) const;

  std::string name_;
  void* mapping_;
  std::size_t bytes_;
  int size_;
  bool named_;                  // this object created the name and has not removed it yet
  std::uint64_t meetings_ = 0;  // this rank's meetings so far
};

}  // namespace hybridshard::core::detail
