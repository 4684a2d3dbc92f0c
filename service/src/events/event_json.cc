#include "hybridshard/service/events/event_json.h"

#include <array>

#include "hybridshard/core/error.h"

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
      out["cached"] = event.cached;
      out["cached_host"] = event.cached_host;
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
      // Records written before the cached kind (issue 18) have neither: nothing was counted as cached then.
      event.cached = in.contains("cached") ? get_int(in, "cached") : 0;
      event.cached_host = in.contains("cached_host") ? get_int(in, "cached_host") : 0;
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

namespace {

int get_rank(const json& in) {
  const int rank = get_int32(in, "rank");
  if (rank < 0) HS_THROW(core::Error, describe(in) + ": field 'rank' must not be negative");
  return rank;
}

int get_optional_iteration(const json& in) { return in.contains("iteration") ? get_int32(in, "iteration") : -1; }

BytesByKind get_by_kind(const json& in) {
  BytesByKind by_kind;
  for (const auto& [kind, bytes] : in["by_kind"].items()) {
    if (!bytes.is_number_integer() || bytes.get<std::int64_t>() < 0) {
      HS_THROW(core::Error,
               describe(in) + ": field 'by_kind." + kind + "' must be an integer >= 0, got " + bytes.dump());
    }
    by_kind[kind] = bytes.get<std::int64_t>();
  }
  return by_kind;
}

}  // namespace

JobEvent decode_event(const json& in) {
  if (!in.is_object()) HS_THROW(core::Error, "event: expected a JSON object, got " + std::string(in.type_name()));
  const std::string type = get_string(in, "type");
  JobEvent event;
  if (parse_event_type(type)) {
    if (in.contains("rank") && in["rank"].is_number_integer() && in["rank"].get<std::int64_t>() < 0) {
      HS_THROW(core::Error, describe(in) + ": field 'rank' must not be negative");
    }
    event.engine = event_from_json(in);
    if (event.engine.type == core::EventType::kMemorySample && in.contains("by_kind")) event.by_kind = get_by_kind(in);
    return event;
  }
  event.engine.time = get_number(in, "time");
  if (type == kJobEvent) {
    event.type = JobEventType::kJob;
    event.world_size = get_int32(in, "world_size");
    if (event.world_size < 1 || event.world_size > kMaxWorldSize) {
      HS_THROW(core::Error, describe(in) + ": field 'world_size' " + std::to_string(event.world_size) +
                                " is out of range (1 to " + std::to_string(kMaxWorldSize) + ")");
    }
    for (const char* key : {"model", "train", "rollout"}) require_object_if_present(in, key);
    event.description = in;
    event.description.erase("type");
    event.description.erase("time");
  } else if (type == kRankUpEvent) {
    event.type = JobEventType::kRankUp;
    event.engine.rank = get_rank(in);
    event.engine.iteration = get_optional_iteration(in);
    event.host = get_string(in, "host");
    event.pid = static_cast<long>(get_int(in, "pid"));
    event.device = get_string(in, "device");
  } else if (type == kRankDownEvent) {
    event.type = JobEventType::kRankDown;
    event.engine.rank = get_rank(in);
    event.engine.iteration = get_optional_iteration(in);
    event.host = get_string(in, "host");
    event.reason = get_string(in, "reason");
    event.phase = get_string(in, "phase");
  } else if (type == kJobEndEvent) {
    event.type = JobEventType::kJobEnd;
    event.ok = get_bool(in, "ok");
    event.message = get_string(in, "message");
    event.seconds = get_number(in, "seconds");
  } else if (type == kHeartbeatEvent) {
    event.type = JobEventType::kHeartbeat;
    event.engine.rank = get_rank(in);
  } else {
    HS_THROW(core::Error, "event: unknown type '" + type + "'");
  }
  return event;
}

JobEvent decode_event_line(std::string_view line, long line_number) {
  const json parsed = parse_event_line(line, line_number);
  try {
    return decode_event(parsed);
  } catch (const core::Error& error) {
    if (line_number <= 0) throw;
    HS_THROW(core::Error, "line " + std::to_string(line_number) + ": " + error_message(error));
  }
}

json event_to_json(const JobEvent& event) {
  switch (event.type) {
    case JobEventType::kEngine: {
      json out = event_to_json(event.engine);
      if (event.by_kind) out["by_kind"] = *event.by_kind;
      return out;
    }
    case JobEventType::kJob: {
      json out = event.description.is_object() ? event.description : json::object();
      out["type"] = kJobEvent;
      out["time"] = event.time();
      out["world_size"] = event.world_size;
      return out;
    }
    case JobEventType::kRankUp:
      return {{"type", kRankUpEvent}, {"time", event.time()}, {"rank", event.rank()},  {"iteration", event.iteration()},
              {"host", event.host},   {"pid", event.pid},     {"device", event.device}};
    case JobEventType::kRankDown:
      return {
          {"type", kRankDownEvent}, {"time", event.time()},   {"rank", event.rank()}, {"iteration", event.iteration()},
          {"host", event.host},     {"reason", event.reason}, {"phase", event.phase}};
    case JobEventType::kJobEnd:
      return {{"type", kJobEndEvent},
              {"time", event.time()},
              {"ok", event.ok},
              {"message", event.message},
              {"seconds", event.seconds}};
    case JobEventType::kHeartbeat:
      return {{"type", kHeartbeatEvent}, {"rank", event.rank()}, {"time", event.time()}};
  }
  return json::object();
}

std::string event_line(const json& event) {
  // Replace invalid UTF-8 rather than throwing: a buffer name or a detail must never lose the whole event.
  return event.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string event_line(const JobEvent& event) { return event_line(event_to_json(event)); }

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
