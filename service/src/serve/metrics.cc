#include "hybridshard/service/serve/metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <limits>
#include <sstream>

#include "hybridshard/core/residency.h"

#ifndef HYBRIDSHARD_VERSION
#define HYBRIDSHARD_VERSION "unknown"
#endif

namespace hybridshard::service {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr std::array kResidencies = {core::Residency::kGpu, core::Residency::kCpu, core::Residency::kNone};
constexpr std::array kPaths = {core::TransferPath::kNetwork, core::TransferPath::kHostToDevice,
                               core::TransferPath::kDeviceToHost, core::TransferPath::kDeviceToDevice};
constexpr std::array<const char*, 4> kJobStates = {"starting", "running", "finished", "failed"};

// The families, in the order they are exposed.
struct Families {
  MetricFamily build_info{
      "hybridshard_build_info", "Always 1; the label says which hybridshard serves the metrics", MetricType::Gauge, {}};
  MetricFamily buffer_bytes{"hybridshard_buffer_bytes",
                            "Bytes of the rank's flat buffers by kind and residency (none: not allocated); kind "
                            "cached: the device's cache (gpu: device memory, cpu: pinned host)",
                            MetricType::Gauge,
                            {}};
  MetricFamily device_used{"hybridshard_device_memory_used_bytes",
                           "Device memory in use on the rank's device, as the device reports it",
                           MetricType::Gauge,
                           {}};
  MetricFamily device_total{
      "hybridshard_device_memory_total_bytes", "Device memory capacity of the rank's device", MetricType::Gauge, {}};
  MetricFamily device_tracked{"hybridshard_device_memory_tracked_bytes",
                              "Device memory held by buffers the engine tracks",
                              MetricType::Gauge,
                              {}};
  MetricFamily device_cached{"hybridshard_device_memory_cached_bytes",
                             "Device memory the engine's cache holds free for its next allocations (not for others)",
                             MetricType::Gauge,
                             {}};
  MetricFamily device_untracked{"hybridshard_device_memory_untracked_bytes",
                                "Device memory held by others (CUDA context, NCCL, libraries, other processes): used "
                                "- tracked - cached",
                                MetricType::Gauge,
                                {}};
  MetricFamily moved{"hybridshard_moved_bytes_total",
                     "Bytes moved by the rank, by path (network, host_to_device, device_to_host, device_to_device)",
                     MetricType::Counter,
                     {}};
  MetricFamily phase_duration{"hybridshard_phase_duration_seconds",
                              "Duration of each phase (train, enter, rollout, exit, ...) on each rank",
                              MetricType::Histogram,
                              {}};
  MetricFamily phase{"hybridshard_phase", "1 for the phase the rank is in, 0 for the others", MetricType::Gauge, {}};
  MetricFamily iteration{
      "hybridshard_iteration", "Iteration the rank is in (0-based; -1 before the first)", MetricType::Gauge, {}};
  MetricFamily rank_up{"hybridshard_rank_up",
                       "1 while the rank process is up and answering, 0 once it exited or stopped answering",
                       MetricType::Gauge,
                       {}};
  MetricFamily check_failures{"hybridshard_rollout_check_failures_total",
                              "Correctness checks (rollout against its reference, shard checks) that failed",
                              MetricType::Counter,
                              {}};
  MetricFamily last_enter{"hybridshard_last_enter_seconds",
                          "Duration of the rank's last completed enter transition",
                          MetricType::Gauge,
                          {}};
  MetricFamily last_exit{
      "hybridshard_last_exit_seconds", "Duration of the rank's last completed exit transition", MetricType::Gauge, {}};
  MetricFamily last_enter_network{"hybridshard_last_enter_network_bytes",
                                  "Network bytes (sent and received) of the rank's last completed enter",
                                  MetricType::Gauge,
                                  {}};
  MetricFamily last_event{
      "hybridshard_last_event_timestamp_seconds", "Unix time of the newest event from the rank", MetricType::Gauge, {}};
  MetricFamily job_state{"hybridshard_job_state",
                         "1 for the job's state (starting, running, finished, failed), 0 for the others",
                         MetricType::Gauge,
                         {}};
  MetricFamily world_size{"hybridshard_world_size", "Number of ranks of the job", MetricType::Gauge, {}};
  MetricFamily predicted_enter{"hybridshard_predicted_enter_seconds",
                               "Enter time `hybridshard plan` predicts for the job's slowest rank on its topology",
                               MetricType::Gauge,
                               {}};

  std::vector<MetricFamily> all() && {
    return {
        std::move(build_info),     std::move(buffer_bytes),  std::move(device_used),      std::move(device_total),
        std::move(device_tracked), std::move(device_cached), std::move(device_untracked), std::move(moved),
        std::move(phase_duration), std::move(phase),         std::move(iteration),        std::move(rank_up),
        std::move(check_failures), std::move(last_enter),    std::move(last_exit),        std::move(last_enter_network),
        std::move(last_event),     std::move(job_state),     std::move(world_size),       std::move(predicted_enter)};
  }
};

using Labels = std::vector<ClientMetric::Label>;

void gauge(MetricFamily& family, Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

void counter(MetricFamily& family, Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = value;
  family.metric.push_back(std::move(metric));
}

void histogram(MetricFamily& family, Labels labels, const PhaseDurations& durations) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.histogram.sample_count = durations.count;
  metric.histogram.sample_sum = durations.sum;
  const std::vector<double>& bounds = phase_duration_buckets();
  std::uint64_t cumulative = 0;
  for (std::size_t index = 0; index < bounds.size(); ++index) {
    cumulative += index < durations.buckets.size() ? durations.buckets[index] : 0;
    metric.histogram.bucket.push_back({cumulative, bounds[index]});
  }
  metric.histogram.bucket.push_back({durations.count, std::numeric_limits<double>::infinity()});
  family.metric.push_back(std::move(metric));
}

Labels with(const Labels& base, std::initializer_list<ClientMetric::Label> more) {
  Labels labels = base;
  labels.insert(labels.end(), more);
  return labels;
}

void add_rank(Families& out, const Labels& job, const RankState& rank) {
  const Labels labels = with(job, {{"rank", std::to_string(rank.rank)}});
  std::map<std::pair<core::BufferKind, core::Residency>, std::int64_t> sums;
  for (const BufferState& buffer : rank.buffers) sums[{buffer.kind, buffer.residency}] += buffer.bytes;
  for (core::BufferKind kind : core::kBufferKinds) {
    for (core::Residency residency : kResidencies) {
      gauge(out.buffer_bytes,
            with(labels, {{"kind", std::string(core::buffer_kind_name(kind))},
                          {"residency", std::string(core::residency_name(residency))}}),
            static_cast<double>(sums[{kind, residency}]));
    }
  }
  // The cache as a kind of its own: device blocks on gpu, pinned host blocks on cpu, never "none".
  for (const auto& [residency, bytes] :
       {std::pair{core::Residency::kGpu, rank.cached}, std::pair{core::Residency::kCpu, rank.cached_host},
        std::pair{core::Residency::kNone, std::int64_t{0}}}) {
    gauge(out.buffer_bytes,
          with(labels, {{"kind", "cached"}, {"residency", std::string(core::residency_name(residency))}}),
          static_cast<double>(bytes));
  }
  gauge(out.device_used, labels, static_cast<double>(rank.device_used));
  gauge(out.device_total, labels, static_cast<double>(rank.device_total));
  gauge(out.device_tracked, labels, static_cast<double>(rank.tracked));
  gauge(out.device_cached, labels, static_cast<double>(rank.cached));
  gauge(out.device_untracked, labels,
        static_cast<double>(untracked_bytes(rank.device_used, rank.tracked, rank.cached)));
  for (core::TransferPath path : kPaths) {
    counter(out.moved, with(labels, {{"path", std::string(core::transfer_path_name(path))}}),
            static_cast<double>(rank.moved_bytes[static_cast<std::size_t>(path)]));
  }
  for (const std::string& name : rank.phase_names) {
    gauge(out.phase, with(labels, {{"phase", name}}), !rank.down && rank.phase == name ? 1 : 0);
  }
  for (const auto& [name, durations] : rank.durations) {
    histogram(out.phase_duration, with(labels, {{"phase", name}}), durations);
  }
  gauge(out.iteration, labels, rank.iteration);
  gauge(out.rank_up, labels, rank.up ? 1 : 0);
  counter(out.check_failures, labels, static_cast<double>(rank.check_failures));
  gauge(out.last_enter, labels, rank.last_enter_seconds);
  gauge(out.last_exit, labels, rank.last_exit_seconds);
  gauge(out.last_enter_network, labels, static_cast<double>(rank.last_enter_network_bytes));
  gauge(out.last_event, labels, rank.last_event_time);
}

void add_job(Families& out, const MetricsJob& job) {
  const Labels labels = job.name.empty() ? Labels{} : Labels{{"job", job.name}};
  job.state->read([&](const JobFold& fold) {
    for (const char* state : kJobStates) gauge(out.job_state, with(labels, {{"state", state}}), fold.state == state);
    gauge(out.world_size, labels, fold.world_size);
    // The launcher's job event carries it (hybridshard strategy); absent: no series.
    if (fold.description.is_object() && fold.description.contains("predicted_enter_seconds") &&
        fold.description["predicted_enter_seconds"].is_number()) {
      gauge(out.predicted_enter, labels, fold.description["predicted_enter_seconds"].get<double>());
    }
    for (const auto& [index, rank] : fold.ranks) add_rank(out, labels, rank);
  });
}

}  // namespace

std::string hybridshard_version() { return HYBRIDSHARD_VERSION; }

std::string metrics_text(const std::vector<MetricsJob>& jobs, const std::string& version) {
  Families families;
  gauge(families.build_info, {{"version", version}}, 1);
  for (const MetricsJob& job : jobs) add_job(families, job);
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, std::move(families).all());
  return out.str();
}

}  // namespace hybridshard::service
