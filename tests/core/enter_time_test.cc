// The enter-time model (core/enter_time.h): its terms by hand on a small plan, which peers count as on the host, and
// the per-class shortcut (one plan's traffic moved to every member) against every rank's own plan.
#include "hybridshard/core/enter_time.h"

#include <gtest/gtest.h>

#include <cmath>

#include "hybridshard/core/plan_classes.h"
#include "hybridshard/core/reshard_plan.h"

namespace hybridshard::core {
namespace {

// tp 2 -> tp' 1 on 2 ranks: each rank lands half of its shard from the other.
RankPlan two_rank_plan(int rank) {
  return make_rank_plan(*model_preset("tiny"), TrainLayout{.tp = 2}, InferenceLayout{.tp = 1, .world_size = 2}, rank,
                        PlanOptions{4096});
}

TEST(EnterTimeTest, peer_path_terms_by_hand) {
  const RankPlan plan = two_rank_plan(0);
  const RankTraffic traffic = rank_traffic(plan);
  ASSERT_EQ(traffic.peers.size(), 1u);
  const PeerTraffic& peer = traffic.peers[0];
  EXPECT_EQ(peer.peer, 1);
  EXPECT_EQ(peer.received, plan.bytes_received());
  EXPECT_EQ(peer.sent, plan.bytes_sent());
  EXPECT_EQ(peer.pieces_read, static_cast<std::int64_t>(plan.peer_reads.at(0).pieces.size()));
  EXPECT_EQ(peer.staged, plan.bytes_packed() + plan.bytes_landed_from_buckets());
  std::int64_t wires = 0;
  for (const Round& round : plan.rounds) {
    for (const Message& m : round.sends) wires += static_cast<std::int64_t>(m.wires.size());
    for (const Message& m : round.recvs) wires += static_cast<std::int64_t>(m.wires.size());
  }
  EXPECT_EQ(peer.messages, wires);
  EXPECT_EQ(traffic.local_bytes, plan.bytes_local());

  Topology topology;
  topology.intra_host_bytes_per_s = 1e6;
  topology.device_copy_bytes_per_s = 1e9;
  topology.message_latency_s = 1e-3;
  const EnterTimeEstimate t = predict_enter_time(traffic, 2, topology, Transport::kPeer);
  const double peer_seconds =
      static_cast<double>(std::max(peer.received, peer.sent)) / 1e6 + static_cast<double>(peer.pieces_read) * 1e-3 / 4;
  EXPECT_DOUBLE_EQ(t.peer_path_seconds, peer_seconds);
  EXPECT_DOUBLE_EQ(t.sendrecv_seconds, 0.0);
  EXPECT_DOUBLE_EQ(t.barrier_seconds, 2e-3 + topology.peer_sync_s);
  EXPECT_DOUBLE_EQ(t.seconds, std::max(t.local_seconds, peer_seconds) + 2e-3 + topology.peer_sync_s);
  EXPECT_EQ(t.same_host_bytes, plan.bytes_received());
  EXPECT_EQ(t.other_host_bytes, 0);
}

TEST(EnterTimeTest, peers_on_another_host_go_over_the_slower_link) {
  const RankTraffic traffic = rank_traffic(two_rank_plan(0));
  Topology one_host;
  one_host.peer_sync_s = 0;  // link time alone: the tiny model's bytes take microseconds
  Topology two_hosts = one_host;
  two_hosts.gpus_per_host = 1;
  const EnterTimeEstimate near = predict_enter_time(traffic, 2, one_host, Transport::kAuto);
  const EnterTimeEstimate far = predict_enter_time(traffic, 2, two_hosts, Transport::kAuto);
  EXPECT_EQ(far.other_host_bytes, near.same_host_bytes);
  EXPECT_EQ(far.peer_path_seconds, 0.0);  // no peer reads across hosts
  EXPECT_GT(far.sendrecv_seconds, 0.0);
  EXPECT_GT(far.seconds, near.seconds);
  // Send/recv forced within the host: pack, unpack and NCCL's rate cost more than the peer path.
  EXPECT_GT(predict_enter_time(traffic, 2, one_host, Transport::kSendRecv).seconds, near.seconds);
}

// Every rank of a 96-rank job on hosts of 4 GPUs (hosts cut across replicas): the prediction from its class's plan
// moved to the rank equals the one from the rank's own plan.
TEST(EnterTimeTest, a_class_plan_moved_to_each_member_predicts_as_the_members_own_plan) {
  const ModelSpec spec = *model_preset("tiny");
  const TrainLayout train{.tp = 2, .pp = 2, .dp = 24};
  const InferenceLayout inference{.tp = 4, .world_size = 96};
  Topology topology;
  topology.gpus_per_host = 4;
  topology.intra_host_bytes_per_s = 3e5;
  topology.inter_host_bytes_per_s = 1e5;
  ReshardPlanner planner(spec, train, inference, PlanOptions{4096});
  int cases = 0;
  for (const PlanClass& plan_class : plan_classes(train, inference)) {
    const RankTraffic representative = rank_traffic(planner.plan(plan_class.representative));
    for (const int rank : plan_class.ranks) {
      for (const Transport transport : {Transport::kAuto, Transport::kSendRecv}) {
        const EnterTimeEstimate moved =
            predict_enter_time(moved_to(representative, train, rank), 96, topology, transport);
        const EnterTimeEstimate own = predict_enter_time(rank_traffic(planner.plan(rank)), 96, topology, transport);
        EXPECT_DOUBLE_EQ(moved.seconds, own.seconds) << "rank " << rank;
        EXPECT_EQ(moved.same_host_bytes, own.same_host_bytes) << "rank " << rank;
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 2 * 96);
}

}  // namespace
}  // namespace hybridshard::core
