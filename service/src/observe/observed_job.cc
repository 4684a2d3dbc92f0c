#include "hybridshard/service/observe/observed_job.h"

#include <cstdio>

namespace hybridshard::service {

ObservedJob::ObservedJob(std::string name, JobStateLimits limits, const std::string& record,
                         RecordOptions record_options)
    : name_(std::move(name)), state_(limits) {
  if (!record.empty()) record_ = std::make_unique<RecordWriter>(record, record_options);
}

ObservedJob::~ObservedJob() {
  try {
    close();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hybridshard: %s\n", error.what());
  }
}

std::optional<PhaseRound> ObservedJob::apply(JobEvent event) {
  if (event.type == JobEventType::kHeartbeat) return std::nullopt;
  std::lock_guard<std::mutex> lock(order_mutex_);
  if (event.is_engine(core::EventType::kMemorySample) && !event.by_kind) {
    event.by_kind = state_.gpu_bytes_by_kind(event.rank());
  }
  std::optional<PhaseRound> round = state_.apply(event);
  generation_.fetch_add(1);
  if (record_) record_->write(event);
  return round;
}

std::string ObservedJob::record_path() const { return record_ ? record_->path() : ""; }

std::string ObservedJob::record_failure() const { return record_ ? record_->failure() : ""; }

std::string ObservedJob::stale_record_moved_to() const { return record_ ? record_->stale_partial_moved_to() : ""; }

void ObservedJob::close() {
  if (record_) record_->close();
}

}  // namespace hybridshard::service
