// share_memory's protocol (core/src/detail/shared_records.h), driven by ranks as threads with an all-gather of their
// own instead of NCCL's: on one host the ranks meet in shared memory after the first exchange and exchange again only
// when a record changed (on any one rank); on two hosts, or when a rank cannot join, or with
// HYBRIDSHARD_HOST_MEETING=0, the all-gathers stay (the second skipped when no record changed); a peer that cannot be
// opened is said.
#include "detail/shared_records.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hybridshard::core::detail {
namespace {

using std::chrono::milliseconds;

struct TestRecord {
  std::uint64_t host = 0;
  std::int64_t value = 0;  // the "pointer" a peer reads; < 0: cannot be opened
  char meeting[48] = {};
};

TestRecord record_of(std::uint64_t host, std::int64_t value) {
  TestRecord record;
  std::memset(static_cast<void*>(&record), 0, sizeof record);
  record.host = host;
  record.value = value;
  return record;
}

// An all-gather among threads: every rank's bytes of one call, in rank order.
class ThreadGather {
 public:
  explicit ThreadGather(int size) : size_(size), parts_(static_cast<std::size_t>(size)) {}

  std::vector<std::uint8_t> gather(int rank, const void* mine, std::size_t bytes) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return leaving_ == 0; });  // the previous call's ranks have all left
    const auto* begin = static_cast<const std::uint8_t*>(mine);
    parts_[static_cast<std::size_t>(rank)].assign(begin, begin + bytes);
    const std::uint64_t call = calls_;
    if (++arrived_ == size_) {
      result_.clear();
      for (const auto& part : parts_) result_.insert(result_.end(), part.begin(), part.end());
      arrived_ = 0;
      leaving_ = size_;
      ++calls_;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return calls_ != call; });
    }
    std::vector<std::uint8_t> all = result_;
    if (--leaving_ == 0) changed_.notify_all();
    return all;
  }

  std::uint64_t calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  int size_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::vector<std::uint8_t>> parts_;
  std::vector<std::uint8_t> result_;
  int arrived_ = 0;
  int leaving_ = 0;
  std::uint64_t calls_ = 0;
};

struct Rank {
  int rank;
  SharedRecords<TestRecord> records;
  std::function<void(const std::vector<std::uint8_t>&)> after_gather;  // a test's hook
};

// One share() of `rank` with wanted = every other rank.
PeerMemory share(Rank& me, int size, ThreadGather& gather, const TestRecord& mine) {
  std::vector<int> wanted;
  for (int peer = 0; peer < size; ++peer) {
    if (peer != me.rank) wanted.push_back(peer);
  }
  return me.records.share(
      mine, wanted,
      [&](const void* data, std::size_t bytes) {
        std::vector<std::uint8_t> all = gather.gather(me.rank, data, bytes);
        if (me.after_gather) me.after_gather(all);
        return all;
      },
      [](const TestRecord&, const TestRecord& peer, std::string& why) {
        if (peer.value < 0) {
          why = "refused by the test";
          return std::vector<const void*>{};
        }
        return std::vector<const void*>{reinterpret_cast<const void*>(peer.value)};
      },
      [&](HostMeeting& meeting, std::uint64_t flags) {
        const HostMeeting::Outcome outcome =
            meeting.meet(me.rank, flags, HostMeeting::Clock::now() + milliseconds(10000), {});
        if (outcome.state != HostMeeting::Outcome::State::kMet) throw std::runtime_error("the meeting failed");
        return outcome.flags;
      });
}

// Runs body(rank) on `size` threads.
void run_ranks(int size, const std::function<void(Rank&)>& body) {
  std::vector<std::unique_ptr<Rank>> ranks;
  for (int rank = 0; rank < size; ++rank) ranks.push_back(std::make_unique<Rank>(Rank{rank, {rank, size}, {}}));
  std::vector<std::thread> threads;
  for (auto& rank : ranks) threads.emplace_back([&body, &rank] { body(*rank); });
  for (std::thread& thread : threads) thread.join();
}

std::int64_t pointer_value(const PeerMemory& memory, int peer) {
  const auto& reads = memory.reads[static_cast<std::size_t>(peer)];
  return reads.size() == 1 ? reinterpret_cast<std::int64_t>(reads.front()) : -1;
}

bool leftovers_in_dev_shm() {
  const std::string prefix = "hybridshard-" + std::to_string(getpid()) + "-";
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    if (entry.path().filename().string().rfind(prefix, 0) == 0) return true;
  }
  return false;
}

TEST(SharedRecords, one_host_meets_after_the_first_exchange_and_a_change_on_one_rank_reaches_every_rank) {
  constexpr int kRanks = 3;
  ThreadGather gather(kRanks);
  std::vector<std::int64_t> exchanges_before_change(kRanks), exchanges_at_end(kRanks);
  std::vector<int> wrong(kRanks, 0);
  run_ranks(kRanks, [&](Rank& me) {
    const auto r = static_cast<std::size_t>(me.rank);
    const auto expect_reads = [&](const PeerMemory& memory, std::int64_t changed_value) {
      for (int peer = 0; peer < kRanks; ++peer) {
        if (peer == me.rank) continue;
        const std::int64_t expected = peer == 2 ? changed_value : 1000 + peer;
        if (pointer_value(memory, peer) != expected || !memory.read_by[static_cast<std::size_t>(peer)]) ++wrong[r];
      }
      if (!memory.any_direct) ++wrong[r];
    };
    for (int call = 0; call < 5; ++call) expect_reads(share(me, kRanks, gather, record_of(7, 1000 + me.rank)), 1002);
    exchanges_before_change[r] = me.records.exchanges();
    if (!me.records.meeting_ready()) ++wrong[r];
    // Rank 2's buffer moves; the others pass what they passed before.
    const std::int64_t value = me.rank == 2 ? 2002 : 1000 + me.rank;
    for (int call = 0; call < 4; ++call) expect_reads(share(me, kRanks, gather, record_of(7, value)), 2002);
    exchanges_at_end[r] = me.records.exchanges();
  });
  for (int rank = 0; rank < kRanks; ++rank) {
    const auto r = static_cast<std::size_t>(rank);
    EXPECT_EQ(wrong[r], 0) << "rank " << rank;
    EXPECT_EQ(exchanges_before_change[r], 1) << "rank " << rank << ": calls after the first met instead";
    EXPECT_EQ(exchanges_at_end[r], 2) << "rank " << rank << ": one exchange for the change, then meetings";
  }
  EXPECT_EQ(gather.calls(), 4u);  // two full exchanges of two all-gathers each
  EXPECT_FALSE(leftovers_in_dev_shm());
}

TEST(SharedRecords, ranks_on_two_hosts_keep_the_all_gathers_and_skip_the_second_when_no_record_changed) {
  constexpr int kRanks = 3;
  ThreadGather gather(kRanks);
  std::vector<int> wrong(kRanks, 0);
  run_ranks(kRanks, [&](Rank& me) {
    for (int call = 0; call < 4; ++call) {
      const PeerMemory memory = share(me, kRanks, gather, record_of(me.rank == 2 ? 8 : 7, 1000 + me.rank));
      for (int peer = 0; peer < kRanks; ++peer) {
        if (peer != me.rank && pointer_value(memory, peer) != 1000 + peer) ++wrong[static_cast<std::size_t>(me.rank)];
      }
    }
    if (me.records.meeting_ready() || me.records.exchanges() != 4) ++wrong[static_cast<std::size_t>(me.rank)];
  });
  for (int rank = 0; rank < kRanks; ++rank) EXPECT_EQ(wrong[static_cast<std::size_t>(rank)], 0) << "rank " << rank;
  // First call: two all-gathers (rank 0 offered a meeting nobody could use); second: rank 0 names none any more, so
  // its record changed: two more; then one per call.
  EXPECT_EQ(gather.calls(), 2u + 2u + 1u + 1u);
  EXPECT_FALSE(leftovers_in_dev_shm());
}

TEST(SharedRecords, a_rank_that_cannot_join_the_meeting_leaves_every_rank_on_the_all_gathers) {
  constexpr int kRanks = 3;
  ThreadGather gather(kRanks);
  std::vector<int> wrong(kRanks, 0);
  run_ranks(kRanks, [&](Rank& me) {
    if (me.rank == 1) {
      // Rank 1 removes the meeting's name as soon as it sees it, before joining: it cannot join.
      me.after_gather = [&](const std::vector<std::uint8_t>& all) {
        if (all.size() != kRanks * sizeof(TestRecord)) return;
        TestRecord first;
        std::memcpy(static_cast<void*>(&first), all.data(), sizeof first);
        if (first.meeting[0] != '\0') shm_unlink(first.meeting);
      };
    }
    for (int call = 0; call < 3; ++call) {
      const PeerMemory memory = share(me, kRanks, gather, record_of(7, 1000 + me.rank));
      for (int peer = 0; peer < kRanks; ++peer) {
        if (peer != me.rank && pointer_value(memory, peer) != 1000 + peer) ++wrong[static_cast<std::size_t>(me.rank)];
      }
    }
    if (me.records.meeting_ready() || me.records.exchanges() != 3) ++wrong[static_cast<std::size_t>(me.rank)];
    // Rank 1 says why (for the log line); rank 0 made the meeting and cannot know.
    if (me.rank == 1 && me.records.refusal().find("could not join") == std::string::npos) {
      ++wrong[static_cast<std::size_t>(me.rank)];
    }
    if (me.rank == 0 && !me.records.refusal().empty()) ++wrong[static_cast<std::size_t>(me.rank)];
  });
  for (int rank = 0; rank < kRanks; ++rank) EXPECT_EQ(wrong[static_cast<std::size_t>(rank)], 0) << "rank " << rank;
  // First call: two all-gathers; second: rank 0 no longer names a meeting, so its record changed: two more; third:
  // nothing changed, one.
  EXPECT_EQ(gather.calls(), 5u);
  EXPECT_FALSE(leftovers_in_dev_shm());
}

TEST(SharedRecords, HYBRIDSHARD_HOST_MEETING_0_keeps_the_all_gathers) {
  setenv("HYBRIDSHARD_HOST_MEETING", "0", 1);
  constexpr int kRanks = 2;
  ThreadGather gather(kRanks);
  std::vector<int> wrong(kRanks, 0);
  run_ranks(kRanks, [&](Rank& me) {
    for (int call = 0; call < 3; ++call) share(me, kRanks, gather, record_of(7, 1000 + me.rank));
    if (me.records.meeting_ready() || me.records.exchanges() != 3) ++wrong[static_cast<std::size_t>(me.rank)];
  });
  unsetenv("HYBRIDSHARD_HOST_MEETING");
  for (int rank = 0; rank < kRanks; ++rank) EXPECT_EQ(wrong[static_cast<std::size_t>(rank)], 0) << "rank " << rank;
  EXPECT_EQ(gather.calls(), 2u + 2u);
}

TEST(SharedRecords, a_peer_that_cannot_be_opened_is_said_and_the_owner_knows_it_is_not_read) {
  constexpr int kRanks = 2;
  ThreadGather gather(kRanks);
  std::vector<PeerMemory> answers(kRanks);
  run_ranks(kRanks, [&](Rank& me) {
    // Rank 1's buffers cannot be opened; rank 1 opens rank 0's.
    answers[static_cast<std::size_t>(me.rank)] =
        share(me, kRanks, gather, record_of(7, me.rank == 1 ? -1 : 1000 + me.rank));
  });
  EXPECT_TRUE(answers[0].reads[1].empty());
  EXPECT_EQ(answers[0].why[1], "refused by the test");
  EXPECT_EQ(pointer_value(answers[1], 0), 1000);
  EXPECT_TRUE(answers[0].read_by[1]);   // rank 1 reads rank 0
  EXPECT_FALSE(answers[1].read_by[0]);  // rank 0 does not read rank 1
  EXPECT_TRUE(answers[0].any_direct);
  EXPECT_TRUE(answers[1].any_direct);
}

}  // namespace
}  // namespace hybridshard::core::detail
