// The meeting in shared host memory (core/src/detail/host_meeting.h) that the NCCL communicator's peer path uses when
// every rank is on one host: ranks as threads and as processes meet, nobody leaves a meeting before everyone came,
// each meeting's flags are its own; a missing rank, a rank that gives up and abort end a meeting with what happened;
// a segment is joined only by the number of ranks it was made for and only when this user alone can open it, and
// loses its name when asked.
#include "detail/host_meeting.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

namespace hybridshard::core::detail {
namespace {

using Clock = HostMeeting::Clock;
using State = HostMeeting::Outcome::State;
using std::chrono::milliseconds;

// The members of one meeting: rank 0 made it, the others joined by name.
std::vector<std::unique_ptr<HostMeeting>> members(int size) {
  std::vector<std::unique_ptr<HostMeeting>> all;
  std::string why;
  all.push_back(HostMeeting::create(size, why));
  EXPECT_NE(all.front(), nullptr) << why;
  for (int rank = 1; rank < size && all.front(); ++rank) {
    all.push_back(HostMeeting::join(all.front()->name(), size, why));
    EXPECT_NE(all.back(), nullptr) << why;
  }
  return all;
}

// Changes the mode of the segment named `name`; 0 on success.
int fchmod_by_name(const std::string& name, mode_t mode) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) return -1;
  const int result = fchmod(fd, mode);
  close(fd);
  return result;
}

// Rank r's flags in meeting m: its bit in every (r + 2)-th meeting.
std::uint64_t flags_of(int rank, int meeting) { return meeting % (rank + 2) == 0 ? 1ull << rank : 0; }

TEST(HostMeeting, ranks_as_threads_meet_in_order_and_each_meeting_has_its_own_flags) {
  constexpr int kRanks = 4;
  constexpr int kMeetings = 2000;
  auto all = members(kRanks);
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kRanks));
  std::vector<std::atomic<int>> arrived(kMeetings);
  std::vector<int> wrong(kRanks, 0);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kRanks; ++rank) {
    threads.emplace_back([&, rank] {
      for (int m = 0; m < kMeetings; ++m) {
        arrived[static_cast<std::size_t>(m)].fetch_add(1);
        const HostMeeting::Outcome outcome =
            all[static_cast<std::size_t>(rank)]->meet(rank, flags_of(rank, m), Clock::now() + milliseconds(20000), {});
        std::uint64_t expected = 0;
        for (int other = 0; other < kRanks; ++other) expected |= flags_of(other, m);
        // Nobody leaves meeting m before every rank has come to it.
        if (outcome.state != State::kMet || outcome.flags != expected ||
            arrived[static_cast<std::size_t>(m)].load() != kRanks) {
          ++wrong[static_cast<std::size_t>(rank)];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int rank = 0; rank < kRanks; ++rank) EXPECT_EQ(wrong[static_cast<std::size_t>(rank)], 0) << "rank " << rank;
}

TEST(HostMeeting, ranks_as_processes_meet_through_the_named_segment) {
  constexpr int kMeetings = 500;
  std::string why;
  auto mine = HostMeeting::create(2, why);
  ASSERT_NE(mine, nullptr) << why;
  const std::string name = mine->name();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::string child_why;
    auto theirs = HostMeeting::join(name, 2, child_why);
    int wrong = theirs ? 0 : 100;
    for (int m = 0; theirs && m < kMeetings; ++m) {
      const HostMeeting::Outcome outcome = theirs->meet(1, flags_of(1, m), Clock::now() + milliseconds(20000), {});
      if (outcome.state != State::kMet || outcome.flags != (flags_of(0, m) | flags_of(1, m))) ++wrong;
    }
    _exit(wrong == 0 ? 0 : 1);
  }
  int wrong = 0;
  for (int m = 0; m < kMeetings; ++m) {
    const HostMeeting::Outcome outcome = mine->meet(0, flags_of(0, m), Clock::now() + milliseconds(20000), {});
    if (outcome.state != State::kMet || outcome.flags != (flags_of(0, m) | flags_of(1, m))) ++wrong;
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child process's meetings went wrong";
  EXPECT_EQ(wrong, 0);
}

TEST(HostMeeting, a_rank_that_never_comes_is_named_when_the_deadline_passes) {
  auto all = members(3);
  ASSERT_EQ(all.size(), 3u);
  std::vector<HostMeeting::Outcome> outcomes(2);
  const Clock::time_point started = Clock::now();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      outcomes[static_cast<std::size_t>(rank)] =
          all[static_cast<std::size_t>(rank)]->meet(rank, 0, Clock::now() + milliseconds(300), {});
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  for (const HostMeeting::Outcome& outcome : outcomes) {
    EXPECT_EQ(outcome.state, State::kTimedOut);
    EXPECT_EQ(outcome.missing, std::vector<int>{2});
  }
  EXPECT_GE(seconds, 0.3);
  EXPECT_LT(seconds, 10.0);
}

TEST(HostMeeting, a_rank_that_gives_up_ends_the_others_meetings_at_once_and_abort_ends_ones_own) {
  auto all = members(2);
  ASSERT_EQ(all.size(), 2u);
  std::atomic<bool> stop{false};
  const Clock::time_point started = Clock::now();
  const HostMeeting::Outcome aborted =
      all[0]->meet(0, 0, Clock::now() + milliseconds(20000), [&] { return stop.exchange(true); });
  EXPECT_EQ(aborted.state, State::kAborted);
  std::thread giving_up([&] {
    std::this_thread::sleep_for(milliseconds(50));
    all[1]->abandon(1);
  });
  const HostMeeting::Outcome abandoned = all[0]->meet(0, 0, Clock::now() + milliseconds(20000), {});
  giving_up.join();
  EXPECT_EQ(abandoned.state, State::kAbandoned);
  EXPECT_EQ(abandoned.abandoned_by, 1);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - started).count(), 10.0);
}

TEST(HostMeeting, a_segment_is_joined_only_under_its_name_and_by_its_number_of_ranks) {
  std::string why;
  auto made = HostMeeting::create(2, why);
  ASSERT_NE(made, nullptr) << why;
  EXPECT_EQ(HostMeeting::join(made->name(), 3, why), nullptr);
  EXPECT_NE(why.find("3 ranks"), std::string::npos) << why;
  // A segment others could open is not joined (a stand-in made by someone else would look like that).
  ASSERT_EQ(fchmod_by_name(made->name(), 0644), 0);
  EXPECT_EQ(HostMeeting::join(made->name(), 2, why), nullptr);
  EXPECT_NE(why.find("not to this user alone"), std::string::npos) << why;
  ASSERT_EQ(fchmod_by_name(made->name(), 0600), 0);
  auto joined = HostMeeting::join(made->name(), 2, why);
  ASSERT_NE(joined, nullptr) << why;
  made->forget_name();
  EXPECT_EQ(HostMeeting::join(made->name(), 2, why), nullptr);
  EXPECT_NE(why.find("shm_open"), std::string::npos) << why;
  EXPECT_NE(why.find(made->name()), std::string::npos) << why;
  // The two members still meet after the name is gone.
  std::thread other([&] { joined->meet(1, 2, Clock::now() + milliseconds(20000), {}); });
  const HostMeeting::Outcome outcome = made->meet(0, 1, Clock::now() + milliseconds(20000), {});
  other.join();
  EXPECT_EQ(outcome.state, State::kMet);
  EXPECT_EQ(outcome.flags, 3u);
}

}  // namespace
}  // namespace hybridshard::core::detail
