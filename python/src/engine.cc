#include "engine.h"

#include <unistd.h>

#include <functional>
#include <iostream>
#include <optional>

#include "hybridshard/core/device.h"
#include "hybridshard/core/flat_buffer.h"
#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/events/stream_event_sink.h"
#include "hybridshard/service/launch/launcher.h"
#include "hybridshard/service/launch/rank_events.h"
#include "hybridshard/service/rank/phase_events.h"
#include "hybridshard/service/rank/rank_setup.h"

namespace hybridshard::python {

// Everything a rank holds: its setup (device, store, communicators, plan, train weights, transition) and, outliving
// it, the event sink its buffers report their destruction to. Views hold it through their lease, so the memory they
// point at outlives the Engine if need be.
struct RankState {
  std::unique_ptr<service::StreamEventSink> events;
  std::unique_ptr<service::RankSetup> setup;

  ~RankState() { setup.reset(); }
};

namespace {

// The event stream to `hybridshard serve`, when the job reports to one: by choice, so an unreachable or refusing
// serve is said once on stderr and the job goes on unreported (connect_event_stream).
std::unique_ptr<service::EventStreamClient> connect_serve(const EngineSettings& settings) {
  const service::RankEnvironment& environment = settings.environment;
  if (environment.serve_address.empty()) return nullptr;
  service::StreamHello hello;
  hello.rank = environment.rank;
  hello.pid = static_cast<long>(::getpid());
  hello.job = service::reported_job_name(environment, settings.job);
  hello.world_size = environment.world_size;
  hello.instance = environment.job_instance;
  hello.secret = environment.events_secret;
  return service::connect_event_stream(environment.serve_address, hello, settings.serve_timeout, /*required=*/false,
                                       std::cerr);
}

// Runs `body` between a phase's begin and end events (the end carries its seconds), as the rank program does.
void run_phase(core::EventSink& events, int rank, int iteration, const std::string& phase,
               const std::function<void()>& body) {
  service::PhaseScope scope(events, rank, iteration, phase);
  body();
}

std::vector<TensorView> views_of(const core::BufferLayout& layout, core::FlatBuffer& buffer, core::Device& device,
                                 int device_index, const std::shared_ptr<ViewLease>& lease) {
  std::vector<TensorView> views;
  views.reserve(layout.tensors.size());
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
    const core::LocalTensor& tensor = layout.tensors[i];
    TensorView view;
    view.data = static_cast<std::uint8_t*>(buffer.data()) + tensor.offset_bytes;
    view.shape = tensor.shape;
    view.dtype = layout.dtype;
    view.device_type = device.type();
    view.device_index = device_index;
    view.lease = lease;
    view.index = i;
    views.push_back(std::move(view));
  }
  return views;
}

std::vector<std::string> names_of(const core::BufferLayout& layout) {
  std::vector<std::string> names;
  for (const core::LocalTensor& tensor : layout.tensors) names.push_back(tensor.name);
  return names;
}

std::string joined(const std::vector<std::string>& names, std::size_t at_most) {
  std::string text;
  for (std::size_t i = 0; i < names.size() && i < at_most; ++i) text += (i ? ", " : "") + names[i];
  if (names.size() > at_most) text += ", ... (" + std::to_string(names.size()) + " in all)";
  return text;
}

}  // namespace

Engine::Engine(const EngineSettings& settings)
    : rank_(settings.environment.rank), world_size_(settings.environment.world_size) {
  const service::JobConfig& job = settings.job;
  const service::RankEnvironment& environment = settings.environment;
  core::set_error_rank(rank_);
  if (world_size_ != job.runtime.world_size) {
    HS_THROW(core::ConfigError, "rank " + std::to_string(rank_) + ": the world has " + std::to_string(world_size_) +
                                    " ranks but the job's runtime.world_size is " +
                                    std::to_string(job.runtime.world_size));
  }
  if (rank_ < 0 || rank_ >= world_size_) {
    HS_THROW(core::ConfigError,
             "rank " + std::to_string(rank_) + " is outside the world of " + std::to_string(world_size_) + " ranks");
  }

  release_on_exit_ = job.memory.release_on_exit;
  state_ = std::make_shared<RankState>();
  RankState& state = *state_;
  state.events = std::make_unique<service::StreamEventSink>(rank_, connect_serve(settings), nullptr);
  if (state.events->streaming() && rank_ == 0) state.events->send(service::job_event(job, core::wall_time_now()));

  const service::StoreAddress store = service::store_address_of(environment);
  service::RankSetupOptions options = service::rank_setup_options(job, rank_, environment.local_rank, store);
  options.world_size = world_size_;
  options.events = state.events.get();
  service::RankSetupHooks hooks;
  hooks.device_open = [&](core::Device& device) {
    service::require_plan_fits(job, rank_, environment.host, device);
    state.events->send(service::rank_up_event(rank_, environment.host, static_cast<long>(::getpid()),
                                              device.description(), core::wall_time_now()));
  };
  hooks.around_weights = [&](const std::function<void()>& load) { run_phase(*state.events, rank_, -1, "init", load); };
  state.setup = std::make_unique<service::RankSetup>(options, hooks);
  device_index_ = options.device.type == core::DeviceType::kCuda ? options.device.cuda_index : 0;
  plan_ = state.setup->plan();
  inference_tp_rank_ = state.setup->inference_tp_rank();

  for (const core::BufferLayout& layout : plan_.train_buffers) {
    train_leases_.push_back(std::make_shared<ViewLease>(state_, names_of(layout)));
  }
  sample_memory();
}

Engine::~Engine() = default;

core::DType Engine::dtype() const { return plan_.spec.dtype; }
core::DeviceType Engine::device_type() const { return state_->setup->device().type(); }
std::string Engine::device_description() const { return state_->setup->device().description(); }

void Engine::require_open(const char* operation) const {
  if (closed()) HS_THROW(core::Error, std::string(operation) + ": the engine is closed");
}

void Engine::require_no_inference_views(const char* operation) const {
  if (!inference_lease_ || inference_lease_->live_count() == 0) return;
  const std::vector<std::string> live = inference_lease_->live();
  HS_THROW(LiveViewsError, std::string(operation) + ": " + std::to_string(live.size()) +
                               " tensors from enter() are still referenced (" + joined(live, 4) +
                               "); they view the inference buffer this would free: drop them first (del, and "
                               "mind a loop variable holding the last one)");
}

std::vector<TensorView> Engine::train_views(int chunk) {
  if (chunk < 0 || chunk >= static_cast<int>(plan_.train_buffers.size())) {
    HS_THROW(core::ConfigError, "train chunk " + std::to_string(chunk) + " does not exist: this rank holds " +
                                    std::to_string(plan_.train_buffers.size()) + " (virtual pipeline chunks)");
  }
  const auto index = static_cast<std::size_t>(chunk);
  return views_of(plan_.train_buffers[index], *state_->setup->train_params()[index], state_->setup->device(),
                  device_index(), train_leases_[index]);
}

void Engine::load_train_tensor(int chunk, const std::string& name, const DLTensor& source) {
  const std::vector<TensorView> views = train_views(chunk);
  const core::BufferLayout& layout = plan_.train_buffers[static_cast<std::size_t>(chunk)];
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
    const core::LocalTensor& tensor = layout.tensors[i];
    if (tensor.name != name) continue;
    const void* bytes = dlpack_bytes(source, name, layout.dtype, tensor.numel(), state_->setup->device().type());
    state_->setup->device().copy(views[i].data, core::Residency::kGpu, bytes, core::Residency::kGpu,
                                 tensor.numel() * static_cast<std::int64_t>(core::dtype_size(layout.dtype)));
    state_->setup->device().synchronize();
    return;
  }
  HS_THROW(core::ConfigError, "'" + name + "' is not a tensor of train chunk " + std::to_string(chunk) + " on rank " +
                                  std::to_string(rank_));
}

std::vector<TensorView> Engine::enter() {
  require_open("enter()");
  if (entered_) {
    HS_THROW(core::Error, "enter(): already entered (iteration " + std::to_string(iteration_) + "); call exit() first");
  }
  RankState& state = *state_;
  state.events->set_iteration(iteration_);
  state.setup->transition().set_iteration(iteration_);
  state.setup->train_weights().set_iteration(iteration_);

  run_phase(*state.events, rank_, iteration_, "enter", [&] {
    state.setup->transition().enter(state.setup->train_params());
    state.setup->device().synchronize();
  });
  entered_ = true;
  sample_memory();
  inference_lease_ = std::make_shared<ViewLease>(state_, names_of(plan_.inference_buffer));
  return inference_views();
}

std::vector<TensorView> Engine::inference_views() {
  if (!entered_) HS_THROW(core::Error, "the inference weights exist only between enter() and exit()");
  return views_of(plan_.inference_buffer, *state_->setup->transition().inference_params(), state_->setup->device(),
                  device_index_, inference_lease_);
}

void Engine::exit(core::ExitPolicy policy, std::optional<core::ReleaseOnExit> release) {
  require_open("exit()");
  if (!entered_) HS_THROW(core::Error, "exit(): not entered (call enter() first)");
  require_no_inference_views("exit()");
  RankState& state = *state_;
  run_phase(*state.events, rank_, iteration_, "exit", [&] {
    state.setup->transition().exit(policy);
    state.setup->device().synchronize();
    core::release_after_exit(state.setup->device(), release.value_or(release_on_exit_));
  });
  inference_lease_.reset();
  entered_ = false;
  sample_memory();
  ++iteration_;
}

void Engine::close() {
  if (closed()) return;
  require_no_inference_views("close()");
  state_->setup->world().barrier();
  closed_ = true;
  inference_lease_.reset();
  entered_ = false;
}

std::vector<std::string> Engine::live_inference_views() const {
  return inference_lease_ ? inference_lease_->live() : std::vector<std::string>{};
}

namespace {
const core::LocalTensor& tensor_named(const core::BufferLayout& layout, const std::string& name) {
  for (const core::LocalTensor& tensor : layout.tensors) {
    if (tensor.name == name) return tensor;
  }
  HS_THROW(core::ConfigError, "'" + name + "' is not a tensor of " + layout.name);
}
}  // namespace

std::uintptr_t Engine::train_address(int chunk, const std::string& name) const {
  if (chunk < 0 || chunk >= static_cast<int>(plan_.train_buffers.size())) {
    HS_THROW(core::ConfigError, "train chunk " + std::to_string(chunk) + " does not exist");
  }
  const auto index = static_cast<std::size_t>(chunk);
  const core::LocalTensor& tensor = tensor_named(plan_.train_buffers[index], name);
  return reinterpret_cast<std::uintptr_t>(state_->setup->train_params()[index]->data()) +
         static_cast<std::uintptr_t>(tensor.offset_bytes);
}

std::uintptr_t Engine::inference_address(const std::string& name) const {
  if (!entered_) HS_THROW(core::Error, "inference_address(): not entered");
  const core::LocalTensor& tensor = tensor_named(plan_.inference_buffer, name);
  return reinterpret_cast<std::uintptr_t>(state_->setup->transition().inference_params()->data()) +
         static_cast<std::uintptr_t>(tensor.offset_bytes);
}

void Engine::phase_begin(const std::string& phase) {
  state_->events->set_iteration(iteration_);
  state_->events->on_event(service::phase_event(core::EventType::kPhaseBegin, rank_, iteration_, phase));
}

void Engine::phase_end(const std::string& phase, double seconds) {
  core::Event event = service::phase_event(core::EventType::kPhaseEnd, rank_, iteration_, phase);
  event.seconds = seconds;
  state_->events->on_event(event);
  sample_memory();
}

void Engine::sample_memory() {
  service::emit_memory_sample(*state_->events, state_->setup->device(), rank_, iteration_);
}

}  // namespace hybridshard::python
