#include "rank_session.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include "hybridshard/core/batch.h"
#include "hybridshard/core/communicator.h"
#include "hybridshard/core/device.h"
#include "hybridshard/core/error.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/core/reshard_plan.h"
#include "hybridshard/core/store.h"
#include "hybridshard/core/transition.h"
#include "hybridshard/core/weight_generator.h"
#include "hybridshard/service/checkpoint/hf_checkpoint.h"
#include "hybridshard/service/config/memory_plan.h"
#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/launch/rank_events.h"
#include "hybridshard/service/rank/rank_setup.h"
#include "hybridshard/service/workloads/reference_model.h"
#include "hybridshard/service/workloads/rollout.h"
#include "hybridshard/service/workloads/train_step.h"

namespace hybridshard::service {
namespace {

using Clock = std::chrono::steady_clock;

// Fault injection for the reliability tests: HYBRIDSHARD_FAULT="RANK:PHASE:ACTION[:ITERATION]" makes rank RANK
// kill itself (ACTION kill), stop itself (stop: SIGSTOP, as a hung process) or throw (error) when PHASE begins
// (in ITERATION, default the first). Off unless the variable is set.
void maybe_inject_fault(int rank, int iteration, const std::string& phase) {
  const char* spec = std::getenv("HYBRIDSHARD_FAULT");
  if (spec == nullptr || *spec == '\0') return;
  std::vector<std::string> parts;
  std::string part;
  for (const char* c = spec;; ++c) {
    if (*c == ':' || *c == '\0') {
      parts.push_back(part);
      part.clear();
      if (*c == '\0') break;
    } else {
      part.push_back(*c);
    }
  }
  if (parts.size() < 3) return;
  const int fault_iteration = parts.size() > 3 ? std::atoi(parts[3].c_str()) : (phase == "init" ? -1 : 0);
  if (std::atoi(parts[0].c_str()) != rank || parts[1] != phase || fault_iteration != iteration) return;
  std::cerr << "[rank " << rank << "] injecting fault '" << parts[2] << "' at " << phase << std::endl;
  if (parts[2] == "kill") ::raise(SIGKILL);
  if (parts[2] == "stop") ::raise(SIGSTOP);
  if (parts[2] == "error") HS_THROW(core::Error, "injected fault in phase " + phase);
}

// Emits kPhaseBegin / kPhaseEnd (with its seconds) around a phase.
class PhaseScope {
 public:
  PhaseScope(core::EventSink& events, int rank, int iteration, std::string phase)
      : events_(events), rank_(rank), iteration_(iteration), phase_(std::move(phase)), started_(Clock::now()) {
    core::Event event;
    event.type = core::EventType::kPhaseBegin;
    event.time = core::wall_time_now();
    event.rank = rank_;
    event.iteration = iteration_;
    event.phase = phase_;
    events_.on_event(event);
    maybe_inject_fault(rank_, iteration_, phase_);
  }
  ~PhaseScope() {
    core::Event event;
    event.type = core::EventType::kPhaseEnd;
    event.time = core::wall_time_now();
    event.rank = rank_;
    event.iteration = iteration_;
    event.phase = phase_;
    event.seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    events_.on_event(event);
  }

 private:
  core::EventSink& events_;
  int rank_;
  int iteration_;
  std::string phase_;
  Clock::time_point started_;
};

void emit_memory_sample(core::EventSink& events, core::Device& device, int rank, int iteration) {
  core::Event event;
  event.type = core::EventType::kMemorySample;
  event.time = core::wall_time_now();
  event.rank = rank;
  event.iteration = iteration;
  event.device_used = device.used_memory();
  event.device_total = device.total_memory();
  event.tracked = device.bytes_in_use(core::Residency::kGpu);
  events.on_event(event);
}

// Samples device memory every interval from its own thread (the engine's byte counters are atomic).
class MemorySampler {
 public:
  MemorySampler(core::EventSink& events, core::Device& device, int rank, double interval_seconds,
                const std::atomic<int>& iteration)
      : thread_([&, rank, interval_seconds] {
          std::unique_lock lock(mutex_);
          while (!stop_) {
            cv_.wait_for(lock, std::chrono::duration<double>(interval_seconds));
            if (!stop_) emit_memory_sample(events, device, rank, iteration.load());
          }
        }) {}
  ~MemorySampler() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Prompts of train replica `replica` at `iteration`: its rows of the job's own prompts (they are the global batch:
// replica d holds rows [d * P, (d + 1) * P), P = prompts_per_train_replica, as the loader checked), or seeded random
// token ids.
core::TokenBatch replica_prompts(const JobConfig& job, int replica, int iteration) {
  const GenerationConfig& settings = job.generation;
  core::TokenBatch batch;
  if (!settings.prompts.empty()) {
    batch.rows = settings.prompts_per_train_replica;
    batch.cols = static_cast<std::int64_t>(settings.prompts.front().size());
    for (std::int64_t row = replica * batch.rows; row < (replica + 1) * batch.rows; ++row) {
      const auto& tokens = settings.prompts.at(static_cast<std::size_t>(row));
      batch.tokens.insert(batch.tokens.end(), tokens.begin(), tokens.end());
    }
    return batch;
  }
  batch.rows = settings.prompts_per_train_replica;
  batch.cols = settings.prompt_length;
  batch.tokens.resize(static_cast<std::size_t>(batch.rows * batch.cols));
  for (std::int64_t i = 0; i < batch.rows * batch.cols; ++i) {
    const std::uint64_t key = (std::uint64_t{job.model.seed} << 48) ^ (std::uint64_t(replica) << 32) ^
                              (std::uint64_t(iteration) << 24) ^ static_cast<std::uint64_t>(i);
    batch.tokens[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(core::mix64(key) % static_cast<std::uint64_t>(job.model.spec.vocab_size));
  }
  return batch;
}

std::int64_t rows_per_replica(const JobConfig& job) { return job.generation.prompts_per_train_replica; }

std::int64_t prompt_cols(const JobConfig& job) {
  return job.generation.prompts.empty() ? job.generation.prompt_length
                                        : static_cast<std::int64_t>(job.generation.prompts.front().size());
}

// Whether every rank stops after `iteration`. Ranks that read the launcher's "stop" key on their own could disagree
// (the key set between two ranks' reads), and a rank that went on would wait for the others in a collective until it
// timed out: rank 0 decides for the iteration and the others read its decision (waiting up to the store's timeout).
bool stop_agreed(core::Store& store, int rank, int iteration) {
  const std::string key = "stop_after/" + std::to_string(iteration);
  if (rank == 0) store.set(key, store.check({"stop"}) ? "1" : "0");
  return store.get(key) == "1";
}

}  // namespace

int run_rank(const JobConfig& job, const RankEnvironment& environment, std::ostream& log) {
  const int rank = environment.rank;
  core::set_error_rank(rank);
  const core::ModelSpec& spec = job.model.spec;
  if (environment.world_size != job.runtime.world_size) {
    HS_THROW(core::ConfigError, "the launcher started " + std::to_string(environment.world_size) +
                                    " ranks but runtime.world_size is " + std::to_string(job.runtime.world_size));
  }

  // Events first, so that everything after is reported.
  const std::unique_ptr<StreamEventSink> event_sink = open_rank_events(environment, job, log);
  StreamEventSink& events = *event_sink;

  // Device, store, communicators, plan and train weights. A rank whose memory plan does not fit its device refuses
  // to start before it contacts a peer, and says why with its own plan (computed for this rank alone).
  RankSetupHooks hooks;
  hooks.device_open = [&](core::Device& device) {
    const MemoryPlan memory = make_rank_memory_plan(
        job, rank, job.runtime.device_memory > 0 ? job.runtime.device_memory : device.total_memory());
    const RankMemoryPlan& mine = memory.ranks.front();
    if (!mine.fits) {
      std::string why;
      for (const std::string& note : mine.notes) why += "\n  " + note;
      HS_THROW(core::OutOfMemoryError, "rank " + std::to_string(rank) + " on " + environment.host +
                                           ": the job does not fit this device (" + device.description() + "):" + why +
                                           "\n" + format_memory_plan(memory));
    }
    events.send(rank_up_event(rank, environment.host, static_cast<long>(::getpid()), device.description(),
                              core::wall_time_now()));
  };
  hooks.around_weights = [&](const std::function<void()>& load) {
    PhaseScope phase(events, rank, -1, "init");
    load();
  };
  StoreAddress store_address;
  store_address.host = environment.master_addr;
  store_address.port = environment.master_port;
  store_address.host_it = !environment.store_hosted_elsewhere && rank == 0;
  RankSetupOptions setup_options = rank_setup_options(job, rank, environment.local_rank, store_address);
  setup_options.events = &events;
  RankSetup setup(setup_options, hooks);
  core::Device* device = &setup.device();
  core::Communicator* world = &setup.world();
  core::Transition* transition = &setup.transition();
  const std::vector<core::FlatBuffer*>& param_pointers = setup.train_params();
  const HfCheckpoint* checkpoint = setup.checkpoint();

  workloads::AdamOptions adam;
  adam.learning_rate = job.schedule.learning_rate;
  workloads::TrainStep train(setup.plan().train_buffers, param_pointers, *device, &events, rank, adam);

  std::unique_ptr<workloads::ReferenceModel> reference;
  const bool check = job.generation.check && spec.num_parameters() <= job.generation.check_max_parameters;
  if (job.generation.check && !check && rank == 0) {
    log << "[rank 0] note: the rollout reference check is off: " << spec.num_parameters()
        << " parameters exceed rollout.check_max_parameters " << job.generation.check_max_parameters << "\n";
  }
  if (check) {
    workloads::FullModelLoader loader;
    if (checkpoint != nullptr) {
      loader = [&](const core::BufferLayout& full_layout, core::FlatBuffer& buffer) {
        std::vector<std::uint8_t> host(static_cast<std::size_t>(full_layout.bytes));
        checkpoint->read_buffer(spec, full_layout, host.data());
        device->copy(buffer.data(), buffer.residency(), host.data(), core::Residency::kCpu, full_layout.bytes);
        device->synchronize();
      };
    }
    // The reference lives in host memory terms of the same device: it is the referee, not part of the job's budget,
    // but it is tracked like everything else.
    reference = std::make_unique<workloads::ReferenceModel>(spec, *device, &events, rank, adam, job.model.seed, loader);
  }

  core::BatchRedistribution batches(job.train, job.rollout, *world, *device);

  // The KV cache budget: what the job gives, else gpu_memory_utilization of the device minus what is in use once the
  // inference shards are in place (measured at the first rollout).
  std::unique_ptr<workloads::Rollout> rollout;
  auto make_rollout = [&] {
    std::int64_t budget = job.generation.kv_cache_bytes;
    if (budget <= 0) {
      const double allowed = job.generation.gpu_memory_utilization * static_cast<double>(device->total_memory());
      // Blocks the device keeps cached are free for the KV cache to take.
      budget =
          static_cast<std::int64_t>(allowed) - (device->used_memory() - device->bytes_cached(core::Residency::kGpu));
      const std::int64_t needed = rows_per_replica(job) * job.train.dp *
                                  (prompt_cols(job) + job.generation.max_new_tokens) *
                                  workloads::kv_cache_bytes_per_token(spec, job.rollout);
      if (budget < needed) {
        HS_THROW(core::OutOfMemoryError,
                 "rank " + std::to_string(rank) + ": no room for the KV cache: rollout.gpu_memory_utilization " +
                     std::to_string(job.generation.gpu_memory_utilization) + " of " +
                     std::to_string(device->total_memory()) + " device bytes leaves " + std::to_string(budget) +
                     " bytes after the weights, but the rollout needs " + std::to_string(needed));
      }
    }
    rollout = std::make_unique<workloads::Rollout>(spec, job.rollout, setup.inference_tp_rank(), setup.rollout_group(),
                                                   *device, &events, rank, budget);
  };

  std::atomic<int> current_iteration{-1};
  MemorySampler sampler(events, *device, rank, job.metrics.sample_interval_seconds, current_iteration);
  emit_memory_sample(events, *device, rank, -1);

  const int replica = job.train.coord(rank).dp_rank;
  int exit_code = 0;
  for (int iteration = 0; iteration < job.schedule.iterations; ++iteration) {
    current_iteration = iteration;
    events.set_iteration(iteration);
    transition->set_iteration(iteration);
    setup.train_weights().set_iteration(iteration);

    {
      PhaseScope phase(events, rank, iteration, "train");
      train.restore();
      train.step(iteration);
      if (reference) reference->step(iteration);
      device->synchronize();
    }
    emit_memory_sample(events, *device, rank, iteration);

    core::FlatBuffer* shard = nullptr;
    {
      PhaseScope phase(events, rank, iteration, "enter");
      if (job.memory.offload_optimizer_in_rollout) train.offload_optimizer();
      if (job.memory.free_grads_in_rollout) {
        train.free_grads();
      } else if (job.memory.offload_grads_in_rollout) {
        train.offload_grads();
      }
      if (job.memory.offload_params_in_rollout) {
        // The transition reads the params first; they go to the host once the shards are built.
      }
      shard = &transition->enter(param_pointers);
      if (job.memory.offload_params_in_rollout) {
        for (core::FlatBuffer* buffer : param_pointers) buffer->move_to(core::Residency::kCpu, true);
      }
      device->synchronize();
    }
    emit_memory_sample(events, *device, rank, iteration);

    {
      PhaseScope phase(events, rank, iteration, "rollout");
      if (!rollout) make_rollout();
      rollout->set_iteration(iteration);
      const core::TokenBatch replica_batch = replica_prompts(job, replica, iteration);
      const core::TokenBatch prompts = batches.preprocess(replica_batch, rows_per_replica(job), prompt_cols(job));
      const core::TokenBatch generated = rollout->generate(*shard, prompts, job.generation.max_new_tokens);
      emit_memory_sample(events, *device, rank, iteration);  // the KV cache at its fullest
      if (reference) {
        reference->set_iteration(iteration);
        const workloads::CheckResult result = reference->check(prompts, generated, rollout->last_token_logits());
        if (!result.ok) {
          HS_THROW(core::Error, "rank " + std::to_string(rank) + ": the rollout of iteration " +
                                    std::to_string(iteration + 1) +
                                    " disagrees with the single-rank reference: " + result.detail);
        }
      }
      const core::TokenBatch outputs = batches.postprocess(generated, rows_per_replica(job));
      if (outputs.rows != rows_per_replica(job)) {
        HS_THROW(core::Error, "rank " + std::to_string(rank) + ": batch re-distribution returned " +
                                  std::to_string(outputs.rows) + " rows, expected " +
                                  std::to_string(rows_per_replica(job)));
      }
      if (job.memory.free_kv_cache_in_train) rollout->release_kv_cache();
    }
    emit_memory_sample(events, *device, rank, iteration);

    {
      PhaseScope phase(events, rank, iteration, "exit");
      transition->exit(job.memory.exit_policy);
      if (job.memory.offload_params_in_rollout) {
        for (core::FlatBuffer* buffer : param_pointers) buffer->move_to(core::Residency::kGpu, true);
      }
      device->synchronize();
    }
    emit_memory_sample(events, *device, rank, iteration);

    if (stop_agreed(setup.store(), rank, iteration)) {
      log << "[rank " << rank << "] stopping after iteration " << iteration + 1 << " as the launcher asked\n";
      exit_code = 130;
      break;
    }
  }
  world->barrier();
  return exit_code;
}

}  // namespace hybridshard::service
