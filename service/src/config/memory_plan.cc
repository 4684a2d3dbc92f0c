#include "hybridshard/service/config/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>
#include <optional>

#include "hybridshard/core/error.h"
#include "hybridshard/core/plan_classes.h"
#include "hybridshard/core/reshard_plan.h"
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
                "world %d: train tp %d pp %d vpp %d dp %d -> rollout tp %d dp %d; strategy %s, exit %s\n",
                job.runtime.world_size, job.train.tp, job.train.pp, job.train.vpp, job.train.dp, job.rollout.tp,
                job.rollout.dp(), std::string(core::strategy_name(job.runtime.strategy)).c_str(),
                std::string(core::exit_policy_name(job.memory.exit_policy)).c_str());
  text += line;
  return text;
}

}  // namespace

std::string_view plan_phase_name(PlanPhase phase) {
  switch (phase) {
    case PlanPhase::kTrain:
      return "train";
    case PlanPhase::kEnter:
      return "enter";
    case PlanPhase::kRollout:
      return "rollout";
    case PlanPhase::kExit:
      return "exit";
  }
  return "?";
}

std::int64_t PhaseMemory::device_total() const { return sum(device); }
std::int64_t PhaseMemory::host_total() const { return sum(host); }

namespace {

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
  const core::ModelSpec& spec = job.model.spec;
  const core::TrainLayout& train = job.train;
  const core::InferenceLayout& rollout = job.rollout;
  const MemoryConfig& memory = job.memory;
  const GenerationConfig& settings = job.generation;
  const bool seed = job.runtime.strategy == core::Strategy::kSeed;
  const std::int64_t element = static_cast<std::int64_t>(core::dtype_size(spec.dtype));

  // What the batch needs in KV cache on one rank.
  const std::int64_t rollout_replicas = std::max(1, rollout.dp());
  const std::int64_t rows = (settings.prompts_per_train_replica * train.dp + rollout_replicas - 1) / rollout_replicas;
  const std::int64_t prompt_length =
      settings.prompts.empty() ? settings.prompt_length : static_cast<std::int64_t>(settings.prompts.front().size());
  const std::int64_t kv_needed = rows * (prompt_length + settings.max_new_tokens) * spec.num_hidden_layers * 2 *
                                 rollout.kv_heads_per_rank(spec) * spec.resolved_head_dim() * element;

  // Parameter bytes of every (tp_rank, pp_rank), for the seed strategy's other stages.
  std::map<std::pair<int, int>, std::int64_t> stage_bytes;
  const auto stage = [&](int tp_rank, int pp_rank) {
    auto [it, inserted] = stage_bytes.emplace(std::make_pair(tp_rank, pp_rank), 0);
    if (inserted) {
      for (const core::BufferLayout& buffer : core::train_param_buffers(spec, train, tp_rank, pp_rank)) {
        it->second += buffer.bytes;
      }
    }
    return it->second;
  };

  // Bytes of expert tensors (router excluded) in some buffers: every tensor whose blocks come from experts.
  std::vector<bool> is_expert;
  for (const core::HfTensor& tensor : spec.hf_tensors()) is_expert.push_back(tensor.expert >= 0);
  const auto expert_bytes = [&](const std::vector<core::BufferLayout>& buffers) {
    std::int64_t bytes = 0;
    for (const core::BufferLayout& buffer : buffers) {
      for (const core::LocalTensor& tensor : buffer.tensors) {
        if (!tensor.blocks.empty() && is_expert[static_cast<std::size_t>(tensor.blocks.front().hf_tensor)]) {
          bytes += tensor.numel() * element;
        }
      }
    }
    return bytes;
  };

  plan.title = plan_title(job);
  plan.topology = job.topology;
  plan.transport = job.runtime.transport;
  // One reshard plan per class of ranks (core/plan_classes.h): its members' numbers are the representative's.
  core::ReshardPlanner planner(spec, train, rollout, core::PlanOptions{memory.bucket_bytes});
  const std::vector<core::PlanClass> classes =
      only_rank ? std::vector<core::PlanClass>{{*only_rank, {*only_rank}}} : core::plan_classes(train, rollout);
  for (const core::PlanClass& plan_class : classes) {
    const int rank = plan_class.representative;
    const core::RankPlan rank_plan = planner.plan(rank);
    RankMemoryPlan out;
    out.rank = rank;
    out.train = train.coord(rank);
    out.rollout = rollout.coord(rank);
    std::int64_t params = 0;
    std::int64_t largest_tensor = 0;
    for (const core::BufferLayout& buffer : rank_plan.train_buffers) {
      out.params_per_chunk.push_back(buffer.bytes);
      params += buffer.bytes;
      for (const core::LocalTensor& tensor : buffer.tensors) largest_tensor = std::max(largest_tensor, tensor.numel());
    }
    const std::int64_t numel = params / element;
    const std::int64_t grads = 4 * numel;
    const std::int64_t master = spec.dtype == core::DType::kFloat32 ? 0 : 4 * numel;
    const std::int64_t optimizer = 8 * numel;
    const std::int64_t inference = rank_plan.inference_buffer.bytes;
    out.kv_cache_needed = kv_needed;
    if (spec.is_moe()) {
      out.notes.push_back("experts: " + format_bytes(expert_bytes(rank_plan.train_buffers)) +
                          " of the train params (EP " + std::to_string(train.ep) + ", ETP " +
                          std::to_string(train.expert_tp()) + "), " +
                          format_bytes(expert_bytes({rank_plan.inference_buffer})) + " of the inference shard (" +
                          (rollout.expert_parallel ? "expert parallel" : "tensor-parallel experts") + ")");
    }

    // The seed keeps the other stages' params of its tensor-parallel column and gathers into temporaries.
    std::int64_t other_stages = 0;
    std::int64_t all_stages = 0;
    for (int p = 0; p < train.pp; ++p) {
      const std::int64_t bytes = stage(out.train.tp_rank, p);
      all_stages += bytes;
      if (p != out.train.pp_rank) other_stages += bytes;
    }
    const std::int64_t micro_dp = std::max(1, train.tp / std::max(1, rollout.tp));
    const std::int64_t staging = seed ? largest_tensor * element * micro_dp
                                      : rank_plan.max_round_send_bytes() + rank_plan.max_round_recv_bytes();
    if (seed) {
      out.network_estimated = true;
      out.enter_network_received = other_stages + (micro_dp - 1) * all_stages;
      out.enter_network_sent = out.enter_network_received;
    } else {
      out.enter_network_received = rank_plan.bytes_received();
      out.enter_network_sent = rank_plan.bytes_sent();
    }

    PhaseMemory& train_phase = out.phases[0];
    PhaseMemory& enter_phase = out.phases[1];
    PhaseMemory& rollout_phase = out.phases[2];
    PhaseMemory& exit_phase = out.phases[3];
    train_phase.phase = PlanPhase::kTrain;
    enter_phase.phase = PlanPhase::kEnter;
    rollout_phase.phase = PlanPhase::kRollout;
    exit_phase.phase = PlanPhase::kExit;
    const auto params_i = index_of(BufferKind::kParams);
    const auto grads_i = index_of(BufferKind::kGrads);
    const auto master_i = index_of(BufferKind::kMasterParams);
    const auto optimizer_i = index_of(BufferKind::kOptimizerState);
    const auto inference_i = index_of(BufferKind::kInferenceParams);
    const auto kv_i = index_of(BufferKind::kKvCache);
    const auto staging_i = index_of(BufferKind::kStaging);

    // train: everything of training on the device.
    train_phase.device[params_i] = params;
    train_phase.device[grads_i] = grads;
    train_phase.device[master_i] = master;
    train_phase.device[optimizer_i] = optimizer;
    if (memory.exit_policy == core::ExitPolicy::kOffload) train_phase.host[inference_i] = inference;
    if (seed) train_phase.host[params_i] = other_stages;

    // Training state while rolling out (enter, rollout, exit), by the policy.
    const auto rollout_state = [&](PhaseMemory& phase) {
      phase.device[params_i] = params;
      if (memory.free_grads_in_rollout) {
        // freed
      } else if (memory.offload_grads_in_rollout) {
        phase.host[grads_i] = grads;
      } else {
        phase.device[grads_i] = grads;
      }
      auto& optimizer_side = memory.offload_optimizer_in_rollout ? phase.host : phase.device;
      optimizer_side[master_i] = master;
      optimizer_side[optimizer_i] = optimizer;
      if (seed) phase.host[params_i] = other_stages;
    };
    rollout_state(enter_phase);
    enter_phase.device[inference_i] = inference;
    enter_phase.device[staging_i] = staging;
    if (seed) {
      enter_phase.device[params_i] += other_stages;  // loaded host -> device for the broadcast
    }

    rollout_state(rollout_phase);
    if (memory.offload_params_in_rollout) {
      rollout_phase.device[params_i] = 0;
      rollout_phase.host[params_i] += params;
    }
    rollout_phase.device[inference_i] = inference;

    // KV cache: given, or vLLM's rule (a fraction of the device minus what is already there).
    std::int64_t kv = settings.kv_cache_bytes;
    if (kv <= 0) {
      const auto budget =
          static_cast<std::int64_t>(settings.gpu_memory_utilization * static_cast<double>(plan.device_memory));
      kv = std::max<std::int64_t>(0, budget - rollout_phase.device_total());
    }
    rollout_phase.device[kv_i] = kv;
    if (!memory.free_kv_cache_in_train) {
      train_phase.device[kv_i] = kv;
      enter_phase.device[kv_i] = kv;
    }

    exit_phase = rollout_phase;
    exit_phase.phase = PlanPhase::kExit;
    if (memory.exit_policy == core::ExitPolicy::kOffload) exit_phase.host[inference_i] = inference;

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
    if (kv < kv_needed) {
      out.fits = false;
      out.notes.push_back("does not fit: the KV cache gets " + format_bytes(kv) + " but the batch needs " +
                          format_bytes(kv_needed) + " (" + std::to_string(rows) + " rows of " +
                          std::to_string(prompt_length + settings.max_new_tokens) + " tokens)");
    }
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
      if (a.phases[p].device != b.phases[p].device || a.phases[p].host != b.phases[p].host) return false;
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
        "host, %.0f GB/s between hosts per GPU, %.1f us per message; transport %s)\n",
        1e3 * plan.predicted_enter_seconds, plan.slowest_rank, t.gpus_per_host, t.intra_host_bytes_per_s / 1e9,
        t.inter_host_bytes_per_s / 1e9, t.message_latency_s * 1e6,
        std::string(core::transport_name(plan.transport)).c_str());
    text += line;
  }
  text += plan.fits ? "\nfits\n" : "\nDOES NOT FIT\n";
  return text;
}

void print_memory_plan(const MemoryPlan& plan, std::ostream& out) { out << format_memory_plan(plan); }

}  // namespace hybridshard::service
