#include "hybridshard/service/observe/event_json.h"

#include <array>

#include "hybridshard/core/error.h"
#include "hybridshard/service/config/job_config.h"

namespace hybridshard::service {
namespace {

using nlohmann::json;

constexpr std::array kEngineTypes = {
    core::EventType::kBufferCreated, core::EventType::kResidency,  core::EventType::kBufferDestroyed,
    core::EventType::kTransfer,      core::EventType::kPhaseBegin, core::EventType::kPhaseEnd,
    core::EventType::kMemorySample,  core::EventType::kCheck,
};

std::string describe(const json& event) {
  if (event.is_object() && event.contains("type") && event["type"].is_string()) {
    return "event '" + event["type"].get<std::string>() + "'";
  }
  return "event";
}

const json& field(const json& event, const char* key) {
  auto it = event.find(key);
  if (it == event.end()) HS_THROW(core::Error, describe(event) + ": missing field '" + key + "'");
  return *it;
}

[[noreturn]] void wrong_type(const json& event, const char* key, const char* wanted) {
  HS_THROW(core::Error, describe(event) + ": field '" + key + "' must be " + wanted + ", got " +
                            std::string(event[key].type_name()) + " " + event[key].dump());
}

std::string get_string(const json& event, const char* key) {
  const json& value = field(event, key);
  if (!value.is_string()) wrong_type(event, key, "a string");
  return value.get<std::string>();
}

std::int64_t get_int(const json& event, const char* key) {
  const json& value = field(event, key);
  if (!value.is_number_integer()) wrong_type(event, key, "an integer");
  return value.get<std::int64_t>();
}

int get_int32(const json& event, const char* key) {
  std::int64_t value = get_int(event, key);
  if (value < INT32_MIN || value > INT32_MAX) wrong_type(event, key, "a 32-bit integer");
  return static_cast<int>(value);
}

double get_number(const json& event, const char* key) {
  const json& value = field(event, key);
  if (!value.is_number()) wrong_type(event, key, "a number");
  return value.get<double>();
}

bool get_bool(const json& event, const char* key) {
  const json& value = field(event, key);
  if (!value.is_boolean()) wrong_type(event, key, "true or false");
  return value.get<bool>();
}

void require_object_if_present(const json& event, const char* key) {
  if (event.contains(key) && !event[key].is_object()) wrong_type(event, key, "an object");
}

core::BufferKind get_kind(const json& event) {
  std::string name = get_string(event, "kind");
  auto kind = core::parse_buffer_kind(name);
  if (!kind) HS_THROW(core::Error, describe(event) + ": field 'kind': unknown buffer kind '" + name + "'");
  return *kind;
}

core::DType get_dtype(const json& event) {
  std::string name = get_string(event, "dtype");
  auto dtype = core::parse_dtype(name);
  if (!dtype) HS_THROW(core::Error, describe(event) + ": field 'dtype': unknown dtype '" + name + "'");
  return *dtype;
}

core::Residency get_residency(const json& event, const char* key) {
  std::string name = get_string(event, key);
  auto residency = core::parse_residency(name);
  if (!residency) {
    HS_THROW(core::Error,
             describe(event) + ": field '" + key + "': unknown residency '" + name + "' (gpu, cpu or none)");
  }
  return *residency;
}

core::TransferPath get_path(const json& event) {
  std::string name = get_string(event, "path");
  for (auto path : {core::TransferPath::kNetwork, core::TransferPath::kHostToDevice, core::TransferPath::kDeviceToHost,
                    core::TransferPath::kDeviceToDevice}) {
    if (core::transfer_path_name(path) == name) return path;
  }
  HS_THROW(core::Error, describe(event) + ": field 'path': unknown transfer path '" + name + "'");
}

std::string_view backend_name(BackendChoice backend) {
  switch (backend) {
    case BackendChoice::kAuto:
      return "auto";
    case BackendChoice::kNccl:
      return "nccl";
    case BackendChoice::kGloo:
      return "gloo";
  }
  return "auto";
}

}  // namespace

std::optional<core::EventType> parse_event_type(std::string_view name) {
  for (core::EventType type : kEngineTypes) {
    if (core::event_type_name(type) == name) return type;
  }
  return std::nullopt;
}

json event_to_json(const core::Event& event) {
  json out = {
      {"type", std::string(core::event_type_name(event.type))},
      {"time", event.time},
      {"rank", event.rank},
      {"iteration", event.iteration},
  };
  switch (event.type) {
    case core::EventType::kBufferCreated:
      out["buffer"] = event.buffer;
      out["kind"] = std::string(core::buffer_kind_name(event.kind));
      out["dtype"] = std::string(core::dtype_name(event.dtype));
      out["bytes"] = event.bytes;
      out["shape"] = event.shape;
      break;
    case core::EventType::kResidency:
      out["buffer"] = event.buffer;
      out["kind"] = std::string(core::buffer_kind_name(event.kind));
      out["dtype"] = std::string(core::dtype_name(event.dtype));
      out["bytes"] = event.bytes;
      out["from"] = std::string(core::residency_name(event.from));
      out["to"] = std::string(core::residency_name(event.to));
      break;
    case core::EventType::kBufferDestroyed:
      out["buffer"] = event.buffer;
      out["kind"] = std::string(core::buffer_kind_name(event.kind));
      out["bytes"] = event.bytes;
      break;
    case core::EventType::kTransfer:
      out["path"] = std::string(core::transfer_path_name(event.path));
      out["bytes"] = event.bytes;
      out["seconds"] = event.seconds;
      out["peer"] = event.peer;
      out["operation"] = event.operation;
      break;
    case core::EventType::kPhaseBegin:
      out["phase"] = event.phase;
      break;
    case core::EventType::kPhaseEnd:
      out["phase"] = event.phase;
      out["seconds"] = event.seconds;
      break;
    case core::EventType::kMemorySample:
      out["device_used"] = event.device_used;
      out["device_total"] = event.device_total;
      out["tracked"] = event.tracked;
      break;
    case core::EventType::kCheck:
      out["name"] = event.operation;
      out["ok"] = event.ok;
      out["detail"] = event.detail;
      break;
  }
  return out;
}

core::Event event_from_json(const json& in) {
  if (!in.is_object()) HS_THROW(core::Error, "event: expected a JSON object, got " + std::string(in.type_name()));
  std::string type_name = get_string(in, "type");
  auto type = parse_event_type(type_name);
  if (!type) HS_THROW(core::Error, "event: '" + type_name + "' is not an engine event type");

  core::Event event;
  event.type = *type;
  event.time = get_number(in, "time");
  event.rank = get_int32(in, "rank");
  event.iteration = get_int32(in, "iteration");
  switch (event.type) {
    case core::EventType::kBufferCreated:
      event.buffer = get_string(in, "buffer");
      event.kind = get_kind(in);
      event.dtype = get_dtype(in);
      event.bytes = get_int(in, "bytes");
      event.shape = get_string(in, "shape");
      break;
    case core::EventType::kResidency:
      event.buffer = get_string(in, "buffer");
      event.kind = get_kind(in);
      event.dtype = get_dtype(in);
      event.bytes = get_int(in, "bytes");
      event.from = get_residency(in, "from");
      event.to = get_residency(in, "to");
      break;
    case core::EventType::kBufferDestroyed:
      event.buffer = get_string(in, "buffer");
      event.kind = get_kind(in);
      event.bytes = get_int(in, "bytes");
      break;
    case core::EventType::kTransfer:
      event.path = get_path(in);
      event.bytes = get_int(in, "bytes");
      event.seconds = get_number(in, "seconds");
      event.peer = get_int32(in, "peer");
      event.operation = get_string(in, "operation");
      break;
    case core::EventType::kPhaseBegin:
      event.phase = get_string(in, "phase");
      break;
    case core::EventType::kPhaseEnd:
      event.phase = get_string(in, "phase");
      event.seconds = get_number(in, "seconds");
      break;
    case core::EventType::kMemorySample:
      event.device_used = get_int(in, "device_used");
      event.device_total = get_int(in, "device_total");
      event.tracked = get_int(in, "tracked");
      require_object_if_present(in, "by_kind");
      break;
    case core::EventType::kCheck:
      event.operation = get_string(in, "name");
      event.ok = get_bool(in, "ok");
      event.detail = get_string(in, "detail");
      break;
  }
  if (event.bytes < 0) HS_THROW(core::Error, describe(in) + ": field 'bytes' must not be negative");
  return event;
}

void validate_event_json(const json& in) {
  if (!in.is_object()) HS_THROW(core::Error, "event: expected a JSON object, got " + std::string(in.type_name()));
  std::string type = get_string(in, "type");
  if (type != kJobEvent && type != kJobEndEvent && in.contains("rank") && in["rank"].is_number_integer() &&
      in["rank"].get<std::int64_t>() < 0) {
    HS_THROW(core::Error, describe(in) + ": field 'rank' must not be negative");
  }
  if (parse_event_type(type)) {
    event_from_json(in);
    return;
  }
  get_number(in, "time");
  if (type == kJobEvent) {
    const int world_size = get_int32(in, "world_size");
    if (world_size < 1 || world_size > kMaxWorldSize) {
      HS_THROW(core::Error, describe(in) + ": field 'world_size' " + std::to_string(world_size) +
                                " is out of range (1 to " + std::to_string(kMaxWorldSize) + ")");
    }
    for (const char* key : {"model", "train", "rollout"}) require_object_if_present(in, key);
  } else if (type == kRankUpEvent) {
    get_int32(in, "rank");
    get_string(in, "host");
    get_int(in, "pid");
    get_string(in, "device");
  } else if (type == kRankDownEvent) {
    get_int32(in, "rank");
    get_string(in, "host");
    get_string(in, "reason");
    get_string(in, "phase");
  } else if (type == kJobEndEvent) {
    get_bool(in, "ok");
    get_string(in, "message");
    get_number(in, "seconds");
  } else {
    HS_THROW(core::Error, "event: unknown type '" + type + "'");
  }
  if (in.contains("iteration")) get_int32(in, "iteration");
}

json job_event_json(const JobConfig& job, double time) {
  const core::ModelSpec& spec = job.model.spec;
  const int rollout_tp = job.rollout.tp;
  return {
      {"type", kJobEvent},
      {"time", time},
      {"world_size", job.runtime.world_size},
      {"model",
       {
           {"architecture", std::string(core::architecture_name(spec.architecture))},
           {"num_hidden_layers", spec.num_hidden_layers},
           {"hidden_size", spec.hidden_size},
           {"num_attention_heads", spec.num_attention_heads},
           {"num_key_value_heads", spec.num_key_value_heads},
           {"intermediate_size", spec.intermediate_size},
           {"vocab_size", spec.vocab_size},
           {"tie_word_embeddings", spec.tie_word_embeddings},
           {"dtype", std::string(core::dtype_name(spec.dtype))},
       }},
      {"train", {{"tp", job.train.tp}, {"pp", job.train.pp}, {"vpp", job.train.vpp}, {"dp", job.train.dp}}},
      {"rollout", {{"tp", rollout_tp}, {"dp", rollout_tp > 0 ? job.rollout.world_size / rollout_tp : 0}}},
      {"backend", std::string(backend_name(job.runtime.backend))},
      {"strategy", std::string(core::strategy_name(job.runtime.strategy))},
      {"iterations", job.schedule.iterations},
      {"job_file", job.file},
  };
}

json rank_up_event_json(int rank, const std::string& host, long pid, const std::string& device, double time) {
  return {{"type", kRankUpEvent}, {"time", time}, {"rank", rank},    {"iteration", -1},
          {"host", host},         {"pid", pid},   {"device", device}};
}

json rank_down_event_json(int rank, const std::string& host, const std::string& reason, const std::string& phase,
                          double time) {
  return {{"type", kRankDownEvent}, {"time", time},     {"rank", rank},  {"iteration", -1},
          {"host", host},           {"reason", reason}, {"phase", phase}};
}

json job_end_event_json(bool ok, const std::string& message, double seconds, double time) {
  return {{"type", kJobEndEvent}, {"time", time}, {"ok", ok}, {"message", message}, {"seconds", seconds}};
}

std::string event_line(const json& event) {
  // Replace invalid UTF-8 rather than throwing: a buffer name or a detail must never lose the whole event.
  return event.dump(-1, ' ', false, json::error_handler_t::replace);
}

json parse_event_line(std::string_view line, long line_number) {
  const std::string where = line_number > 0 ? "line " + std::to_string(line_number) + ": " : "";
  json parsed = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    HS_THROW(core::Error,
             where + "not valid JSON: " + std::string(line.substr(0, 120)) + (line.size() > 120 ? "..." : ""));
  }
  if (!parsed.is_object()) {
    HS_THROW(core::Error, where + "expected a JSON object, got " + std::string(parsed.type_name()));
  }
  return parsed;
}

std::string error_message(const core::Error& error) {
  std::string text = error.what();
  const std::string prefix = error.file() + ":" + std::to_string(error.line()) + ": ";
  if (text.rfind(prefix, 0) == 0) text.erase(0, prefix.size());
  return text;
}

}  // namespace hybridshard::service
