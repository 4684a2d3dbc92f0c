// A predicted enter time: a rank's plan (bytes per peer, pieces, messages, local bytes) on a cluster described by a
// few figures (Topology). Ranks are placed on hosts in rank order, gpus_per_host per host (rank r on host
// r / gpus_per_host), as torchrun, Slurm and the launcher place them.
//
// The model, per rank (T = the transport):
//   local      = local bytes / device_copy                       (the piece kernel, HBM to HBM)
//   peer path  = max(bytes read from same-host peers, bytes they read from this rank) / intra_host
//                + pieces read x message_latency / 4              (copy engines over 4 streams)
//                used for same-host peers when T is auto or peer
//   send/recv  = exchange + (1 - sendrecv_copy_overlap) x copies / device_copy
//                for the other peers (every peer when T is sendrecv), where
//     exchange = max(intra-host in, out) / (intra_host x sendrecv_efficiency)
//                + max(inter-host in, out) / inter_host
//                + max(wires sent, wires received) x sendrecv_latency   (a send and a receive run at once)
//     copies   = bytes packed into and landed from buckets, plus the local bytes on the send/recv path alone (its
//                local pieces are copied slice by slice beside the rounds; with a peer path they are in its pass)
//   enter      = max(local, peer path) + peer_sync + send/recv + 2 x message_latency x ceil(log2 world)  (barrier)
//                (peer_sync: the peer path's address exchange and closing world barrier, when it reads any peer)
// On the send/recv path alone: enter = max(local, send/recv) + barrier.
// The rounds are queued: the host posts them all, and each round's pack, the landing of the round before and the
// local slices run on the device's lanes beside the exchanges, so no round waits for the host. They still share the
// GPU with NCCL's kernels: sendrecv_copy_overlap is the share of their time the exchanges hide (fitted on 2 x H200).
// A job's enter is its slowest rank's (enter ends with a world barrier).
#pragma once

#include <cstdint>
#include <vector>

#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/transition.h"

namespace hybridshard::core {

// Defaults: H100 / H200 (NVLink 4, NV18) hosts of 8 GPUs with one 400 Gb/s InfiniBand NIC per GPU. See
// docs/performance.md ("Predicted enter time") for where each figure comes from and how the model compares with
// measured enters.
struct Topology {
  int gpus_per_host = 8;
  double intra_host_bytes_per_s = 390e9;    // one direction, per GPU: copy engines over NVLink (measured 388 GB/s)
  double inter_host_bytes_per_s = 45e9;     // one direction, per GPU: 400 Gb/s = 50 GB/s line rate, ~90 % reached
  double device_copy_bytes_per_s = 1.6e12;  // a device-to-device copy kernel (pack, unpack, local pieces)
  double message_latency_s = 10e-6;         // per copy of the peer path, and per step of the closing barrier
  double peer_sync_s = 1e-3;  // the peer path's address exchange + world barrier (2 x H200: enter - landing pass)
  // NCCL send/recv within a host: its rate over a link's (2 x H200: one message per peer and direction, 361 of 390
  // GB/s), what each send or receive costs beyond its bytes (4 MiB against 64 MiB wires), and the share of the
  // packs, landings and local copies that the queued rounds' exchanges hide (fitted to the measured enters).
  double sendrecv_efficiency = 0.925;
  double sendrecv_latency_s = 35e-6;
  double sendrecv_copy_overlap = 0.35;
};

// What a rank moves, per peer: enough for the model, and small (no pieces).
struct PeerTraffic {
  int peer = 0;
  std::int64_t received = 0;  // bytes this rank lands from the peer
  std::int64_t sent = 0;      // bytes the peer lands from this rank
  std::int64_t pieces_read = 0;
  std::int64_t send_wires = 0;  // sends to the peer over all rounds (the wires of this rank's messages to it)
  std::int64_t recv_wires = 0;  // receives from the peer over all rounds
  std::int64_t staged = 0;      // bytes either way that go through a bucket (packed or landed)
};

struct RankTraffic {
  int rank = 0;
  std::int64_t local_bytes = 0;
  std::vector<PeerTraffic> peers;  // by ascending peer
};

RankTraffic rank_traffic(const RankPlan& plan);

// `traffic` of a rank of the same plan class, moved to `rank`: every peer keeps its tp and pp rank and its replica's
// distance from the rank's (core/plan_classes.h).
RankTraffic moved_to(const RankTraffic& traffic, const TrainLayout& train, int rank);

struct EnterTimeEstimate {
  double seconds = 0;
  double local_seconds = 0;
  double peer_path_seconds = 0;
  double sendrecv_seconds = 0;        // exchange_seconds plus the copies the exchanges do not hide
  double exchange_seconds = 0;        // the send/recv rounds' transfers alone
  double barrier_seconds = 0;         // the closing barrier, plus peer_sync when the peer path reads a peer
  std::int64_t same_host_bytes = 0;   // received from peers on the rank's host
  std::int64_t other_host_bytes = 0;  // received from peers on other hosts
};

EnterTimeEstimate predict_enter_time(const RankTraffic& traffic, int world_size, const Topology& topology,
                                     Transport transport);

}  // namespace hybridshard::core
