// One rank's benchmark: the copy bounds, then per strategy the enter/exit loop (with the bit-exact check and the
// collective bound for the bytes that strategy received), then the batch re-distribution.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "detail/measure.h"
#include "detail/shard_check.h"
#include "hybridshard/core/batch.h"
#include "hybridshard/core/enter_time.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/transition.h"
#include "hybridshard/core/weight_generator.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::service::bench::detail {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Progress on stderr (rank 0, or the loopback rank), so that a long run shows where it is.
void progress(const BenchConfig& config, int rank, const std::string& what) {
  if (config.backend != core::Backend::kLoopback && rank != 0) return;
  static const Clock::time_point process_start = Clock::now();
  std::fprintf(stderr, "# [%8.2f s] rank %d: %s\n", seconds_since(process_start), rank, what.c_str());
}

constexpr std::int64_t kMiB = std::int64_t{1} << 20;
constexpr std::int64_t kGiB = std::int64_t{1} << 30;

// Lines the ranks up before each timed step (no-op for loopback, which has no peers).
void line_up(core::Communicator* world) {
  if (world != nullptr) world->barrier();
}

// Runs `step` config.warmup + config.iterations times, every rank starting together, each run timed to the end of
// the device's work; the timed runs' seconds go to `series`.
void time_runs(const BenchConfig& config, core::Device& device, core::Communicator* world, Series& series,
               const std::function<void()>& step) {
  for (int iteration = 0; iteration < config.warmup + config.iterations; ++iteration) {
    line_up(world);
    const Clock::time_point start = Clock::now();
    step();
    device.synchronize();
    const double seconds = seconds_since(start);
    if (iteration >= config.warmup) series.seconds.push_back(seconds);
  }
}

// "enter.round12.recv" -> "enter.round*.recv": one row per kind of step, not per round, peer or layer.
std::string step_pattern(const std::string& operation) {
  std::string pattern;
  for (std::size_t i = 0; i < operation.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(operation[i])) != 0) {
      if (pattern.empty() || pattern.back() != '*') pattern += '*';
    } else {
      pattern += operation[i];
    }
  }
  return pattern;
}

// Adds one timed phase's transfer events to the step totals. An exchange emits one event per message with the same
// seconds, so events of one operation name count their longest time once.
void add_steps(const std::vector<core::Event>& events, const std::string& strategy, const std::string& phase,
               std::map<StepKey, StepTotal>& steps) {
  std::map<std::pair<std::string, core::TransferPath>, std::pair<double, std::int64_t>> by_operation;
  for (const core::Event& event : events) {
    if (event.type != core::EventType::kTransfer) continue;
    auto& [seconds, bytes] = by_operation[{event.operation, event.path}];
    seconds = std::max(seconds, event.seconds);
    bytes += event.bytes;
  }
  for (const auto& [operation, total] : by_operation) {
    StepTotal& step = steps[{strategy, phase, step_pattern(operation.first),
                             std::string(core::transfer_path_name(operation.second))}];
    step.seconds += total.first;
    step.bytes += total.second;
  }
}

// Free device memory that a bound may use for its two buffers, leaving room for what the run still needs.
std::int64_t copy_buffer_limit(core::Device& device, std::int64_t wanted) {
  const std::int64_t free_bytes = device.total_memory() - device.used_memory();
  const std::int64_t usable = std::max<std::int64_t>(256 * kMiB, (free_bytes - 2 * kGiB) / 2);
  return std::min(wanted, usable);
}

// Times copying `bytes` from `src_where` to `dst_where`: one copy call when both buffers fit, else consecutive
// copies of the largest buffers that fit (said in `what`).
Series time_copy(const BenchConfig& config, core::Device& device, core::Communicator* world, core::Residency dst_where,
                 core::Residency src_where, std::int64_t bytes, std::int64_t buffer_limit, std::string what) {
  Series series;
  series.bytes = bytes;
  if (bytes <= 0) return series;
  const std::int64_t buffer_bytes = std::min(bytes, buffer_limit);
  DeviceMemory src(device, src_where, buffer_bytes);
  DeviceMemory dst(device, dst_where, buffer_bytes);
  if (src_where == core::Residency::kGpu) {
    device.fill_zero(src.data(), buffer_bytes);
  }
  if (buffer_bytes < bytes) {
    what += " (in " + std::to_string((bytes + buffer_bytes - 1) / buffer_bytes) + " copies of at most " +
            std::to_string(buffer_bytes) + " B)";
  }
  series.what = std::move(what);
  time_runs(config, device, world, series, [&] {
    for (std::int64_t done = 0; done < bytes; done += buffer_bytes) {
      device.copy(dst.data(), dst_where, src.data(), src_where, std::min(buffer_bytes, bytes - done));
    }
  });
  return series;
}

// The largest `value` of any rank (a collective: every rank calls it).
std::int64_t max_over_ranks(core::Device& device, core::Communicator& world, std::int64_t value) {
  const int n = world.size();
  const auto bytes = static_cast<std::int64_t>(sizeof(std::int64_t));
  DeviceMemory host(device, core::Residency::kCpu, bytes * n);
  DeviceMemory send(device, core::Residency::kGpu, bytes);
  DeviceMemory recv(device, core::Residency::kGpu, bytes * n);
  std::memcpy(host.data(), &value, sizeof(value));
  device.copy(send.data(), core::Residency::kGpu, host.data(), core::Residency::kCpu, bytes);
  device.synchronize();
  world.all_gather(send.data(), recv.data(), sizeof(std::int64_t));
  device.copy(host.data(), core::Residency::kCpu, recv.data(), core::Residency::kGpu, bytes * n);
  device.synchronize();
  std::int64_t largest = 0;
  for (int r = 0; r < n; ++r) {
    std::int64_t each = 0;
    std::memcpy(&each, host.data() + r * bytes, sizeof(each));
    largest = std::max(largest, each);
  }
  return largest;
}

// A raw all-gather on the job's communicator in which every rank receives `bytes_received` bytes from the others
// (the largest of any rank, so that all ranks move the same sizes).
Series time_all_gather(const BenchConfig& config, core::Device& device, core::Communicator& world,
                       std::int64_t rank_bytes_received, const std::string& label) {
  Series series;
  const int n = world.size();
  const std::int64_t bytes_received = max_over_ranks(device, world, rank_bytes_received);
  if (n < 2 || bytes_received <= 0) return series;
  const std::int64_t per_rank = (bytes_received + n - 2) / (n - 1);
  series.bytes = per_rank * (n - 1);
  series.what = "all_gather on " + std::string(core::backend_name(world.backend())) + ", " + std::to_string(per_rank) +
                " B per rank, the bytes " + label + " receives (the largest of any rank)";
  DeviceMemory send(device, core::Residency::kGpu, per_rank);
  DeviceMemory recv(device, core::Residency::kGpu, per_rank * n);
  device.fill_zero(send.data(), per_rank);
  device.synchronize();
  time_runs(config, device, &world, series,
            [&] { world.all_gather(send.data(), recv.data(), static_cast<std::size_t>(per_rank)); });
  return series;
}

// The peers' `buffers` as this rank's device reads them (Communicator::share_memory), or nothing when some rank
// cannot read all of its peers' buffers directly: every rank answers the same question before any goes on, so all of
// them time a peer bound or none.
std::optional<core::PeerMemory> read_peers_directly(core::Device& device, core::Communicator& world,
                                                    std::span<void* const> buffers, std::span<const std::int64_t> sizes,
                                                    const std::vector<int>& peers) {
  core::PeerMemory memory = world.share_memory(buffers, sizes, peers);
  bool all = true;
  for (int peer : peers) all = all && memory.reads[static_cast<std::size_t>(peer)].size() == buffers.size();
  if (max_over_ranks(device, world, all ? 0 : 1) != 0) return std::nullopt;
  return memory;
}

// The p2p bound: every rank copies, with the copy engines (cudaMemcpyAsync between devices, as cudaMemcpyPeerAsync),
// the bytes its plan reads from each peer out of a buffer of that peer's, in one go; the peer path's best case. Empty
// when some peer cannot be read directly (Gloo, other hosts).
Series time_peer_copies(const BenchConfig& config, core::Device& device, core::Communicator& world,
                        const core::RankPlan& plan) {
  Series series;
  std::int64_t largest = 0;
  std::int64_t mine = 0;
  std::vector<int> peers;
  for (const core::PeerPieces& reads : plan.peer_reads) {
    largest = std::max(largest, reads.bytes());
    mine += reads.bytes();
    peers.push_back(reads.peer);
  }
  const std::int64_t source_bytes = max_over_ranks(device, world, largest);
  if (source_bytes <= 0) return series;
  DeviceMemory source(device, core::Residency::kGpu, source_bytes);
  DeviceMemory target(device, core::Residency::kGpu, std::max<std::int64_t>(mine, 1));
  device.fill_zero(source.data(), source_bytes);
  device.synchronize();
  void* const source_pointer = source.data();
  if (const auto memory = read_peers_directly(device, world, {&source_pointer, 1}, {&source_bytes, 1}, peers)) {
    series.bytes = mine;
    series.what = "copy engines reading the peers' memory directly, the bytes the plan reads from each peer";
    time_runs(config, device, &world, series, [&] {
      std::int64_t offset = 0;
      for (const core::PeerPieces& reads : plan.peer_reads) {
        device.copy(target.data() + offset, core::Residency::kGpu,
                    memory->reads[static_cast<std::size_t>(reads.peer)].front(), core::Residency::kGpu, reads.bytes());
        offset += reads.bytes();
      }
    });
  }
  world.barrier();  // nobody frees its source while a peer still reads it
  return series;
}

// Beside the p2p bound, to say why a landing pass falls short of it: every rank lands the pieces its plan reads from
// its peers (the landing pass without its local pieces, routed as the device routes them: copy-engine copies, 2-D
// where strided, and the kernel for what the routing gives it) out of stand-ins of the peers' train buffers into a
// stand-in shard. Against p2p it shows what the pieces' shapes and number cost; enter against it, what the local
// pieces beside them and the steps around the pass cost. Empty when p2p is.
Series time_peer_pieces(const BenchConfig& config, core::Device& device, core::Communicator& world,
                        const core::RankPlan& plan) {
  Series series;
  std::int64_t mine = 0;
  std::vector<int> peers;
  for (const core::PeerPieces& reads : plan.peer_reads) {
    mine += reads.bytes();
    peers.push_back(reads.peer);
  }
  if (max_over_ranks(device, world, mine) <= 0) return series;
  std::vector<std::unique_ptr<DeviceMemory>> sources;
  std::vector<void*> pointers;
  std::vector<std::int64_t> sizes;
  for (const core::BufferLayout& layout : plan.train_buffers) {
    const std::int64_t bytes = std::max<std::int64_t>(layout.bytes, 1);
    sources.push_back(std::make_unique<DeviceMemory>(device, core::Residency::kGpu, bytes));
    device.fill_zero(sources.back()->data(), bytes);
    pointers.push_back(sources.back()->data());
    sizes.push_back(bytes);
  }
  DeviceMemory target(device, core::Residency::kGpu, std::max<std::int64_t>(plan.inference_buffer.bytes, 1));
  device.synchronize();
  if (const auto memory = read_peers_directly(device, world, pointers, sizes, peers)) {
    // The peers' buffers numbered one peer after another, as the landing pass numbers them after the rank's own.
    std::vector<core::Piece> pieces;
    std::vector<void*> bases;
    for (const core::PeerPieces& reads : plan.peer_reads) {
      const auto first = static_cast<int>(bases.size());
      for (const void* base : memory->reads[static_cast<std::size_t>(reads.peer)])
        bases.push_back(const_cast<void*>(base));
      for (core::Piece piece : reads.pieces) {
        piece.src_buffer += first;
        pieces.push_back(piece);
      }
    }
    series.bytes = mine;
    series.what = "the landing pass's pieces from the peers alone (no local pieces), as the device copies them";
    time_runs(config, device, &world, series, [&] { device.copy_pieces(pieces, bases, nullptr, target.data()); });
  }
  world.barrier();  // nobody frees its stand-ins while a peer still reads them
  return series;
}

// The send/recv bound: every rank sends each peer, and receives from each, the bytes its plan's messages move
// between them over all rounds, as one message per peer and direction, all in one exchange (an NCCL group): what
// point-to-point transfers over this communicator can do for those bytes at best, with no rounds, wires or buckets.
Series time_send_recv(const BenchConfig& config, core::Device& device, core::Communicator& world,
                      const core::RankPlan& plan) {
  Series series;
  const core::RankTraffic traffic = core::rank_traffic(plan);  // what the plan's messages move, per peer
  std::int64_t sent = 0;
  std::int64_t received = 0;
  for (const core::PeerTraffic& peer : traffic.peers) {
    sent += peer.sent;
    received += peer.received;
  }
  if (max_over_ranks(device, world, std::max(sent, received)) <= 0) return series;
  DeviceMemory send(device, core::Residency::kGpu, std::max<std::int64_t>(sent, 1));
  DeviceMemory recv(device, core::Residency::kGpu, std::max<std::int64_t>(received, 1));
  device.fill_zero(send.data(), std::max<std::int64_t>(sent, 1));
  device.synchronize();
  std::vector<core::SendSpec> sends;
  std::vector<core::RecvSpec> recvs;
  std::int64_t send_offset = 0;
  std::int64_t recv_offset = 0;
  for (const core::PeerTraffic& peer : traffic.peers) {
    if (peer.sent > 0) sends.push_back({peer.peer, send.data() + send_offset, static_cast<std::size_t>(peer.sent)});
    if (peer.received > 0) {
      recvs.push_back({peer.peer, recv.data() + recv_offset, static_cast<std::size_t>(peer.received)});
    }
    send_offset += peer.sent;
    recv_offset += peer.received;
  }
  series.bytes = received;
  series.what = "send/recv on " + std::string(core::backend_name(world.backend())) +
                ", one message per peer and direction, the bytes the plan's messages move";
  time_runs(config, device, &world, series, [&] { world.exchange(sends, recvs); });
  return series;
}

std::int32_t token_of(std::int64_t global_row, std::int64_t col, std::int64_t vocab) {
  const std::uint64_t h =
      core::mix64(static_cast<std::uint64_t>(global_row) * 0x100000001B3ull + static_cast<std::uint64_t>(col));
  return static_cast<std::int32_t>(h % static_cast<std::uint64_t>(vocab));
}

// The stand-in for generation: identical on every member of an inference group, checkable anywhere.
std::int32_t output_of(std::int32_t token, std::int64_t vocab) {
  return static_cast<std::int32_t>((static_cast<std::int64_t>(token) * 7 + 3) % vocab);
}

void run_strategy(const BenchConfig& config, int rank, core::Device& device, core::Communicator* world,
                  core::Strategy strategy, RankResult& result) {
  const std::string name(core::strategy_name(strategy));
  core::PlanOptions plan_options;
  plan_options.bucket_bytes = config.bucket_bytes;
  plan_options.direct_min_bytes = config.direct_min_bytes;
  plan_options.coalesce_rows = config.coalesce_rows;
  const core::RankPlan plan = core::make_rank_plan(config.spec, config.train, config.inference, rank, plan_options);

  progress(config, rank, name + ": plan made, preparing train weights");
  std::unique_ptr<core::LoopbackCommunicator> loopback;
  core::Communicator* comm = world;
  if (world == nullptr) {
    // The peer path's stand-in: the peers' train buffers in device memory, read directly by enter.
    const bool peer_path = strategy == core::Strategy::kHybridshard && config.transport != core::Transport::kSendRecv;
    loopback = core::make_loopback_communicator(
        rank, config.train.world_size(), device,
        core::make_peer_data(strategy, plan, device, config.version, plan_options),
        peer_path ? core::make_peer_buffers(plan, device, config.version) : core::PeerBufferSource{});
    comm = loopback.get();
  }

  // This rank's train parameters, as every train rank holds them at `version`.
  auto train_params = std::make_unique<TrainWeights>(config.spec, plan.train_buffers, device, nullptr, rank,
                                                     WeightSource{nullptr, config.version});
  const std::vector<core::FlatBuffer*>& train_pointers = train_params->buffers();
  const int shard_tp_rank = core::inference_tp_rank_of(strategy, config.train, config.inference, rank);
  std::unique_ptr<ShardChecker> checker;
  if (config.check) {
    checker = std::make_unique<ShardChecker>(
        device, core::inference_param_buffer(config.spec, config.inference, shard_tp_rank), config.version, kGiB);
  }
  device.synchronize();

  std::int64_t bytes_received = 0;
  {
    core::RecordingEventSink events;
    std::unique_ptr<core::Transition> transition =
        core::make_transition(strategy, plan, *comm, device, &events, {config.transport});
    // What the driver counts as used between phases in the steady state: after one enter and exit that made what
    // stays (loopback's peer data, the device's scratch areas) and a release of the cache. The exits' driver bytes
    // are above it.
    if (loopback) loopback->reset_sequence();
    line_up(world);
    transition->enter(train_pointers);
    device.synchronize();
    transition->exit(core::ExitPolicy::kFree);
    core::release_after_exit(device, core::ReleaseOnExit::kDriver);
    const std::int64_t driver_baseline = device.memory().used;
    for (core::ExitPolicy policy : config.exit_policies) {
      for (core::ReleaseOnExit release : config.releases) {
        // Enter is kept apart by the exit (and release) that came before it: after an offload, enter also has the
        // host copy to deal with; after a release to the driver, it allocates its shard from the driver again.
        const std::string key = policy_key(policy, release);
        Series& enter = result.phases[{"enter", name, key}];
        enter.checked = config.check;
        Series& exit = result.phases[{"exit", name, key}];
        exit.checked = false;
        progress(config, rank,
                 name + ": enter / exit(" + key + ") x " + std::to_string(config.warmup + config.iterations));
        for (int iteration = 0; iteration < config.warmup + config.iterations; ++iteration) {
          const bool timed = iteration >= config.warmup;
          transition->set_iteration(iteration);
          if (loopback) loopback->reset_sequence();
          line_up(world);
          const core::DeviceMemory before = device.memory();
          events.clear();
          Clock::time_point start = Clock::now();
          core::FlatBuffer& shard = transition->enter(train_pointers);
          device.synchronize();
          double seconds = seconds_since(start);
          const core::TransitionStats& entered = transition->last_enter();
          if (timed) {
            enter.seconds.push_back(seconds);
            enter.bytes = std::max(enter.bytes, entered.bytes_network_received);
            enter.extra_bytes = std::max(enter.extra_bytes, entered.peak_extra_device_bytes);
            enter.host_bytes = std::max(enter.host_bytes, entered.bytes_host_to_device + entered.bytes_device_to_host);
            add_steps(events.events(), name, "enter." + key, result.steps);
            if (checker) enter.wrong += checker->count_wrong(shard.data());
          }
          bytes_received = std::max(bytes_received, entered.bytes_network_received);

          line_up(world);
          events.clear();
          start = Clock::now();
          transition->exit(policy);
          device.synchronize();
          core::release_after_exit(device, release);  // part of exit, as the rank's schedule runs it
          seconds = seconds_since(start);
          const core::TransitionStats& exited = transition->last_exit();
          if (timed) {
            const core::DeviceMemory after = device.memory();
            exit.seconds.push_back(seconds);
            exit.bytes = std::max(exit.bytes, exited.bytes_network_received);
            exit.extra_bytes = std::max(exit.extra_bytes, after.tracked - before.tracked);
            exit.driver_bytes = std::max(exit.driver_bytes, after.used - driver_baseline);
            exit.host_bytes = std::max(exit.host_bytes, exited.bytes_host_to_device + exited.bytes_device_to_host);
            add_steps(events.events(), name, "exit." + key, result.steps);
          }
        }
      }
    }
  }
  train_params.reset();
  checker.reset();

  // The bound for the bytes this strategy received: the same bytes over the same communicator, or (loopback) one
  // device-to-device copy of them, which is what loopback's stand-in for the network does at best.
  progress(config, rank, name + ": bound for the received bytes");
  if (world != nullptr) {
    result.bounds[{"collective." + name, "", ""}] = time_all_gather(config, device, *world, bytes_received, name);
    if (strategy == core::Strategy::kHybridshard) {
      progress(config, rank, name + ": p2p bound (copy engines from the peers' memory)");
      result.bounds[{"p2p." + name, "", ""}] = time_peer_copies(config, device, *world, plan);
      progress(config, rank, name + ": the peers' pieces alone (the landing pass without its local pieces)");
      result.bounds[{"p2p.pieces." + name, "", ""}] = time_peer_pieces(config, device, *world, plan);
      progress(config, rank, name + ": send/recv bound (one message per peer)");
      result.bounds[{"sendrecv." + name, "", ""}] = time_send_recv(config, device, *world, plan);
    }
  } else if (bytes_received > 0) {
    result.bounds[{"d2d.received." + name, "", ""}] =
        time_copy(config, device, nullptr, core::Residency::kGpu, core::Residency::kGpu, bytes_received,
                  copy_buffer_limit(device, bytes_received),
                  "one device-to-device copy of the bytes " + name + " receives (loopback's network)");
  }
}

void run_batch(const BenchConfig& config, int rank, core::Device& device, core::Communicator* world,
               RankResult& result) {
  std::unique_ptr<core::LoopbackCommunicator> loopback;
  core::Communicator* comm = world;
  if (world == nullptr) {
    // What the peers would send is not known to the bench (it follows BatchRedistribution's own message order), so
    // loopback peers send zeros of the right sizes and the batch phases go unchecked.
    core::Device* zero_device = &device;
    loopback = core::make_loopback_communicator(rank, config.train.world_size(), device,
                                                [zero_device](int, std::uint64_t, void* dst, std::size_t bytes) {
                                                  zero_device->fill_zero(dst, static_cast<std::int64_t>(bytes));
                                                });
    comm = loopback.get();
  }
  const bool check = config.check && world != nullptr;
  const std::int64_t vocab = config.spec.vocab_size;
  const std::int64_t rows = config.batch_rows;
  const std::int64_t cols = config.batch_cols;
  const core::TrainLayout::Coord train_coord = config.train.coord(rank);
  const core::InferenceLayout::Coord inference_coord = config.inference.coord(rank);
  const std::int64_t global_rows = rows * config.train.dp;
  const std::int64_t group_rows = global_rows / config.inference.dp();

  core::TokenBatch replica_batch;
  if (train_coord.tp_rank == 0 && train_coord.pp_rank == 0) {
    replica_batch.rows = rows;
    replica_batch.cols = cols;
    replica_batch.tokens.resize(static_cast<std::size_t>(rows * cols));
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) {
        replica_batch.tokens[static_cast<std::size_t>(r * cols + c)] =
            token_of(train_coord.dp_rank * rows + r, c, vocab);
      }
    }
  }

  progress(config, rank, "batch re-distribution");
  core::BatchRedistribution batch(config.train, config.inference, *comm, device);
  Series& pre = result.phases[{"batch.pre", "-", "-"}];
  Series& post = result.phases[{"batch.post", "-", "-"}];
  pre.checked = check;
  post.checked = check;
  for (int iteration = 0; iteration < config.warmup + config.iterations; ++iteration) {
    const bool timed = iteration >= config.warmup;
    if (loopback) loopback->reset_sequence();
    line_up(world);
    Clock::time_point start = Clock::now();
    const core::TokenBatch group_batch = batch.preprocess(replica_batch, rows, cols);
    double seconds = seconds_since(start);

    core::TokenBatch outputs = group_batch;
    for (std::int32_t& token : outputs.tokens) token = output_of(token, vocab);

    line_up(world);
    start = Clock::now();
    const core::TokenBatch replica_outputs = batch.postprocess(outputs, rows);
    const double post_seconds = seconds_since(start);
    if (!timed) continue;

    pre.seconds.push_back(seconds);
    post.seconds.push_back(post_seconds);
    pre.bytes = static_cast<std::int64_t>(group_batch.tokens.size() * sizeof(std::int32_t));
    post.bytes = static_cast<std::int64_t>(replica_outputs.tokens.size() * sizeof(std::int32_t));
    if (!check) continue;
    // Inference group g holds global rows [g * group_rows, (g + 1) * group_rows); the replica gets its own rows back.
    const std::int64_t first_row = inference_coord.dp_rank * group_rows;
    if (group_batch.rows != group_rows || group_batch.cols != cols ||
        static_cast<std::int64_t>(group_batch.tokens.size()) != group_rows * cols) {
      pre.wrong += group_rows * cols;
    } else {
      for (std::int64_t r = 0; r < group_rows; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) {
          pre.wrong += group_batch.tokens[static_cast<std::size_t>(r * cols + c)] != token_of(first_row + r, c, vocab);
        }
      }
    }
    if (replica_outputs.rows != rows || replica_outputs.cols != cols ||
        static_cast<std::int64_t>(replica_outputs.tokens.size()) != rows * cols) {
      post.wrong += rows * cols;
    } else {
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t c = 0; c < cols; ++c) {
          post.wrong += replica_outputs.tokens[static_cast<std::size_t>(r * cols + c)] !=
                        output_of(token_of(train_coord.dp_rank * rows + r, c, vocab), vocab);
        }
      }
    }
  }
}

}  // namespace

double gigabytes_per_second(std::int64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

RankResult run_rank(const BenchConfig& config, int rank, core::Device& device, core::Communicator* world) {
  RankResult result;
  result.device_description = device.description();
  const core::BufferLayout shard =
      core::inference_param_buffer(config.spec, config.inference, config.inference.coord(rank).tp_rank);
  result.shard_bytes = shard.bytes;

  // The copy bounds first, while the device is empty: one copy of the whole inference shard's bytes, and pinned
  // host<->device copies (of at most 2 GiB: bandwidth no longer grows at that size, and pinning costs time).
  progress(config, rank, "bounds: d2d copy of the shard, pinned h2d and d2h");
  result.bounds[{"d2d.shard", "", ""}] =
      time_copy(config, device, world, core::Residency::kGpu, core::Residency::kGpu, shard.bytes,
                copy_buffer_limit(device, shard.bytes), "one device-to-device copy of the inference shard's bytes");
  result.d2h_bytes = std::min(shard.bytes, 2 * kGiB);
  result.bounds[{"h2d.pinned", "", ""}] =
      time_copy(config, device, world, core::Residency::kGpu, core::Residency::kCpu, result.d2h_bytes, result.d2h_bytes,
                "host-to-device copy from pinned host memory");
  result.bounds[{"d2h.pinned", "", ""}] =
      time_copy(config, device, world, core::Residency::kCpu, core::Residency::kGpu, result.d2h_bytes, result.d2h_bytes,
                "device-to-host copy into pinned host memory");

  for (core::Strategy strategy : config.strategies) {
    if (!core::strategy_applies(strategy, config.spec, config.train, config.inference)) {
      if (config.spec.is_moe()) {
        result.notes.push_back(std::string(core::strategy_name(strategy)) + " has no Mixture-of-Experts path (" +
                               std::string(core::architecture_name(config.spec.architecture)) +
                               "); skipped: compare with the bounds");
        continue;
      }
      result.notes.push_back(std::string(core::strategy_name(strategy)) +
                             " does not apply to train tp=" + std::to_string(config.train.tp) +
                             " -> rollout tp'=" + std::to_string(config.inference.tp) +
                             " (the seed needs tp % tp' == 0 and matching vocabulary padding); skipped");
      continue;
    }
    if (world != nullptr) {
      run_strategy(config, rank, device, world, strategy, result);
      continue;
    }
    // Alone on the device (loopback), a strategy that runs out of device memory is reported and the run goes on: on
    // one GPU the seed's copies of a large model may not fit where hybridshard's do.
    try {
      run_strategy(config, rank, device, world, strategy, result);
    } catch (const core::OutOfMemoryError& error) {
      const std::string name(core::strategy_name(strategy));
      std::erase_if(result.phases, [&](const auto& entry) { return std::get<1>(entry.first) == name; });
      result.notes.push_back(name + " ran out of device memory and is left out: " + error.what());
    }
  }
  run_batch(config, rank, device, world, result);
  return result;
}

}  // namespace hybridshard::service::bench::detail
