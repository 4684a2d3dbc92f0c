// Job events as JSON: the one wire and record form (docs/record-format.md is the contract; this file implements it).
// A line is decoded and validated once, where it enters the process (decode_event_line), into a JobEvent; everything
// after reads the typed value. Every event object has "type" and "time"; every event of a rank has "rank" and
// "iteration".
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "hybridshard/core/error.h"
#include "hybridshard/core/events.h"
#include "hybridshard/service/events/job_event.h"

namespace hybridshard::service {

// The type names of the events that are not engine events.
inline constexpr std::string_view kJobEvent = "job";
inline constexpr std::string_view kRankUpEvent = "rank_up";
inline constexpr std::string_view kRankDownEvent = "rank_down";
inline constexpr std::string_view kJobEndEvent = "job_end";
inline constexpr std::string_view kHeartbeatEvent = "heartbeat";

// The core event type named `name` ("residency", "memory", ...), or nullopt (job-level or unknown types).
std::optional<core::EventType> parse_event_type(std::string_view name);

// The JSON object of an engine event: the common fields plus those of its type only. A check event's name
// ("rollout_reference", "shard") travels in Event::operation.
nlohmann::json event_to_json(const core::Event& event);
// The inverse of event_to_json. Throws core::Error naming the field when a field is missing or has the wrong type,
// or when the type is not an engine event type.
core::Event event_from_json(const nlohmann::json& json);

// The JSON object of any job event (with by_kind on a memory sample that has it).
nlohmann::json event_to_json(const JobEvent& event);
// Decodes and validates an event of any type: an object with a known "type", a numeric "time" and the fields its
// type requires with the right JSON types, a rank >= 0 and a world_size in range. Throws core::Error naming the field.
JobEvent decode_event(const nlohmann::json& json);
// Parses and decodes one line of the event stream or a record. Throws core::Error ("line N: ..." when line_number
// > 0) when it is not JSON, not an object or not a valid event.
JobEvent decode_event_line(std::string_view line, long line_number = 0);

// One line of the event stream / run record: compact JSON, no newline.
std::string event_line(const nlohmann::json& event);
std::string event_line(const JobEvent& event);

// Parses one line; throws core::Error("line N: ...") when it is not a JSON object. `line_number` (> 0) only names
// the place in the message.
nlohmann::json parse_event_line(std::string_view line, long line_number = 0);

// The message of `error` without its "file:line: " prefix, to wrap it in a message that names a place in the input.
std::string error_message(const core::Error& error);

}  // namespace hybridshard::service
