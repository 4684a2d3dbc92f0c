// The enter-time model (core/enter_time.h): its terms by hand on a small plan, the send/recv path's structure (the
// exchange at a share of the link plus a cost per send or receive, the copies beside it less the share it hides, the
// local pieces beside the rounds only without a peer path), which peers count as on the host, and the per-class
// shortcut (one plan's traffic moved to every member) against every rank's own plan.
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
  std::int64_t send_wires = 0, recv_wires = 0;
  for (const Round& round : plan.rounds) {
    for (const Message& m : round.sends) send_wires += static_cast<std::int64_t>(m.wires.size());
    for (const Message& m : round.recvs) recv_wires += static_cast<std::int64_t>(m.wires.size());
  }
  EXPECT_EQ(peer.send_wires, send_wires);
  EXPECT_EQ(peer.recv_wires, recv_wires);
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

// A topology of round numbers, so that each term can be written down.
Topology round_topology() {
  Topology topology;
  topology.intra_host_bytes_per_s = 1e6;
  topology.inter_host_bytes_per_s = 1e5;
  topology.device_copy_bytes_per_s = 1e9;
  topology.message_latency_s = 1e-3;
  topology.peer_sync_s = 5e-3;
  topology.sendrecv_efficiency = 0.5;
  topology.sendrecv_latency_s = 2e-3;
  topology.sendrecv_copy_overlap = 0.25;
  return topology;
}

TEST(EnterTimeTest, sendrecv_terms_by_hand) {
  const RankPlan plan = two_rank_plan(0);
  const RankTraffic traffic = rank_traffic(plan);
  const PeerTraffic& peer = traffic.peers.at(0);
  ASSERT_GT(peer.staged, 0);  // the tiny plan packs and lands through buckets
  const Topology topology = round_topology();
  const EnterTimeEstimate t = predict_enter_time(traffic, 2, topology, Transport::kSendRecv);
  const double exchange = static_cast<double>(std::max(peer.received, peer.sent)) / (1e6 * 0.5) +
                          static_cast<double>(std::max(peer.send_wires, peer.recv_wires)) * 2e-3;
  // Alone, the send/recv path copies the local pieces beside the rounds too.
  const double copies = static_cast<double>(peer.staged + traffic.local_bytes) / 1e9;
  EXPECT_DOUBLE_EQ(t.exchange_seconds, exchange);
  EXPECT_DOUBLE_EQ(t.sendrecv_seconds, exchange + 0.75 * copies);
  EXPECT_DOUBLE_EQ(t.peer_path_seconds, 0.0);
  EXPECT_DOUBLE_EQ(t.barrier_seconds, 2e-3);  // no peer_sync without a peer read
  EXPECT_DOUBLE_EQ(t.seconds, std::max(t.local_seconds, t.sendrecv_seconds) + 2e-3);
}

// One peer over send/recv, `bytes` each way as `wires` sends and `wires` receives, nothing staged, nothing local.
RankTraffic one_peer(std::int64_t bytes, std::int64_t send_wires, std::int64_t recv_wires) {
  RankTraffic traffic;
  traffic.peers.push_back(
      PeerTraffic{.peer = 1, .received = bytes, .sent = bytes, .send_wires = send_wires, .recv_wires = recv_wires});
  return traffic;
}

// What the bench's send/recv bound moves (one message per peer and direction): the exchange alone, the link's rate
// times sendrecv_efficiency plus one send/receive's cost.
TEST(EnterTimeTest, one_message_per_peer_and_direction_is_the_exchange_alone) {
  const Topology topology = round_topology();
  const EnterTimeEstimate t = predict_enter_time(one_peer(1000, 1, 1), 2, topology, Transport::kSendRecv);
  EXPECT_DOUBLE_EQ(t.exchange_seconds, 1000 / (1e6 * 0.5) + 2e-3);
  EXPECT_DOUBLE_EQ(t.sendrecv_seconds, t.exchange_seconds);
  EXPECT_DOUBLE_EQ(t.seconds, t.sendrecv_seconds + t.barrier_seconds);
}

// A send and a receive run at once: the wires of the busier direction cost, not both directions' sum.
TEST(EnterTimeTest, each_send_or_receive_costs_the_latency_in_the_busier_direction) {
  const Topology topology = round_topology();
  const auto exchange = [&](std::int64_t sends, std::int64_t recvs) {
    return predict_enter_time(one_peer(1000, sends, recvs), 2, topology, Transport::kSendRecv).exchange_seconds;
  };
  EXPECT_DOUBLE_EQ(exchange(3, 5), exchange(5, 5));
  EXPECT_DOUBLE_EQ(exchange(5, 3), exchange(5, 5));
  EXPECT_NEAR(exchange(5, 5) - exchange(1, 1), 4 * 2e-3, 1e-12);
}

// The packs, landings and local slices run beside the queued rounds; sendrecv_copy_overlap is the share of their
// time the exchanges hide.
TEST(EnterTimeTest, the_copies_beside_the_rounds_cost_what_the_exchanges_do_not_hide) {
  RankTraffic traffic = one_peer(1000, 1, 1);
  traffic.peers[0].staged = 600;
  traffic.local_bytes = 400;
  Topology topology = round_topology();
  const double copies = 1000 / 1e9;
  for (const double overlap : {0.0, 0.25, 1.0}) {
    topology.sendrecv_copy_overlap = overlap;
    const EnterTimeEstimate t = predict_enter_time(traffic, 2, topology, Transport::kSendRecv);
    EXPECT_NEAR(t.sendrecv_seconds - t.exchange_seconds, (1 - overlap) * copies, 1e-15) << "overlap " << overlap;
  }
}

// With a peer path the local pieces are in its landing pass: only the bucket copies sit beside the rounds (here the
// rank reads its same-host peer and sends to one on another host).
TEST(EnterTimeTest, with_a_peer_path_the_local_pieces_are_not_beside_the_rounds) {
  RankTraffic traffic;
  traffic.local_bytes = 400;
  traffic.peers.push_back(PeerTraffic{.peer = 1, .received = 800, .sent = 800, .pieces_read = 4});
  traffic.peers.push_back(
      PeerTraffic{.peer = 2, .received = 100, .sent = 100, .send_wires = 1, .recv_wires = 1, .staged = 200});
  Topology topology = round_topology();
  topology.gpus_per_host = 2;
  const EnterTimeEstimate t = predict_enter_time(traffic, 4, topology, Transport::kAuto);
  EXPECT_DOUBLE_EQ(t.exchange_seconds, 100 / 1e5 + 2e-3);  // the other host's link, at its own rate
  EXPECT_DOUBLE_EQ(t.sendrecv_seconds, t.exchange_seconds + 0.75 * 200 / 1e9);
  EXPECT_DOUBLE_EQ(t.peer_path_seconds, 800 / 1e6 + 4 * 1e-3 / 4);
  EXPECT_DOUBLE_EQ(t.barrier_seconds, 2 * 1e-3 * 2 + 5e-3);
  EXPECT_DOUBLE_EQ(t.seconds, std::max(t.local_seconds, t.peer_path_seconds) + t.sendrecv_seconds + t.barrier_seconds);
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
  // Send/recv forced within the host: NCCL's share of the link, the sends' costs and the copies cost more than the
  // peer path.
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
