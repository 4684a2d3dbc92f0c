// Both strategies on Gloo ranks (threads on 127.0.0.1, each with its own CPU device) over the layout matrix: the
// inference shards are bit-exact against the independent reference, stay right across train updates (no stale
// data), and the device bytes match the live flat buffers to the byte after every step. Built a second time as
// transition_nccl_test (HYBRIDSHARD_TEST_NCCL): the same matrix on NCCL ranks, one GPU each (test_backend.h).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hybridshard/core/communicator.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/store.h"
#include "hybridshard/core/transition.h"
#include "rank_threads.h"
#include "test_backend.h"
#include "transition_support.h"

namespace hybridshard::core {
namespace {

using std::chrono::milliseconds;
using testing::LayoutCase;

constexpr std::int64_t kCapacity = std::int64_t{1} << 30;
constexpr milliseconds kTimeout{20000};

// The transports each layout runs with: on NCCL (GPUs of one process) both the peer path and send/recv; on Gloo,
// which shares no device memory, send/recv.
std::vector<Transport> transports() {
  if (testing::kTestBackend == Backend::kNccl) return {Transport::kPeer, Transport::kSendRecv};
  return {Transport::kSendRecv};
}

// How the send/recv path cuts messages into wires (PlanOptions::direct_min_bytes): `bucketed`, the default threshold,
// under which the test models' runs all go through the buckets; `in_place`, every contiguous run a wire of its own,
// sent straight from the train buffer and received in place.
enum class Wires { kBucketed, kInPlace };

// A layout, the transport and the wires to run it with.
struct TransitionCase {
  LayoutCase layout;
  Transport transport = Transport::kAuto;
  Wires wires = Wires::kBucketed;
};

std::vector<TransitionCase> transition_cases() {
  std::vector<TransitionCase> cases;
  for (const LayoutCase& layout : testing::layout_matrix()) {
    for (Transport transport : transports()) {
      cases.push_back({layout, transport, Wires::kBucketed});
      if (transport == Transport::kSendRecv) cases.push_back({layout, transport, Wires::kInPlace});
    }
  }
  return cases;
}

// Whether the case reads peers directly (NCCL ranks of one process, where the GPUs can read each other's memory).
bool reads_directly(const TransitionCase& c) {
  return testing::kTestBackend == Backend::kNccl && c.transport != Transport::kSendRecv &&
         testing::gpus_read_each_other(c.layout.train.world_size());
}

class TransitionMultirankTest : public ::testing::TestWithParam<TransitionCase> {
 protected:
  void SetUp() override {
    if (const std::string why = testing::why_not_runnable(GetParam().layout.train.world_size()); !why.empty()) {
      GTEST_SKIP() << why;
    }
    StoreOptions options;
    options.port = 0;
    options.is_server = true;
    options.timeout = kTimeout;
    server_ = Store::open(options);
  }

  std::unique_ptr<Communicator> connect(int rank, int world_size, std::unique_ptr<Store>& store) {
    StoreOptions options;
    options.port = server_->port();
    options.timeout = kTimeout;
    store = Store::open(options);
    return testing::make_rank_communicator(*store, rank, world_size, kTimeout);
  }

  std::unique_ptr<Store> server_;
};

// Small buckets, so that every layout runs several rounds (and lands each bucket while the next round moves).
PlanOptions small_buckets(Wires wires = Wires::kBucketed) {
  PlanOptions options;
  options.bucket_bytes = 4096;
  if (wires == Wires::kInPlace) options.direct_min_bytes = 0;
  return options;
}

// Runs `body` on every rank; a rank's exception is reported with its rank before the first one is rethrown, so that
// the cause shows and not only the peers' broken connections.
void run_ranks(int world_size, const std::function<void(int)>& body) {
  testing::run_ranks(world_size, [&](int rank) {
    try {
      body(rank);
    } catch (const std::exception& error) {
      ADD_FAILURE() << "rank " << rank << ": " << error.what();
      throw;
    }
  });
}

// The device holds exactly the flat buffers the events say are resident, in both places.
void expect_accounting(Device& device, const RecordingEventSink& events, const std::string& step) {
  const std::vector<Event> all = events.events();
  EXPECT_EQ(device.bytes_in_use(Residency::kGpu), testing::live_bytes(all, Residency::kGpu)) << step;
  EXPECT_EQ(device.bytes_in_use(Residency::kCpu), testing::live_bytes(all, Residency::kCpu)) << step;
}

TEST_P(TransitionMultirankTest, hybridshard_shards_match_the_reference_across_train_updates) {
  const LayoutCase& layout = GetParam().layout;
  const bool direct = reads_directly(GetParam());
  const TransitionOptions options{GetParam().transport};
  const InferenceLayout inference = layout.inference();
  const int world_size = layout.train.world_size();
  run_ranks(world_size, [&](int rank) {
    std::unique_ptr<Store> store;
    auto comm = connect(rank, world_size, store);
    auto device = testing::make_rank_device(rank, kCapacity);
    RecordingEventSink events;
    const RankPlan plan = make_rank_plan(layout.spec, layout.train, inference, rank, small_buckets(GetParam().wires));
    const int shard = inference.coord(rank).tp_rank;
    ASSERT_EQ(inference_tp_rank_of(Strategy::kHybridshard, layout.train, inference, rank), shard);
    testing::TrainBuffers train(plan, *device, &events);
    std::int64_t train_bytes = 0;
    for (const BufferLayout& buffer : plan.train_buffers) train_bytes += buffer.bytes;
    {
      auto transition = make_transition(Strategy::kHybridshard, plan, *comm, *device, &events, options);
      EXPECT_EQ(transition->inference_params(), nullptr);

      // Version 1: a fresh enter.
      train.generate(plan, *device, 1);
      transition->set_iteration(0);
      FlatBuffer& shard_buffer = transition->enter(train.pointers);
      EXPECT_EQ(shard_buffer.name(), "rollout.params");
      EXPECT_EQ(shard_buffer.residency(), Residency::kGpu);
      EXPECT_EQ(testing::compare_with_reference(layout.spec, inference, shard, 1, *device, shard_buffer), "")
          << "rank " << rank;
      const TransitionStats& stats = transition->last_enter();
      const std::vector<Event> after_enter = events.events();
      EXPECT_EQ(stats.bytes_network_received, plan.bytes_received());
      EXPECT_EQ(stats.bytes_host_to_device, 0);
      if (direct) {
        // Every byte read once from the peer's train buffer and written once: no send, no bucket, no pack.
        EXPECT_EQ(stats.bytes_network_sent, 0);
        EXPECT_EQ(stats.bytes_device_to_device, plan.bytes_local());
        EXPECT_EQ(stats.peak_extra_device_bytes, plan.inference_buffer.bytes);
        EXPECT_EQ(testing::transfer_bytes(after_enter, TransferPath::kNetwork, "enter.peer.recv"),
                  plan.bytes_received());
        EXPECT_EQ(testing::transfer_bytes(after_enter, TransferPath::kNetwork, "enter.round"), 0);
        for (const Event& event : after_enter) {
          EXPECT_FALSE(event.type == EventType::kCheck && event.operation == "enter.transport") << event.detail;
        }
      } else {
        EXPECT_EQ(stats.bytes_network_sent, plan.bytes_sent());
        // Only bucketed wires are copied on the device besides the local pieces: packed, or landed from a bucket.
        EXPECT_EQ(stats.bytes_device_to_device,
                  plan.bytes_local() + plan.bytes_packed() + plan.bytes_landed_from_buckets());
        EXPECT_EQ(stats.peak_extra_device_bytes, plan.peak_extra_bytes());
        if (GetParam().wires == Wires::kInPlace && plan.bytes_received() > 0) {
          EXPECT_LT(plan.bytes_landed_from_buckets(), plan.bytes_received()) << "some wires land in place";
        }
        if (plan.rounds.size() > 2 && plan.bytes_landed_from_buckets() > 0) {
          EXPECT_EQ(testing::transfer_bytes(after_enter, TransferPath::kDeviceToDevice, "enter.land"),
                    plan.bytes_landed_from_buckets());
        }
        EXPECT_EQ(testing::transfer_bytes(after_enter, TransferPath::kNetwork, "enter.round"),
                  plan.bytes_received() + plan.bytes_sent());
      }
      expect_accounting(*device, events, "after enter");
      EXPECT_EQ(device->bytes_in_use(Residency::kGpu), train_bytes + plan.inference_buffer.bytes);

      // Free, train update, enter: version 2 everywhere.
      transition->exit(ExitPolicy::kFree);
      EXPECT_EQ(shard_buffer.residency(), Residency::kNone);
      EXPECT_EQ(device->bytes_in_use(Residency::kGpu), train_bytes);
      expect_accounting(*device, events, "after exit(free)");
      train.generate(plan, *device, 2);
      transition->set_iteration(1);
      EXPECT_EQ(
          testing::compare_with_reference(layout.spec, inference, shard, 2, *device, transition->enter(train.pointers)),
          "")
          << "rank " << rank << " after a train update";
      expect_accounting(*device, events, "after the second enter");

      // Offload keeps the shard on the host; the next enter overwrites it with version 3 and frees the host copy.
      transition->exit(ExitPolicy::kOffload);
      EXPECT_EQ(shard_buffer.residency(), Residency::kCpu);
      EXPECT_EQ(device->bytes_in_use(Residency::kCpu), plan.inference_buffer.bytes);
      EXPECT_EQ(device->bytes_in_use(Residency::kGpu), train_bytes);
      EXPECT_EQ(transition->last_exit().bytes_device_to_host, plan.inference_buffer.bytes);
      EXPECT_EQ(testing::compare_with_reference(layout.spec, inference, shard, 2, *device, shard_buffer), "")
          << "rank " << rank << " offloaded copy";
      expect_accounting(*device, events, "after exit(offload)");
      train.generate(plan, *device, 3);
      transition->set_iteration(2);
      EXPECT_EQ(
          testing::compare_with_reference(layout.spec, inference, shard, 3, *device, transition->enter(train.pointers)),
          "")
          << "rank " << rank << " after offload and a train update";
      EXPECT_EQ(transition->last_enter().bytes_host_to_device, 0);
      EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 0);
      expect_accounting(*device, events, "after enter from offload");
      transition->exit(ExitPolicy::kFree);
      EXPECT_EQ(device->bytes_in_use(Residency::kGpu), train_bytes);
      expect_accounting(*device, events, "after the last exit");
    }
    train.buffers.clear();
    EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
    EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 0);
  });
}

TEST_P(TransitionMultirankTest, seed_gives_the_same_bytes_where_it_applies) {
  const LayoutCase& layout = GetParam().layout;
  if (GetParam().transport != transports().front() || GetParam().wires != Wires::kBucketed) {
    GTEST_SKIP() << "the seed has no transport: run once per layout";
  }
  const InferenceLayout inference = layout.inference();
  if (!strategy_applies(Strategy::kSeed, layout.spec, layout.train, inference)) {
    GTEST_SKIP() << "the seed does not apply to " << layout.name;
  }
  const int world_size = layout.train.world_size();
  run_ranks(world_size, [&](int rank) {
    std::unique_ptr<Store> store;
    auto comm = connect(rank, world_size, store);
    auto device = testing::make_rank_device(rank, kCapacity);
    RecordingEventSink events;
    const RankPlan plan = make_rank_plan(layout.spec, layout.train, inference, rank, small_buckets());
    const int seed_shard = inference_tp_rank_of(Strategy::kSeed, layout.train, inference, rank);
    testing::TrainBuffers train(plan, *device, &events);
    std::int64_t train_bytes = 0;
    for (const BufferLayout& buffer : plan.train_buffers) train_bytes += buffer.bytes;
    {
      // The hybridshard result for the same version, to compare byte for byte where the shards coincide.
      train.generate(plan, *device, 5);
      std::vector<std::uint8_t> hybridshard_bytes;
      {
        auto transition = make_transition(Strategy::kHybridshard, plan, *comm, *device, &events);
        FlatBuffer& buffer = transition->enter(train.pointers);
        hybridshard_bytes = testing::download(*device, buffer.data(), buffer.bytes(), buffer.residency());
      }

      auto seed = make_transition(Strategy::kSeed, plan, *comm, *device, &events);
      std::int64_t other_stage_bytes = 0;
      for (int pp_rank = 0; pp_rank < layout.train.pp; ++pp_rank) {
        if (pp_rank == layout.train.coord(rank).pp_rank) continue;
        for (const BufferLayout& buffer :
             train_param_buffers(layout.spec, layout.train, layout.train.coord(rank).tp_rank, pp_rank)) {
          other_stage_bytes += buffer.bytes;
        }
      }
      EXPECT_EQ(device->bytes_in_use(Residency::kCpu), other_stage_bytes);
      expect_accounting(*device, events, "seed constructed");

      FlatBuffer& buffer = seed->enter(train.pointers);
      EXPECT_EQ(testing::compare_with_reference(layout.spec, inference, seed_shard, 5, *device, buffer), "")
          << "rank " << rank << " seed shard " << seed_shard;
      if (seed_shard == inference.coord(rank).tp_rank) {
        EXPECT_EQ(testing::download(*device, buffer.data(), buffer.bytes(), buffer.residency()), hybridshard_bytes)
            << "rank " << rank;
      }
      const TransitionStats& stats = seed->last_enter();
      EXPECT_EQ(stats.bytes_host_to_device, other_stage_bytes);  // the stale copies the seed loads anyway
      EXPECT_GE(stats.peak_extra_device_bytes, plan.inference_buffer.bytes + other_stage_bytes);
      expect_accounting(*device, events, "seed entered");

      // Exit offloads the other stages; after a train update the next enter holds the new weights, not the stale
      // host copies.
      seed->exit(ExitPolicy::kFree);
      EXPECT_EQ(seed->last_exit().bytes_device_to_host, other_stage_bytes);
      EXPECT_EQ(device->bytes_in_use(Residency::kGpu), train_bytes);
      EXPECT_EQ(device->bytes_in_use(Residency::kCpu), other_stage_bytes);
      expect_accounting(*device, events, "seed exited");
      train.generate(plan, *device, 6);
      EXPECT_EQ(
          testing::compare_with_reference(layout.spec, inference, seed_shard, 6, *device, seed->enter(train.pointers)),
          "")
          << "rank " << rank << " after a train update";
      seed->exit(ExitPolicy::kOffload);
      EXPECT_EQ(device->bytes_in_use(Residency::kCpu), other_stage_bytes + plan.inference_buffer.bytes);
      expect_accounting(*device, events, "seed offloaded");
    }
    // The seed's groups are gone; the world communicator goes on.
    comm->barrier();
    train.buffers.clear();
    EXPECT_EQ(device->bytes_in_use(Residency::kGpu), 0);
    EXPECT_EQ(device->bytes_in_use(Residency::kCpu), 0);
  });
}

INSTANTIATE_TEST_SUITE_P(Layouts, TransitionMultirankTest, ::testing::ValuesIn(transition_cases()),
                         [](const ::testing::TestParamInfo<TransitionCase>& case_info) {
                           return case_info.param.layout.name + "_" +
                                  std::string(transport_name(case_info.param.transport)) +
                                  (case_info.param.wires == Wires::kInPlace ? "_in_place" : "");
                         });

// A rank that never arrives at enter: the others' enter fails within the timeout (on the peer path the address
// exchange is where they wait), not a hang.
TEST(TransitionTimeoutTest, a_rank_that_never_enters_is_an_error_within_the_timeout) {
  const LayoutCase layout = testing::layout_matrix().front();  // tp2_to_tp1_bf16: two ranks
  if (const std::string why = testing::why_not_runnable(2); !why.empty()) GTEST_SKIP() << why;
  constexpr milliseconds kShort{3000};
  StoreOptions server_options;
  server_options.port = 0;
  server_options.is_server = true;
  server_options.timeout = kTimeout;
  const std::unique_ptr<Store> server = Store::open(server_options);
  const InferenceLayout inference = layout.inference();
  std::atomic<bool> done{false};
  testing::run_ranks(2, [&](int rank) {
    StoreOptions options;
    options.port = server->port();
    options.timeout = kTimeout;
    const std::unique_ptr<Store> store = Store::open(options);
    auto comm = testing::make_rank_communicator(*store, rank, 2, kShort);
    auto device = testing::make_rank_device(rank, kCapacity);
    const RankPlan plan = make_rank_plan(layout.spec, layout.train, inference, rank);
    testing::TrainBuffers train(plan, *device, nullptr);
    train.generate(plan, *device, 1);
    auto transition = make_transition(Strategy::kHybridshard, plan, *comm, *device, nullptr, {transports().front()});
    if (rank == 1) {
      // Never enters; stays until rank 0 has given up, so that its communicator is still there to be waited for.
      const auto give_up = std::chrono::steady_clock::now() + 10 * kShort;
      while (!done && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(milliseconds(10));
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    EXPECT_THROW(transition->enter(train.pointers), Error);
    const auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_LT(waited, kShort + milliseconds(5000));
    done = true;
  });
}

}  // namespace
}  // namespace hybridshard::core
