#include "hybridshard/core/enter_time.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace hybridshard::core {

RankTraffic rank_traffic(const RankPlan& plan) {
  std::map<int, PeerTraffic> by_peer;
  const auto at = [&by_peer](int peer) -> PeerTraffic& {
    PeerTraffic& traffic = by_peer[peer];
    traffic.peer = peer;
    return traffic;
  };
  for (const Round& round : plan.rounds) {
    for (const Message& message : round.recvs) {
      at(message.peer).received += message.bytes;
      at(message.peer).recv_wires += static_cast<std::int64_t>(message.wires.size());
      at(message.peer).staged += message.staged_bytes();
    }
    for (const Message& message : round.sends) {
      at(message.peer).sent += message.bytes;
      at(message.peer).send_wires += static_cast<std::int64_t>(message.wires.size());
      at(message.peer).staged += message.staged_bytes();
    }
  }
  for (const PeerPieces& reads : plan.peer_reads) {
    at(reads.peer).pieces_read += static_cast<std::int64_t>(reads.pieces.size());
  }
  RankTraffic traffic;
  traffic.rank = plan.rank;
  traffic.local_bytes = plan.bytes_local();
  for (const auto& [peer, peer_traffic] : by_peer) traffic.peers.push_back(peer_traffic);
  return traffic;
}

RankTraffic moved_to(const RankTraffic& traffic, const TrainLayout& train, int rank) {
  const int shift = train.coord(rank).dp_rank - train.coord(traffic.rank).dp_rank;
  RankTraffic moved = traffic;
  moved.rank = rank;
  for (PeerTraffic& peer : moved.peers) {
    const TrainLayout::Coord coord = train.coord(peer.peer);
    peer.peer =
        train.rank_of({coord.tp_rank, ((coord.dp_rank + shift) % train.dp + train.dp) % train.dp, coord.pp_rank});
  }
  std::sort(moved.peers.begin(), moved.peers.end(),
            [](const PeerTraffic& a, const PeerTraffic& b) { return a.peer < b.peer; });
  return moved;
}

EnterTimeEstimate predict_enter_time(const RankTraffic& traffic, int world_size, const Topology& topology,
                                     Transport transport) {
  const int per_host = std::max(1, topology.gpus_per_host);
  const int host = traffic.rank / per_host;
  const bool peer_path = transport != Transport::kSendRecv;

  std::int64_t peer_in = 0, peer_out = 0, pieces = 0;  // read directly (same host, peer path)
  std::int64_t intra_in = 0, intra_out = 0;            // send/recv within the host
  std::int64_t inter_in = 0, inter_out = 0, staged = 0, send_wires = 0, recv_wires = 0;  // send/recv
  EnterTimeEstimate estimate;
  for (const PeerTraffic& peer : traffic.peers) {
    const bool same_host = peer.peer / per_host == host;
    (same_host ? estimate.same_host_bytes : estimate.other_host_bytes) += peer.received;
    if (same_host && peer_path) {
      peer_in += peer.received;
      peer_out += peer.sent;
      pieces += peer.pieces_read;
      continue;
    }
    (same_host ? intra_in : inter_in) += peer.received;
    (same_host ? intra_out : inter_out) += peer.sent;
    staged += peer.staged;
    send_wires += peer.send_wires;
    recv_wires += peer.recv_wires;
  }
  const auto seconds = [](std::int64_t bytes, double rate) { return static_cast<double>(bytes) / rate; };
  estimate.local_seconds = seconds(traffic.local_bytes, topology.device_copy_bytes_per_s);
  estimate.peer_path_seconds = seconds(std::max(peer_in, peer_out), topology.intra_host_bytes_per_s) +
                               static_cast<double>(pieces) * topology.message_latency_s / 4.0;
  const bool any_peer_read = peer_in + peer_out > 0;
  if (send_wires + recv_wires > 0) {
    estimate.exchange_seconds =
        seconds(std::max(intra_in, intra_out), topology.intra_host_bytes_per_s * topology.sendrecv_efficiency) +
        seconds(std::max(inter_in, inter_out), topology.inter_host_bytes_per_s) +
        static_cast<double>(std::max(send_wires, recv_wires)) * topology.sendrecv_latency_s;
    // Beside the rounds: the packs and landings, and the local pieces where no peer path's pass copies them.
    const std::int64_t copies = staged + (any_peer_read ? 0 : traffic.local_bytes);
    estimate.sendrecv_seconds = estimate.exchange_seconds + (1.0 - topology.sendrecv_copy_overlap) *
                                                                seconds(copies, topology.device_copy_bytes_per_s);
  }
  estimate.barrier_seconds =
      2.0 * topology.message_latency_s * std::ceil(std::log2(std::max(2.0, static_cast<double>(world_size))));
  if (any_peer_read) estimate.barrier_seconds += topology.peer_sync_s;
  estimate.seconds =
      (any_peer_read ? std::max(estimate.local_seconds, estimate.peer_path_seconds) + estimate.sendrecv_seconds
                     : std::max(estimate.local_seconds, estimate.sendrecv_seconds)) +
      estimate.barrier_seconds;
  return estimate;
}

}  // namespace hybridshard::core
