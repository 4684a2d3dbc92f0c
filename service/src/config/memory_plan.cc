#include "hybridshard/service/config/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <optional>

#include "hybridshard/core/error.h"
#include "hybridshard/core/plan_classes.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/service/config/memory_policy.h"
#include "hybridshard/service/config/units.h"

namespace hybridshard::service {
namespace {

using core::BufferKind;

constexpr std::int64_t kDefaultGpuMemory = 80'000'000'000;

std::size_t index_of(BufferKind kind) { return static_cast<std::size_t>(kind); }

std::int64_t sum(const std::array<std::int64_t, kNumBufferKinds>& bytes) {
  return std::accumulate(bytes.begin(), bytes.end(), std::int64_t{0});
}

std::string pad(std::string text, std::size_t width) {
  if (text.size() < width) text.insert(0, width - text.size(), ' ');
  return text;
}

std::string compact_bytes(std::int64_t bytes) { return bytes == 0 ? std::string("-") : format_bytes(bytes); }

// "llama, 32 layers, ... parameters" and "world 8: train tp 4 pp 2 ... -> rollout tp 2 ...".
std::string plan_title(const JobConfig& job) {
  const core::ModelSpec& spec = job.model.spec;
  std::string text;
  char line[512];
  std::snprintf(
      line, sizeof line, "%s, %lld layers, hidden %lld, %lld heads (%lld kv), vocab %lld, %s: %lld parameters\n",
      std::string(core::architecture_name(spec.architecture)).c_str(), static_cast<long long>(spec.num_hidden_layers),
      static_cast<long long>(spec.hidden_size), static_cast<long long>(spec.num_attention_heads),
      static_cast<long long>(spec.num_key_value_heads), static_cast<long long>(spec.vocab_size),
      std::string(core::dtype_name(spec.dtype)).c_str(), static_cast<long long>(spec.num_parameters()));
  text += line;
  std::snprintf(line, sizeof line,
                "world %d: train tp %d pp %d vpp %d dp %d -> rollout tp %d dp %d; strategy %s, exit %s, release on "
                "exit: %s\n",
                job.runtime.world_size, job.train.tp, job.train.pp, job.train.vpp, job.train.dp, job.rollout.tp,
                job.rollout.dp(), std::string(core::strategy_name(job.runtime.strategy)).c_str(),
                std::string(core::exit_policy_name(job.memory.exit_policy)).c_str(),
                std::string(core::release_on_exit_name(job.memory.release_on_exit)).c_str());
  text += line;
  return text;
}

}  // namespace

std::int64_t PhaseMemory::device_total() const { return sum(device); }
std::int64_t PhaseMemory::host_total() const { return sum(host); }

namespace {

// Bytes of each buffer kind one rank holds when the kind is present (the policy decides where, per phase).
struct RankBuffers {
  std::array<std::int64_t, kNumBufferKinds> bytes{};
  // The seed strategy only: the other pipeline stages' params of the rank's tensor-parallel column, kept on the host
  // between phases and loaded onto the device for enter's broadcasts.
  std::int64_t seed_other_stages = 0;
};

// Parameter bytes of every (tp_rank, pp_rank) of the train layout, computed once each.
class StageBytes {
 public:
  explicit StageBytes(const JobConfig& job) : job_(job) {}
  std::int64_t of(int tp_rank, int pp_rank) {
    auto [it, inserted] = bytes_.emplace(std::make_pair(tp_rank, pp_rank), 0);
    if (inserted) {
      for (const core::BufferLayout& buffer :
           core::train_param_buffers(job_.model.spec, job_.train, tp_rank, pp_rank)) {
        it->second += buffer.bytes;
      }
    }
    return it->second;
  }

 private:
  const JobConfig& job_;
  std::map<std::pair<int, int>, std::int64_t> bytes_;
};

// The buffers of one rank and enter's network bytes. The seed strategy's staging (per-tensor gather temporaries)
// and network bytes are estimates of core's seed transition, not a plan.
RankBuffers rank_buffers(const JobConfig& job, const core::RankPlan& rank_plan, StageBytes& stages,
                         RankMemoryPlan& out) {
  RankBuffers buffers;
  auto& bytes = buffers.bytes;
  std::int64_t largest_tensor = 0;
  for (const core::BufferLayout& chunk : rank_plan.train_buffers) {
    out.params_per_chunk.push_back(chunk.bytes);
    bytes[index_of(BufferKind::kParams)] += chunk.bytes;
    const TrainStateBytes state = train_state_bytes(chunk);
    bytes[index_of(BufferKind::kGrads)] += state.grads;
    bytes[index_of(BufferKind::kMasterParams)] += state.master_params;
    bytes[index_of(BufferKind::kOptimizerState)] += state.optimizer_state;
    for (const core::LocalTensor& tensor : chunk.tensors) largest_tensor = std::max(largest_tensor, tensor.numel());
  }
  bytes[index_of(BufferKind::kInferenceParams)] = rank_plan.inference_buffer.bytes;

  if (job.runtime.strategy != core::Strategy::kSeed) {
    bytes[index_of(BufferKind::kStaging)] = rank_plan.staging_bytes();  // the two buckets of the send/recv path
    out.enter_network_received = rank_plan.bytes_received();
    out.enter_network_sent = rank_plan.bytes_sent();
    return buffers;
  }
  std::int64_t all_stages = 0;
  for (int p = 0; p < job.train.pp; ++p) {
    const std::int64_t stage = stages.of(out.train.tp_rank, p);
    all_stages += stage;
    if (p != out.train.pp_rank) buffers.seed_other_stages += stage;
  }
  const std::int64_t element = static_cast<std::int64_t>(core::dtype_size(job.model.spec.dtype));
  const std::int64_t micro_dp = std::max(1, job.train.tp / std::max(1, job.rollout.tp));
  bytes[index_of(BufferKind::kStaging)] = largest_tensor * element * micro_dp;
  out.network_estimated = true;
  out.enter_network_received = buffers.seed_other_stages + (micro_dp - 1) * all_stages;
  out.enter_network_sent = out.enter_network_received;
  return buffers;
}

// Every kind where the policy puts it in each phase; the KV cache is sized afterwards.
std::array<PhaseMemory, kNumPlanPhases> place_buffers(const MemoryPolicy& policy, const RankBuffers& buffers) {
  std::array<PhaseMemory, kNumPlanPhases> phases;
  for (int p = 0; p < kNumPlanPhases; ++p) {
    PhaseMemory& phase = phases[static_cast<std::size_t>(p)];
    phase.phase = static_cast<PlanPhase>(p);
    for (std::size_t kind = 0; kind < kNumBufferKinds; ++kind) {
      if (static_cast<BufferKind>(kind) == BufferKind::kKvCache) continue;
      const Placement placement = policy.placement(static_cast<BufferKind>(kind), phase.phase);
      if (placement == Placement::kDevice) phase.device[kind] = buffers.bytes[kind];
      if (placement == Placement::kHost) phase.host[kind] = buffers.bytes[kind];
    }
    // The seed keeps the other stages' params on the host, and on the device too while enter broadcasts them.
    phase.host[index_of(BufferKind::kParams)] += buffers.seed_other_stages;
    if (phase.phase == PlanPhase::kEnter) phase.device[index_of(BufferKind::kParams)] += buffers.seed_other_stages;
  }
  // Exit's peak with the offload policy: the shard is on the device while its host copy is made.
  if (policy.exit_policy() == core::ExitPolicy::kOffload) {
    const std::size_t inference = index_of(BufferKind::kInferenceParams);
    phases[static_cast<std::size_t>(PlanPhase::kExit)].host[inference] = buffers.bytes[inference];
  }
  return phases;
}

// The KV cache: given, or vLLM's rule over what the rollout phase already holds; then every phase the policy keeps
// it in.
std::int64_t place_kv_cache(const JobConfig& job, const MemoryPolicy& policy, std::int64_t device_memory,
                            std::array<PhaseMemory, kNumPlanPhases>& phases) {
  const std::size_t rollout = static_cast<std::size_t>(PlanPhase::kRollout);
  const std::int64_t kv = kv_cache_budget(job.generation, device_memory, phases[rollout].device_total());
  for (PhaseMemory& phase : phases) {
    const Placement placement = policy.placement(BufferKind::kKvCache, phase.phase);
    if (placement == Placement::kDevice) phase.device[index_of(BufferKind::kKvCache)] = kv;
  }
  return kv;
}

// What the device's cache holds in each phase beside the live buffers (memory_plan.h, "Cached").
void place_cached(const MemoryPolicy& policy, std::int64_t device_memory,
                  std::array<PhaseMemory, kNumPlanPhases>& phases) {
  const bool keep = policy.release_on_exit() == core::ReleaseOnExit::kCache;
  std::array<std::int64_t, kNumBufferKinds> held{};
  if (keep) {
    for (const PhaseMemory& phase : phases) {
      for (std::size_t kind = 0; kind < kNumBufferKinds; ++kind) held[kind] = std::max(held[kind], phase.device[kind]);
    }
  }
  for (PhaseMemory& phase : phases) {  // in schedule order: train, enter, rollout, exit
    std::int64_t cached = 0;
    for (std::size_t kind = 0; kind < kNumBufferKinds; ++kind) {
      held[kind] = std::max(held[kind], phase.device[kind]);
      cached += held[kind] - phase.device[kind];
    }
    phase.cached = std::clamp<std::int64_t>(cached, 0, std::max<std::int64_t>(0, device_memory - phase.device_total()));
  }
}

// The peaks, and whether (and why not) the rank fits.
void judge_fit(const MemoryPlan& plan, const KvCacheNeed& kv_need, std::int64_t kv, RankMemoryPlan& out) {
  for (const PhaseMemory& phase : out.phases) {
    out.peak_device = std::max(out.peak_device, phase.device_total());
    out.peak_host = std::max(out.peak_host, phase.host_total());
  }
  if (out.peak_device > plan.device_memory) {
    out.fits = false;
    const auto worst = std::max_element(
        out.phases.begin(), out.phases.end(),
        [](const PhaseMemory& a, const PhaseMemory& b) { return a.device_total() < b.device_total(); });
    out.notes.push_back("does not fit: " + std::string(plan_phase_name(worst->phase)) + " needs " +
                        format_bytes(out.peak_device) + " of the " + format_bytes(plan.device_memory) +
                        " device memory");
  }
  if (kv < kv_need.bytes) {
    out.fits = false;
    out.notes.push_back("does not fit: the KV cache gets " + format_bytes(kv) + " but the batch needs " +
                        format_bytes(kv_need.bytes) + " (" + std::to_string(kv_need.rows) + " rows of " +
                        std::to_string(kv_need.tokens_per_row) + " tokens)");
  }
}

// MoE: how much of the train params and of the inference shard are routed expert tensors (router excluded), and the
// shared expert's (qwen2_moe: split over tp and tp' like a dense MLP).
std::string expert_note(const JobConfig& job, const core::RankPlan& rank_plan) {
  const core::ModelSpec& spec = job.model.spec;
  const std::int64_t element = static_cast<std::int64_t>(core::dtype_size(spec.dtype));
  std::vector<bool> is_expert;
  std::vector<bool> is_shared;
  for (const core::HfTensor& tensor : spec.hf_tensors()) {
    is_expert.push_back(tensor.expert >= 0);
    is_shared.push_back(tensor.kind == core::HfKind::kSharedGateProj || tensor.kind == core::HfKind::kSharedUpProj ||
                        tensor.kind == core::HfKind::kSharedDownProj || tensor.kind == core::HfKind::kSharedExpertGate);
  }
  const auto bytes_of = [&](const std::vector<bool>& chosen, const std::vector<core::BufferLayout>& buffers) {
    std::int64_t bytes = 0;
    for (const core::BufferLayout& buffer : buffers) {
      for (const core::LocalTensor& tensor : buffer.tensors) {
        if (!tensor.blocks.empty() && chosen[static_cast<std::size_t>(tensor.blocks.front().hf_tensor)]) {
          bytes += tensor.numel() * element;
        }
      }
    }
    return bytes;
  };
  std::string note = "experts: " + format_bytes(bytes_of(is_expert, rank_plan.train_buffers)) +
                     " of the train params (EP " + std::to_string(job.train.ep) + ", ETP " +
                     std::to_string(job.train.expert_tp()) + "), " +
                     format_bytes(bytes_of(is_expert, {rank_plan.inference_buffer})) + " of the inference shard (" +
                     (job.rollout.expert_parallel ? "expert parallel" : "tensor-parallel experts") + ")";
  if (spec.has_shared_expert()) {
    note += "; shared expert: " + format_bytes(bytes_of(is_shared, rank_plan.train_buffers)) +
            " of the train params (tp " + std::to_string(job.train.tp) + "), " +
            format_bytes(bytes_of(is_shared, {rank_plan.inference_buffer})) + " of the inference shard (tp' " +
            std::to_string(job.rollout.tp) + ")";
  }
  return note;
}

// The plan of every rank, or of `only_rank` alone.
MemoryPlan plan_memory(const JobConfig& job, std::int64_t device_memory, std::optional<int> only_rank) {
  MemoryPlan plan;
  const bool cpu = job.runtime.backend == BackendChoice::kGloo;
  plan.device_is_cpu = cpu && device_memory <= 0 && job.runtime.device_memory <= 0;
  plan.device_memory = device_memory > 0               ? device_memory
                       : job.runtime.device_memory > 0 ? job.runtime.device_memory
                       : cpu                           ? job.runtime.cpu_device_memory
                                                       : kDefaultGpuMemory;
  const bool assumed_gpu = device_memory <= 0 && job.runtime.device_memory <= 0 && !cpu;
  const core::TrainLayout& train = job.train;
  const core::InferenceLayout& rollout = job.rollout;
  const bool seed = job.runtime.strategy == core::Strategy::kSeed;
  const MemoryPolicy policy(job.memory);
  const KvCacheNeed kv_need = kv_cache_needed(job);
  StageBytes stages(job);

  plan.title = plan_title(job);
  plan.topology = job.topology;
  plan.transport = job.runtime.transport;
  // One reshard plan per class of ranks (core/plan_classes.h): its members' numbers are the representative's.
  core::ReshardPlanner planner(job.model.spec, train, rollout, core::PlanOptions{job.memory.bucket_bytes});
  const std::vector<core::PlanClass> classes =
      only_rank ? std::vector<core::PlanClass>{{*only_rank, {*only_rank}}} : core::plan_classes(train, rollout);
  for (const core::PlanClass& plan_class : classes) {
    const int rank = plan_class.representative;
    const core::RankPlan rank_plan = planner.plan(rank);
    RankMemoryPlan out;
    out.rank = rank;
    out.train = train.coord(rank);
    out.rollout = rollout.coord(rank);
    out.kv_cache_needed = kv_need.bytes;
    if (job.model.spec.is_moe()) out.notes.push_back(expert_note(job, rank_plan));
    const RankBuffers buffers = rank_buffers(job, rank_plan, stages, out);
    out.phases = place_buffers(policy, buffers);
    const std::int64_t kv = place_kv_cache(job, policy, plan.device_memory, out.phases);
    place_cached(policy, plan.device_memory, out.phases);
    judge_fit(plan, kv_need, kv, out);
    if (assumed_gpu) out.notes.push_back("device memory assumed 80 GB; set runtime.device_memory to check another");
    if (seed) out.notes.push_back("seed strategy: network bytes and gather temporaries are estimates");
    plan.fits = plan.fits && out.fits;
    const core::RankTraffic traffic = core::rank_traffic(rank_plan);
    for (const int member : plan_class.ranks) {
      RankMemoryPlan& copy = plan.ranks.emplace_back(out);
      copy.rank = member;
      copy.train = train.coord(member);
      copy.rollout = rollout.coord(member);
      if (!seed) {
        copy.enter_time = core::predict_enter_time(core::moved_to(traffic, train, member), job.runtime.world_size,
                                                   job.topology, job.runtime.transport);
        if (copy.enter_time.seconds > plan.predicted_enter_seconds) {
          plan.predicted_enter_seconds = copy.enter_time.seconds;
          plan.slowest_rank = member;
        }
      }
    }
  }
  std::sort(plan.ranks.begin(), plan.ranks.end(),
            [](const RankMemoryPlan& a, const RankMemoryPlan& b) { return a.rank < b.rank; });
  return plan;
}

}  // namespace

MemoryPlan make_memory_plan(const JobConfig& job, std::int64_t device_memory) {
  return plan_memory(job, device_memory, std::nullopt);
}

MemoryPlan make_rank_memory_plan(const JobConfig& job, int rank, std::int64_t device_memory) {
  if (rank < 0 || rank >= job.runtime.world_size) {
    HS_THROW(core::ConfigError,
             "rank " + std::to_string(rank) + " is outside [0, " + std::to_string(job.runtime.world_size) + ")");
  }
  return plan_memory(job, device_memory, rank);
}

std::string format_memory_plan(const MemoryPlan& plan) {
  std::string text = plan.title;
  char line[512];
  text += "device memory per rank: " + format_bytes(plan.device_memory) +
          (plan.device_is_cpu ? " (CPU ranks: runtime.cpu_device_memory)\n" : "\n");

  // Ranks with identical numbers share one block.
  std::vector<std::vector<const RankMemoryPlan*>> groups;
  const auto same = [](const RankMemoryPlan& a, const RankMemoryPlan& b) {
    for (int p = 0; p < kNumPlanPhases; ++p) {
      if (a.phases[p].device != b.phases[p].device || a.phases[p].host != b.phases[p].host ||
          a.phases[p].cached != b.phases[p].cached) {
        return false;
      }
    }
    return a.enter_network_received == b.enter_network_received && a.enter_network_sent == b.enter_network_sent &&
           a.enter_time.seconds == b.enter_time.seconds;
  };
  for (const RankMemoryPlan& rank : plan.ranks) {
    auto group = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return same(*g.front(), rank); });
    if (group == groups.end()) {
      groups.push_back({&rank});
    } else {
      group->push_back(&rank);
    }
  }
  static constexpr std::array<BufferKind, kNumBufferKinds> kKinds{
      BufferKind::kParams,          BufferKind::kGrads,   BufferKind::kMasterParams, BufferKind::kOptimizerState,
      BufferKind::kInferenceParams, BufferKind::kKvCache, BufferKind::kStaging};
  constexpr std::size_t kWidth = 16;
  for (const auto& group : groups) {
    std::vector<int> members;
    for (const RankMemoryPlan* rank : group) members.push_back(rank->rank);
    std::sort(members.begin(), members.end());
    text += (members.size() > 1 ? "\nranks " : "\nrank ") + core::rank_ranges(members) + "\n";
    text += pad("", 18);
    for (int p = 0; p < kNumPlanPhases; ++p) {
      text += pad(std::string(plan_phase_name(static_cast<PlanPhase>(p))) + " device", kWidth) + pad("host", kWidth);
    }
    text += "\n";
    const RankMemoryPlan& rank = *group.front();
    for (BufferKind kind : kKinds) {
      std::string row = "  " + std::string(core::buffer_kind_name(kind));
      row.resize(18, ' ');
      for (const PhaseMemory& phase : rank.phases) {
        row += pad(compact_bytes(phase.device[index_of(kind)]), kWidth);
        row += pad(compact_bytes(phase.host[index_of(kind)]), kWidth);
      }
      text += row + "\n";
    }
    std::string total = "  total";
    total.resize(18, ' ');
    for (const PhaseMemory& phase : rank.phases) {
      total += pad(compact_bytes(phase.device_total()), kWidth) + pad(compact_bytes(phase.host_total()), kWidth);
    }
    text += total + "\n";
    std::string cached = "  cached";
    cached.resize(18, ' ');
    for (const PhaseMemory& phase : rank.phases) cached += pad(compact_bytes(phase.cached), kWidth) + pad("", kWidth);
    text += cached + "\n";
    std::snprintf(line, sizeof line, "  peak device %s of %s (%.0f%%), peak host %s\n",
                  format_bytes(rank.peak_device).c_str(), format_bytes(plan.device_memory).c_str(),
                  100.0 * static_cast<double>(rank.peak_device) / static_cast<double>(plan.device_memory),
                  format_bytes(rank.peak_host).c_str());
    text += line;
    text += "  enter network: receives " + format_bytes(rank.enter_network_received) + ", sends " +
            format_bytes(rank.enter_network_sent) + (rank.network_estimated ? " (estimate)" : "") + "\n";
    text += "  kv cache the batch needs: " + format_bytes(rank.kv_cache_needed) + "\n";
    if (rank.enter_time.seconds > 0) {
      const core::EnterTimeEstimate& t = rank.enter_time;
      std::snprintf(line, sizeof line,
                    "  predicted enter: %.1f ms (local copies %.1f, peer reads %.1f, send/recv %.1f, barrier %.2f; "
                    "%s from this host's peers, %s from other hosts)\n",
                    1e3 * t.seconds, 1e3 * t.local_seconds, 1e3 * t.peer_path_seconds, 1e3 * t.sendrecv_seconds,
                    1e3 * t.barrier_seconds, compact_bytes(t.same_host_bytes).c_str(),
                    compact_bytes(t.other_host_bytes).c_str());
      text += line;
    }
    for (const std::string& note : rank.notes) text += "  " + note + "\n";
  }
  const auto peak =
      std::max_element(plan.ranks.begin(), plan.ranks.end(),
                       [](const RankMemoryPlan& a, const RankMemoryPlan& b) { return a.peak_device < b.peak_device; });
  if (peak != plan.ranks.end()) {
    std::snprintf(line, sizeof line, "\njob: %zu ranks in %zu groups; peak device %s (rank %d) of %s\n",
                  plan.ranks.size(), groups.size(), format_bytes(peak->peak_device).c_str(), peak->rank,
                  format_bytes(plan.device_memory).c_str());
    text += line;
  }
  if (plan.predicted_enter_seconds > 0) {
    const core::Topology& t = plan.topology;
    std::snprintf(
        line, sizeof line,
        "predicted enter of the job: %.1f ms (slowest rank %d; topology: %d GPUs per host, %.0f GB/s within a "
        "host, %.0f GB/s between hosts per GPU, %.1f us per copy, %.1f us per send/receive; transport %s)\n",
        1e3 * plan.predicted_enter_seconds, plan.slowest_rank, t.gpus_per_host, t.intra_host_bytes_per_s / 1e9,
        t.inter_host_bytes_per_s / 1e9, t.message_latency_s * 1e6, t.sendrecv_latency_s * 1e6,
        std::string(core::transport_name(plan.transport)).c_str());
    text += line;
  }
  text += plan.fits ? "\nfits\n" : "\nDOES NOT FIT\n";
  return text;
}

void print_memory_plan(const MemoryPlan& plan, std::ostream& out) { out << format_memory_plan(plan); }

}  // namespace hybridshard::service
