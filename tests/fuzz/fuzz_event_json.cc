// Event lines and run records (docs/record-format.md), as the launcher, serve and the observer read them: each line is
// decoded once (decode_event_line); an event that decodes converts back to JSON that decodes again; the events feed
// a JobState (the fold) whose status document is then built; and the whole input read as a record (RecordReader,
// truncated last line accepted) ends in events or a core::Error. Only core::Error may be thrown, and only where the
// header promises it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

#include "fuzz_io.h"
#include "hybridshard/core/error.h"
#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/events/job_event.h"
#include "hybridshard/service/observe/job_state.h"
#include "hybridshard/service/observe/record.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace hybridshard;
  using namespace hybridshard::service;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  JobStateLimits limits;
  limits.memory_samples_per_rank = 8;
  limits.phases_per_rank = 8;
  JobState state(limits);
  long line_number = 0;
  for (std::string_view line : fuzz::split_parts(bytes, "\n")) {
    ++line_number;
    JobEvent event;
    try {
      event = decode_event_line(line, line_number);
    } catch (const core::Error&) {
      continue;
    }
    decode_event(event_to_json(event));  // valid: must convert back to JSON that decodes again
    try {
      state.apply(event);
    } catch (const core::Error&) {
      // A valid event can still contradict the state (a rank beyond the job's world): refused, state unchanged.
    }
  }
  const std::string status = state.status_json().dump();
  if (status.empty()) std::abort();

  std::istringstream in{std::string(bytes)};
  RecordReadOptions options;
  options.accept_truncated_last_line = true;
  RecordReader reader(in, "fuzz.jsonl", options);
  try {
    for (const nlohmann::json& event : reader.read_all()) {
      if (!event.is_object()) std::abort();
    }
  } catch (const core::Error& error) {
    if (std::string_view(error.what()).find("fuzz.jsonl") == std::string_view::npos) std::abort();
  }
  return 0;
}
