// NCCL across GPUs (one thread and one GPU per rank; skipped with fewer than 2 GPUs): every operation against the
// bytes each rank sent, subgroups that are made, used and destroyed while the world goes on, a rank that never
// joins an operation: its peer fails within the timeout, naming the operation; the peer path's exchange and its
// meeting in shared host memory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "device_checks.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "rank_threads.h"

namespace hybridshard::core {
namespace {

using std::chrono::milliseconds;
using testing::DeviceBytes;

constexpr int kRanks = 2;

class NcclMultiGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() < kRanks) {
      GTEST_SKIP() << "needs " << kRanks << " GPUs, this machine has " << cuda_device_count();
    }
    StoreOptions options;
    options.port = 0;
    options.is_server = true;
    options.timeout = milliseconds(20000);
    server_ = Store::open(options);
  }

  // Runs `body(rank, device, world)` on every rank with a world communicator of `timeout`.
  void run(milliseconds timeout, const std::function<void(int, Device&, Communicator&)>& body) {
    testing::run_ranks(kRanks, [&](int rank) {
      StoreOptions options;
      options.port = server_->port();
      options.timeout = milliseconds(20000);
      auto store = Store::open(options);
      auto device = make_cuda_device(rank);
      auto world = make_nccl_communicator(*store, rank, kRanks, rank, timeout);
      try {
        body(rank, *device, *world);
      } catch (const std::exception& error) {
        ADD_FAILURE() << "rank " << rank << ": " << error.what();  // every rank's, not only the first
        throw;
      }
    });
  }

  std::unique_ptr<Store> server_;
};

std::vector<std::uint8_t> bytes_of(int rank, std::size_t size) {
  std::mt19937 random(static_cast<unsigned>(rank + 1));
  std::vector<std::uint8_t> data(size);
  for (auto& byte : data) byte = static_cast<std::uint8_t>(random() & 0xFF);
  return data;
}

TEST_F(NcclMultiGpuTest, all_gather_exchange_broadcast_all_reduce_move_the_right_bytes) {
  run(milliseconds(20000), [](int rank, Device& device, Communicator& world) {
    constexpr std::size_t kBytes = 1 << 20;
    DeviceBytes send(device, kBytes), recv(device, kRanks * kBytes);
    send.upload(bytes_of(rank, kBytes));
    world.all_gather(send.data, recv.data, kBytes);
    std::vector<std::uint8_t> expected;
    for (int peer = 0; peer < kRanks; ++peer) {
      const auto part = bytes_of(peer, kBytes);
      expected.insert(expected.end(), part.begin(), part.end());
    }
    EXPECT_TRUE(recv.download() == expected) << "rank " << rank;

    // Pairwise exchange of different sizes each way, and a message to itself.
    const int peer = 1 - rank;
    const std::size_t out_bytes = 1000 + 24 * static_cast<std::size_t>(rank);
    const std::size_t in_bytes = 1000 + 24 * static_cast<std::size_t>(peer);
    DeviceBytes out(device, static_cast<std::int64_t>(out_bytes)), in(device, static_cast<std::int64_t>(in_bytes));
    DeviceBytes self_in(device, static_cast<std::int64_t>(out_bytes));
    out.upload(bytes_of(10 + rank, out_bytes));
    const SendSpec sends[] = {{peer, out.data, out_bytes}, {rank, out.data, out_bytes}};
    const RecvSpec recvs[] = {{peer, in.data, in_bytes}, {rank, self_in.data, out_bytes}};
    world.exchange(sends, recvs);
    EXPECT_TRUE(in.download() == bytes_of(10 + peer, in_bytes)) << "rank " << rank;
    EXPECT_TRUE(self_in.download() == bytes_of(10 + rank, out_bytes)) << "rank " << rank;

    DeviceBytes shared(device, 4096);
    shared.upload(bytes_of(rank == 1 ? 20 : 21, 4096));
    world.broadcast(shared.data, 4096, 1);
    EXPECT_TRUE(shared.download() == bytes_of(20, 4096)) << "rank " << rank;

    const float mine[3] = {1.0f + static_cast<float>(rank), -2.0f, 0.5f * static_cast<float>(rank)};
    std::vector<std::uint8_t> floats(sizeof mine);
    std::memcpy(floats.data(), mine, sizeof mine);
    DeviceBytes sum(device, sizeof mine);
    sum.upload(floats);
    world.all_reduce_sum(static_cast<float*>(sum.data), 3);
    const std::vector<std::uint8_t> summed = sum.download();
    float got[3];
    std::memcpy(got, summed.data(), sizeof got);
    EXPECT_EQ(got[0], 3.0f);
    EXPECT_EQ(got[1], -4.0f);
    EXPECT_EQ(got[2], 0.5f);
    world.barrier();
  });
}

TEST_F(NcclMultiGpuTest, the_world_goes_on_after_subgroups_are_used_and_destroyed) {
  run(milliseconds(20000), [](int rank, Device& device, Communicator& world) {
    for (int round = 0; round < 3; ++round) {
      {
        std::unique_ptr<Communicator> pair = world.subgroup({0, 1});
        std::unique_ptr<Communicator> mine = world.subgroup({0});
        ASSERT_NE(pair, nullptr);
        EXPECT_EQ(mine != nullptr, rank == 0);
        DeviceBytes send(device, 64), recv(device, 128);
        send.upload(bytes_of(rank + round, 64));
        pair->all_gather(send.data, recv.data, 64);
        std::vector<std::uint8_t> expected = bytes_of(round, 64);
        const auto second = bytes_of(1 + round, 64);
        expected.insert(expected.end(), second.begin(), second.end());
        EXPECT_TRUE(recv.download() == expected) << "rank " << rank << " round " << round;
        if (mine) mine->barrier();
      }
      // Destroyed: the world still works, several times over.
      DeviceBytes send(device, 8), recv(device, 16);
      send.upload(bytes_of(rank, 8));
      world.all_gather(send.data, recv.data, 8);
      world.barrier();
    }
  });
}

TEST_F(NcclMultiGpuTest, a_rank_that_never_joins_makes_its_peer_fail_within_the_timeout) {
  const auto started = std::chrono::steady_clock::now();
  std::string message;
  run(milliseconds(3000), [&](int rank, Device& device, Communicator& world) {
    world.barrier();
    if (rank == 1) return;  // never joins the all-gather
    DeviceBytes send(device, 8), recv(device, 16);
    try {
      world.all_gather(send.data, recv.data, 8);
      ADD_FAILURE() << "the all-gather finished without its peer";
    } catch (const CommError& error) {
      message = error.what();
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_NE(message.find("all_gather"), std::string::npos) << message;
  EXPECT_NE(message.find("timed out"), std::string::npos) << message;
  EXPECT_LT(seconds, 20.0) << message;
}

// The peer path's exchange on one host: after the first call the ranks meet in shared host memory, and a buffer that
// moves on one rank only still reaches the other (the meeting says someone changed, and every rank exchanges again).
TEST_F(NcclMultiGpuTest, share_memory_meets_on_the_host_and_a_buffer_moved_on_one_rank_reaches_the_other) {
  run(milliseconds(20000), [](int rank, Device& device, Communicator& world) {
    constexpr std::int64_t kBytes = 1 << 20;
    const int peer = 1 - rank;
    DeviceBytes first(device, kBytes), second(device, kBytes), read(device, kBytes);
    first.upload(bytes_of(rank, kBytes));
    second.upload(bytes_of(rank + 10, kBytes));
    const std::vector<int> wanted{peer};
    const std::vector<std::int64_t> sizes{kBytes};
    const auto read_peer = [&](const PeerMemory& memory) {
      EXPECT_TRUE(memory.any_direct) << "rank " << rank;
      EXPECT_TRUE(memory.read_by[static_cast<std::size_t>(peer)]) << "rank " << rank;
      const auto& reads = memory.reads[static_cast<std::size_t>(peer)];
      if (reads.size() != 1) {
        ADD_FAILURE() << "rank " << rank << " reads " << reads.size() << " buffers of its peer";
        return std::vector<std::uint8_t>{};
      }
      device.copy(read.data, Residency::kGpu, reads.front(), Residency::kGpu, kBytes);
      return read.download();
    };
    void* buffer = first.data;
    for (int call = 0; call < 4; ++call) {
      const PeerMemory memory = world.share_memory(std::span<void* const>(&buffer, 1), sizes, wanted);
      EXPECT_TRUE(read_peer(memory) == bytes_of(peer, kBytes)) << "rank " << rank << ", call " << call;
      world.host_barrier();
    }
    // Rank 1's buffer moves; rank 0 passes the same as before and must read the new one.
    if (rank == 1) buffer = second.data;
    PeerMemory memory = world.share_memory(std::span<void* const>(&buffer, 1), sizes, wanted);
    EXPECT_TRUE(read_peer(memory) == (rank == 0 ? bytes_of(11, kBytes) : bytes_of(0, kBytes))) << "rank " << rank;
    world.host_barrier();
    memory = world.share_memory(std::span<void* const>(&buffer, 1), sizes, wanted);
    EXPECT_TRUE(read_peer(memory) == (rank == 0 ? bytes_of(11, kBytes) : bytes_of(0, kBytes))) << "rank " << rank;
  });
  // The meeting's segment lost its name once both ranks had joined: nothing of this process is left in /dev/shm.
  const std::string prefix = "hybridshard-" + std::to_string(getpid()) + "-";
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    EXPECT_NE(entry.path().filename().string().rfind(prefix, 0), 0u) << entry.path();
  }
}

// A rank that never comes to the host meeting: its peer's barrier fails within the timeout, naming the meeting and
// the rank (the collective barrier's error names neither: this is how the test knows the meeting was used).
TEST_F(NcclMultiGpuTest, a_rank_missing_from_the_host_meeting_is_named_within_the_timeout) {
  const auto started = std::chrono::steady_clock::now();
  std::string message;
  run(milliseconds(3000), [&](int rank, Device& device, Communicator& world) {
    DeviceBytes mine(device, 4096);
    void* buffer = mine.data;
    const std::vector<std::int64_t> sizes{4096};
    const std::vector<int> wanted{1 - rank};
    world.share_memory(std::span<void* const>(&buffer, 1), sizes, wanted);
    if (rank == 1) return;  // never comes to the barrier
    try {
      world.host_barrier();
      ADD_FAILURE() << "the barrier finished without its peer";
    } catch (const TimeoutError& error) {
      message = error.what();
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_NE(message.find("host_barrier"), std::string::npos) << message;
  EXPECT_NE(message.find("host meeting waiting for rank(s) 1"), std::string::npos) << message;
  EXPECT_LT(seconds, 20.0) << message;
}

}  // namespace
}  // namespace hybridshard::core
