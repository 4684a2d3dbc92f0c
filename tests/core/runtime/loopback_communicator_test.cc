#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"

namespace hybridshard::core {
namespace {

// What world rank `peer` sends at `sequence`: a byte pattern of both, so a misplaced copy shows.
std::uint8_t peer_byte(int peer, std::uint64_t sequence, std::size_t i) {
  return static_cast<std::uint8_t>(peer * 37 + sequence * 11 + i);
}

struct CountingProvider {
  std::map<std::pair<std::uint64_t, int>, int> asked;
  PeerDataProvider provider() {
    return [this](int peer, std::uint64_t sequence, void* dst, std::size_t bytes) {
      ++asked[{sequence, peer}];
      auto* out = static_cast<std::uint8_t*>(dst);
      for (std::size_t i = 0; i < bytes; ++i) out[i] = peer_byte(peer, sequence, i);
    };
  }
};

TEST(LoopbackCommunicatorTest, all_gather_places_peer_data_and_own_data) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto comm = make_loopback_communicator(1, 3, *device, peers.provider());
  EXPECT_EQ(comm->backend(), Backend::kLoopback);
  std::vector<std::uint8_t> send(16, 0xEE), recv(48, 0);
  comm->all_gather(send.data(), recv.data(), 16);
  for (std::size_t i = 0; i < 16; ++i) {
    EXPECT_EQ(recv[i], peer_byte(0, 0, i));
    EXPECT_EQ(recv[16 + i], 0xEE);
    EXPECT_EQ(recv[32 + i], peer_byte(2, 0, i));
  }
}

TEST(LoopbackCommunicatorTest, replays_from_cache_after_reset_sequence) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto comm = make_loopback_communicator(0, 2, *device, peers.provider());
  std::vector<std::uint8_t> first(64), second(64);
  for (int iteration = 0; iteration < 3; ++iteration) {
    comm->reset_sequence();
    std::vector<std::uint8_t> data(32, 1);
    comm->broadcast(data.data(), 32, 1);  // sequence 0: from rank 1
    const SendSpec sends[] = {{1, data.data(), 32}};
    std::vector<std::uint8_t> got(40);
    const RecvSpec recvs[] = {{1, got.data(), 40}};
    comm->exchange(sends, recvs);  // sequence 1
    for (std::size_t i = 0; i < 32; ++i) ASSERT_EQ(data[i], peer_byte(1, 0, i));
    for (std::size_t i = 0; i < 40; ++i) ASSERT_EQ(got[i], peer_byte(1, 1, i));
  }
  // Asked once per (sequence, peer), however many iterations ran.
  EXPECT_EQ(peers.asked.size(), 2u);
  for (const auto& [key, count] : peers.asked) EXPECT_EQ(count, 1);
  // Cache and send scratch live in device memory.
  EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 32 + 40 + 32);
}

TEST(LoopbackCommunicatorTest, replay_with_another_size_is_an_error) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto comm = make_loopback_communicator(0, 2, *device, peers.provider());
  std::vector<std::uint8_t> data(64);
  comm->broadcast(data.data(), 32, 1);
  comm->reset_sequence();
  EXPECT_THROW(comm->broadcast(data.data(), 64, 1), CommError);
}

TEST(LoopbackCommunicatorTest, exchange_with_itself_copies_locally) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto comm = make_loopback_communicator(2, 4, *device, peers.provider());
  std::vector<std::uint8_t> mine{1, 2, 3, 4}, back(4, 0);
  const SendSpec sends[] = {{2, mine.data(), 4}};
  const RecvSpec recvs[] = {{2, back.data(), 4}};
  comm->exchange(sends, recvs);
  EXPECT_EQ(back, mine);
  EXPECT_TRUE(peers.asked.empty());
}

// Sends and receives to itself must pair up in order, in count and in size; nothing is copied or asked for when
// they do not (detail/self_transfers.h, the same check in every communicator).
TEST(LoopbackCommunicatorTest, exchange_with_itself_that_does_not_pair_up_is_an_error) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto comm = make_loopback_communicator(2, 4, *device, peers.provider());
  std::vector<std::uint8_t> mine{1, 2, 3, 4}, back(4, 0), from_peer(4, 0);
  const SendSpec two_sends[] = {{2, mine.data(), 2}, {2, mine.data() + 2, 2}};
  const RecvSpec one_recv[] = {{2, back.data(), 4}, {1, from_peer.data(), 4}};
  try {
    comm->exchange(two_sends, one_recv);
    FAIL() << "an exchange with 2 sends to itself and 1 receive from itself went through";
  } catch (const CommError& error) {
    EXPECT_NE(std::string(error.what()).find("lists 2 sends to itself but 1 receives from itself"), std::string::npos)
        << error.what();
  }
  const SendSpec short_send[] = {{2, mine.data(), 3}};
  const RecvSpec long_recv[] = {{2, back.data(), 4}};
  try {
    comm->exchange(short_send, long_recv);
    FAIL() << "an exchange that sends itself 3 bytes into a 4-byte receive went through";
  } catch (const CommError& error) {
    EXPECT_NE(std::string(error.what()).find("sends itself 3 bytes but expects 4"), std::string::npos) << error.what();
  }
  EXPECT_EQ(back, std::vector<std::uint8_t>(4, 0));
  EXPECT_TRUE(peers.asked.empty());  // refused before peer 1's message was asked for
}

TEST(LoopbackCommunicatorTest, subgroups_name_world_ranks_and_share_the_sequence) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto world = make_loopback_communicator(2, 4, *device, peers.provider());
  std::vector<std::uint8_t> data(8);
  world->barrier();  // sequence 0
  auto group = world->subgroup({3, 2});
  ASSERT_NE(group, nullptr);
  EXPECT_EQ(group->rank(), 1);
  EXPECT_EQ(group->size(), 2);
  group->broadcast(data.data(), 8, 0);  // sequence 1, from world rank 3
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(data[i], peer_byte(3, 1, i));
  EXPECT_EQ(world->subgroup({0, 1}), nullptr);
}

TEST(LoopbackCommunicatorTest, all_reduce_takes_the_reduced_result_from_the_provider) {
  auto device = make_cpu_device(1 << 20);
  auto comm = make_loopback_communicator(0, 2, *device, [](int peer, std::uint64_t, void* dst, std::size_t bytes) {
    EXPECT_EQ(peer, -1);
    auto* values = static_cast<float*>(dst);
    for (std::size_t i = 0; i < bytes / sizeof(float); ++i) values[i] = 2.5f * static_cast<float>(i);
  });
  std::vector<float> data(5, 1.0f);
  comm->all_reduce_sum(data.data(), data.size());
  EXPECT_EQ(data[4], 10.0f);
}

TEST(LoopbackCommunicatorTest, operations_after_abort_fail) {
  auto device = make_cpu_device(1 << 20);
  CountingProvider peers;
  auto comm = make_loopback_communicator(0, 2, *device, peers.provider());
  comm->abort();
  EXPECT_THROW(comm->barrier(), CommError);
}

}  // namespace
}  // namespace hybridshard::core
