#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "rank_threads.h"

namespace hybridshard::core {
namespace {

using std::chrono::milliseconds;

// Every test's ranks share one store server; each rank opens its own client connection, as processes would.
class GlooCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gloo_available()) GTEST_SKIP() << "built without Gloo";
    StoreOptions options;
    options.port = 0;
    options.is_server = true;
    options.timeout = milliseconds(10000);
    server_ = Store::open(options);
  }

  std::unique_ptr<Store> client(milliseconds timeout = milliseconds(10000)) {
    StoreOptions options;
    options.port = server_->port();
    options.timeout = timeout;
    return Store::open(options);
  }

  // Runs `body` on `world_size` ranks, each with its own store client and Gloo communicator.
  void run(int world_size, const std::function<void(Communicator&)>& body, milliseconds timeout = milliseconds(10000)) {
    testing::run_ranks(world_size, [&](int rank) {
      auto store = client();
      auto comm = make_gloo_communicator(*store, rank, world_size, timeout);
      ASSERT_EQ(comm->rank(), rank);
      ASSERT_EQ(comm->size(), world_size);
      body(*comm);
    });
  }

  std::unique_ptr<Store> server_;
};

std::uint8_t pattern(int rank, std::size_t i) { return static_cast<std::uint8_t>((rank * 31 + i * 7) % 251); }

TEST_F(GlooCommunicatorTest, all_gather_places_each_rank_at_its_offset) {
  constexpr int kWorld = 4;
  constexpr std::size_t kBytes = 1000;
  run(kWorld, [](Communicator& comm) {
    std::vector<std::uint8_t> send(kBytes), recv(kBytes * kWorld, 0);
    for (std::size_t i = 0; i < kBytes; ++i) send[i] = pattern(comm.rank(), i);
    comm.all_gather(send.data(), recv.data(), kBytes);
    for (int r = 0; r < kWorld; ++r) {
      for (std::size_t i = 0; i < kBytes; ++i) ASSERT_EQ(recv[r * kBytes + i], pattern(r, i)) << r << " " << i;
    }
  });
}

TEST_F(GlooCommunicatorTest, broadcast_copies_the_roots_bytes_everywhere) {
  run(3, [](Communicator& comm) {
    std::vector<std::uint8_t> data(333);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = pattern(comm.rank(), i);
    comm.broadcast(data.data(), data.size(), 2);
    for (std::size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], pattern(2, i));
  });
}

TEST_F(GlooCommunicatorTest, all_reduce_sums_in_closed_form) {
  constexpr int kWorld = 4;
  run(kWorld, [](Communicator& comm) {
    std::vector<float> data(257);
    for (std::size_t i = 0; i < data.size(); ++i)
      data[i] = static_cast<float>(comm.rank()) + 0.5f * static_cast<float>(i);
    comm.all_reduce_sum(data.data(), data.size());
    // sum over r of (r + i/2) = n(n-1)/2 + n*i/2: exact in float for these sizes.
    for (std::size_t i = 0; i < data.size(); ++i) {
      ASSERT_EQ(data[i], static_cast<float>(kWorld * (kWorld - 1) / 2) + kWorld * 0.5f * static_cast<float>(i));
    }
  });
}

TEST_F(GlooCommunicatorTest, exchange_delivers_every_pair_and_copies_to_itself) {
  constexpr int kWorld = 4;
  // Rank r sends (r+1) % n and (r+2) % n messages of sizes that depend on the pair, and one to itself.
  auto size_of = [](int from, int to) { return static_cast<std::size_t>(100 + 17 * from + 3 * to); };
  run(kWorld, [&](Communicator& comm) {
    const int r = comm.rank();
    std::vector<std::vector<std::uint8_t>> out, in;
    std::vector<SendSpec> sends;
    std::vector<RecvSpec> recvs;
    out.reserve(3);
    in.reserve(3);
    for (int to : {(r + 1) % kWorld, (r + 2) % kWorld, r}) {
      out.emplace_back(size_of(r, to));
      for (std::size_t i = 0; i < out.back().size(); ++i) out.back()[i] = pattern(r * 10 + to, i);
      sends.push_back({to, out.back().data(), out.back().size()});
    }
    for (int from : {(r + kWorld - 1) % kWorld, (r + kWorld - 2) % kWorld, r}) {
      in.emplace_back(size_of(from, r), 0);
      recvs.push_back({from, in.back().data(), in.back().size()});
    }
    comm.exchange(sends, recvs);
    for (std::size_t k = 0; k < recvs.size(); ++k) {
      const int from = recvs[k].peer;
      for (std::size_t i = 0; i < in[k].size(); ++i) ASSERT_EQ(in[k][i], pattern(from * 10 + r, i)) << from;
    }
  });
}

// The ranks of one host meet in a file store (no port): the rendezvous and a collective work through it.
TEST(GlooFileStoreTest, ranks_meet_in_a_file_store_and_all_gather) {
  if (!gloo_available()) GTEST_SKIP() << "built without Gloo";
  std::string name = (std::filesystem::temp_directory_path() / "hybridshard-gloo-store-XXXXXX").string();
  ASSERT_NE(::mkdtemp(name.data()), nullptr);
  const std::filesystem::path directory = name;
  constexpr int kWorld = 3;
  testing::run_ranks(kWorld, [&](int rank) {
    StoreOptions options;
    options.file = (directory / "store").string();
    options.timeout = milliseconds(10000);
    auto store = Store::open(options);
    auto comm = make_gloo_communicator(*store, rank, kWorld, milliseconds(10000));
    std::vector<std::uint8_t> mine(64, static_cast<std::uint8_t>(rank + 1));
    std::vector<std::uint8_t> all(64 * kWorld, 0);
    comm->all_gather(mine.data(), all.data(), mine.size());
    for (int peer = 0; peer < kWorld; ++peer) EXPECT_EQ(all[static_cast<std::size_t>(peer) * 64], peer + 1);
  });
  std::filesystem::remove_all(directory);
}

TEST_F(GlooCommunicatorTest, subgroups_work_for_members_and_are_null_elsewhere) {
  constexpr int kWorld = 4;
  run(kWorld, [](Communicator& comm) {
    auto odd = comm.subgroup({3, 1});
    auto even = comm.subgroup({0, 2});
    auto& mine = comm.rank() % 2 == 1 ? odd : even;
    auto& other = comm.rank() % 2 == 1 ? even : odd;
    ASSERT_NE(mine, nullptr);
    EXPECT_EQ(other, nullptr);
    ASSERT_EQ(mine->size(), 2);
    const int expected_rank = comm.rank() == 3 ? 0 : (comm.rank() == 1 ? 1 : comm.rank() / 2);
    EXPECT_EQ(mine->rank(), expected_rank);
    std::uint8_t send = static_cast<std::uint8_t>(comm.rank());
    std::uint8_t recv[2] = {0, 0};
    mine->all_gather(&send, recv, 1);
    if (comm.rank() % 2 == 1) {
      EXPECT_EQ(recv[0], 3);
      EXPECT_EQ(recv[1], 1);
    } else {
      EXPECT_EQ(recv[0], 0);
      EXPECT_EQ(recv[1], 2);
    }
    comm.barrier();
  });
}

TEST_F(GlooCommunicatorTest, rendezvous_without_the_peer_times_out) {
  auto store = client();
  try {
    make_gloo_communicator(*store, 0, 2, milliseconds(800));
    FAIL() << "expected TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0"), std::string::npos) << e.what();
  }
}

TEST_F(GlooCommunicatorTest, collective_a_peer_never_joins_times_out_naming_the_operation) {
  std::atomic<bool> rank0_done{false};
  testing::run_ranks(2, [&](int rank) {
    auto store = client();
    auto comm = make_gloo_communicator(*store, rank, 2, milliseconds(800));
    if (rank == 1) {
      // Joins the group but never calls the all-gather; stays until rank 0 gave up.
      while (!rank0_done) std::this_thread::sleep_for(milliseconds(10));
      return;
    }
    std::vector<std::uint8_t> send(64), recv(128);
    try {
      comm->all_gather(send.data(), recv.data(), 64);
      ADD_FAILURE() << "expected TimeoutError";
    } catch (const TimeoutError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("all_gather #0"), std::string::npos) << what;
      EXPECT_NE(what.find("rank 0/2"), std::string::npos) << what;
    }
    rank0_done = true;
  });
}

TEST_F(GlooCommunicatorTest, abort_ends_a_pending_receive_with_comm_error) {
  std::atomic<bool> rank0_done{false};
  testing::run_ranks(2, [&](int rank) {
    auto store = client();
    auto comm = make_gloo_communicator(*store, rank, 2, milliseconds(20000));
    if (rank == 1) {
      while (!rank0_done) std::this_thread::sleep_for(milliseconds(10));
      return;
    }
    std::thread aborter([&comm] {
      std::this_thread::sleep_for(milliseconds(200));
      comm->abort();
    });
    std::vector<std::uint8_t> recv(64);
    const RecvSpec recvs[] = {{1, recv.data(), recv.size()}};
    bool timed_out = false, failed = false;
    try {
      comm->exchange({}, recvs);
    } catch (const TimeoutError&) {
      timed_out = true;
    } catch (const CommError&) {
      failed = true;
    }
    aborter.join();
    EXPECT_TRUE(failed);
    EXPECT_FALSE(timed_out);
    EXPECT_THROW(comm->barrier(), CommError);
    rank0_done = true;
  });
}

TEST_F(GlooCommunicatorTest, peers_outside_the_group_are_rejected) {
  run(2, [](Communicator& comm) {
    std::uint8_t byte = 0;
    const SendSpec sends[] = {{5, &byte, 1}};
    EXPECT_THROW(comm.exchange(sends, {}), CommError);
    comm.barrier();
  });
}

}  // namespace
}  // namespace hybridshard::core
