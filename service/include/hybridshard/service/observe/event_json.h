// Events as JSON: the one vocabulary of the event stream (ranks -> launcher), the run record and the status endpoint.
// docs/record-format.md is the contract; this file implements it.
//
// Engine events (core::Event) convert both ways. Launcher-level events (job, rank_up, rank_down, job_end) exist only
// as JSON and are built here. Every event object has "type" and "time"; every event of a rank has "rank" and
// "iteration".
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"

namespace hybridshard::service {

struct JobConfig;

// The launcher-level event types (not core::EventType values).
inline constexpr std::string_view kJobEvent = "job";
inline constexpr std::string_view kRankUpEvent = "rank_up";
inline constexpr std::string_view kRankDownEvent = "rank_down";
inline constexpr std::string_view kJobEndEvent = "job_end";

// A job event's world_size must lie in [1, kMaxWorldSize]: state is kept for every rank index.
inline constexpr int kMaxWorldSize = 1 << 16;

// The core event type named `name` ("residency", "memory", ...), or nullopt (launcher-level or unknown types).
std::optional<core::EventType> parse_event_type(std::string_view name);

// The JSON object of an engine event: the common fields plus those of its type only (docs/record-format.md).
// A check event's name ("rollout_reference", "shard") travels in Event::operation.
nlohmann::json event_to_json(const core::Event& event);

// The inverse of event_to_json. Throws core::Error naming the field when a field is missing or has the wrong type,
// or when the type is not an engine event type.
core::Event event_from_json(const nlohmann::json& json);

// Checks that `json` is a well-formed event of any type (engine or launcher level): an object with a known "type",
// a numeric "time" and the fields its type requires, with the right JSON types, a rank >= 0 and a world_size in
// range. Throws core::Error naming the field.
void validate_event_json(const nlohmann::json& json);

// Launcher-level events.
nlohmann::json job_event_json(const JobConfig& job, double time);
nlohmann::json rank_up_event_json(int rank, const std::string& host, long pid, const std::string& device, double time);
// `phase` is the phase the rank was last seen in ("" when unknown).
nlohmann::json rank_down_event_json(int rank, const std::string& host, const std::string& reason,
                                    const std::string& phase, double time);
nlohmann::json job_end_event_json(bool ok, const std::string& message, double seconds, double time);

// One line of the event stream / run record: compact JSON, no newline.
std::string event_line(const nlohmann::json& event);

// Parses one line; throws core::Error("line N: ...") when it is not a JSON object. `line_number` (> 0) only names
// the place in the message.
nlohmann::json parse_event_line(std::string_view line, long line_number = 0);

// The message of `error` without its "file:line: " prefix, to wrap it in a message that names a place in the input.
std::string error_message(const core::Error& error);

}  // namespace hybridshard::service
