// Communicator::share_memory's protocol without its transport or its device: what the NCCL communicator does with the
// ranks' records (core/src/nccl_communicator.cc gives it NCCL all-gathers and PeerLinks), written apart so that the
// CPU tests drive it with threads (tests/core/runtime/shared_records_test.cc).
//
// A full exchange is two all-gathers: every rank's record, then every rank's answer (whom it opened, and whether it
// is in the host meeting). When every rank is on one host, rank 0's record names a HostMeeting it made, every rank
// joins it before giving its answer, and the answers say whether all did (then rank 0 removes the name; if one could
// not, every rank leaves it and it is not made again). From then on a call meets there first, each rank saying
// whether its record differs from the one it last gave, and the exchange runs again only when one does: every rank
// sees the same flags, so all of them run it or none. Without the meeting (ranks on several hosts, shared memory
// refused, HYBRIDSHARD_HOST_MEETING=0), a call whose gathered records all equal the previous call's answers as the
// previous call did without the second all-gather (every rank sees the same records, so all skip it or none).
//
// Record: a trivially copyable struct with `std::uint64_t host` (the machine) and `char meeting[N]`, every byte set
// (records are compared byte for byte).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "detail/environment.h"
#include "detail/host_meeting.h"
#include "hybridshard/core/communicator.h"

namespace hybridshard::core::detail {

template <typename Record>
class SharedRecords {
  static_assert(std::is_trivially_copyable_v<Record>);

 public:
  // All-gathers `bytes` host bytes of every rank (rank i's at i * bytes).
  using Gather = std::function<std::vector<std::uint8_t>(const void* mine, std::size_t bytes)>;
  // Peer's buffers as this rank reads them, or empty with `why` set.
  using Open = std::function<std::vector<const void*>(const Record& mine, const Record& peer, std::string& why)>;
  // This rank's next meeting in `meeting`; returns every rank's flags OR-ed, throws when the meeting fails.
  using Meet = std::function<std::uint64_t(HostMeeting& meeting, std::uint64_t flags)>;

  SharedRecords(int rank, int size) : rank_(rank), size_(size) {}

  PeerMemory share(Record mine, std::span<const int> wanted, const Gather& gather, const Open& open, const Meet& meet) {
    if (rank_ == 0) offer_meeting(mine);
    if (meeting_ready_) {
      // The meeting is ready only after a full exchange: records_ holds every rank's last record, this one's too.
      const bool changed = std::memcmp(&mine, &records_[static_cast<std::size_t>(rank_)], sizeof mine) != 0;
      if (meet(*meeting_, changed ? 1 : 0) == 0) return memory_;
    }
    const std::vector<std::uint8_t> gathered = gather(&mine, sizeof mine);
    ++exchanges_;
    std::vector<Record> records(static_cast<std::size_t>(size_));
    std::memcpy(static_cast<void*>(records.data()), gathered.data(), records.size() * sizeof(Record));
    if (shared_ && std::memcmp(records.data(), records_.data(), records.size() * sizeof(Record)) == 0) return memory_;
    PeerMemory memory;
    const auto n = static_cast<std::size_t>(size_);
    memory.reads.resize(n);
    memory.read_by.assign(n, false);
    memory.why.resize(n);
    // This rank's answer: [owner] it reads owner directly; [n] it is in the meeting.
    std::vector<std::uint8_t> answer(n + 1, 0);
    for (int peer : wanted) {
      if (peer < 0 || peer >= size_ || peer == rank_) continue;
      const auto p = static_cast<std::size_t>(peer);
      std::string why;
      std::vector<const void*> pointers = open(mine, records[p], why);
      if (pointers.empty()) {
        memory.why[p] = why.empty() ? "the peer shares no buffers" : why;
        continue;
      }
      memory.reads[p] = std::move(pointers);
      answer[p] = 1;
    }
    answer[n] = join_meeting(records) ? 1 : 0;
    const std::vector<std::uint8_t> everyone = gather(answer.data(), n + 1);
    bool all_met = true;
    for (std::size_t reader = 0; reader < n; ++reader) {
      const std::uint8_t* row = everyone.data() + reader * (n + 1);
      all_met = all_met && row[n] == 1;
      for (std::size_t owner = 0; owner < n; ++owner) {
        if (row[owner] == 0) continue;
        memory.any_direct = true;
        if (owner == static_cast<std::size_t>(rank_)) memory.read_by[reader] = true;
      }
    }
    settle_meeting(all_met);
    shared_ = true;
    records_ = std::move(records);
    memory_ = memory;
    return memory;
  }

  // Every rank joined the meeting: later calls (and Communicator::host_barrier) meet there.
  bool meeting_ready() const { return meeting_ready_; }
  HostMeeting& meeting() const { return *meeting_; }
  // Record all-gathers so far (the first of a full exchange; a call answered by the meeting has none).
  std::int64_t exchanges() const { return exchanges_; }
  // Why this rank could not make or join the meeting though every rank is on one host (empty otherwise): for a log
  // line, since the ranks then line up through collectives.
  const std::string& refusal() const { return refusal_; }

 private:
  // Rank 0: makes the meeting (once; not again after one that not every rank could join, or when
  // HYBRIDSHARD_HOST_MEETING=0 keeps the collectives) and names it in its record.
  void offer_meeting(Record& mine) {
    if (!meeting_ && !meeting_refused_ && size_ > 1) {
      meeting_refused_ = count_from_environment("HYBRIDSHARD_HOST_MEETING", 1, 0, 1) == 0;
      if (!meeting_refused_) {
        std::string why;
        meeting_ = HostMeeting::create(size_, why);
        if (!meeting_) {
          meeting_refused_ = true;  // shared memory refused: the collectives stay
          refusal_ = "could not make a meeting in shared host memory: " + why;
        }
      }
    }
    if (meeting_) std::snprintf(mine.meeting, sizeof mine.meeting, "%s", meeting_->name().c_str());
  }

  // Whether this rank is in the meeting after the records' all-gather: every rank on rank 0's host and rank 0 named
  // one; the others join it here.
  bool join_meeting(const std::vector<Record>& records) {
    if (meeting_ready_) return true;
    if (records.empty() || records.front().meeting[0] == '\0') return false;
    for (const Record& record : records) {
      if (record.host != records.front().host) return false;
    }
    if (!meeting_) {
      const std::string name(records.front().meeting, strnlen(records.front().meeting, sizeof records.front().meeting));
      std::string why;
      meeting_ = HostMeeting::join(name, size_, why);
      if (!meeting_) refusal_ = "could not join rank 0's meeting in shared host memory: " + why;
    }
    return meeting_ != nullptr;
  }

  // After the answers' all-gather: every rank joined (the meeting is used from now on) or not (every rank leaves
  // it). Either way whoever joins has joined, so the name goes.
  void settle_meeting(bool all_met) {
    if (meeting_ready_ || !meeting_) return;
    meeting_->forget_name();
    if (all_met) {
      meeting_ready_ = true;
    } else {
      meeting_.reset();
      meeting_refused_ = true;
    }
  }

  int rank_;
  int size_;
  std::unique_ptr<HostMeeting> meeting_;
  bool meeting_ready_ = false;
  bool meeting_refused_ = false;
  bool shared_ = false;          // a full exchange ran to its end at least once
  std::vector<Record> records_;  // its gathered records
  PeerMemory memory_;            // and its answer
  std::int64_t exchanges_ = 0;
  std::string refusal_;
};

}  // namespace hybridshard::core::detail
