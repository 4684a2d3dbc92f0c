// RankResult <-> JSON (nlohmann::json), doubles as hexadecimal floating-point strings; the rank processes' files.
#include "detail/rank_result_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "hybridshard/core/error.h"
#include "hybridshard/service/files/input_file.h"
#include "hybridshard/service/files/output_file.h"

namespace hybridshard::service::bench::detail {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kFormat = "hybridshard-bench-rank-result";
constexpr std::int64_t kMaxResultBytes = std::int64_t{256} << 20;

// "%a": exact, and strtod reads it back to the same bits (infinities and NaN included).
std::string hex_double(double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%a", value);
  return text;
}

double parse_hex_double(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) {
    throw std::invalid_argument("'" + text + "' is not a floating-point number");
  }
  return value;
}

Json series_json(const Series& series) {
  Json seconds = Json::array();
  for (double value : series.seconds) seconds.push_back(hex_double(value));
  return Json{{"seconds", seconds},
              {"bytes", series.bytes},
              {"extra_bytes", series.extra_bytes},
              {"driver_bytes", series.driver_bytes},
              {"host_bytes", series.host_bytes},
              {"wrong", series.wrong},
              {"checked", series.checked},
              {"what", series.what}};
}

Series series_of(const Json& json) {
  Series series;
  for (const Json& value : json.at("seconds")) series.seconds.push_back(parse_hex_double(value.get<std::string>()));
  series.bytes = json.at("bytes").get<std::int64_t>();
  series.extra_bytes = json.at("extra_bytes").get<std::int64_t>();
  series.driver_bytes = json.at("driver_bytes").get<std::int64_t>();
  series.host_bytes = json.at("host_bytes").get<std::int64_t>();
  series.wrong = json.at("wrong").get<std::int64_t>();
  series.checked = json.at("checked").get<bool>();
  series.what = json.at("what").get<std::string>();
  return series;
}

Json series_map_json(const std::map<SeriesKey, Series>& map) {
  Json list = Json::array();
  for (const auto& [key, series] : map) {
    const auto& [first, second, third] = key;
    list.push_back(Json{{"key", {first, second, third}}, {"series", series_json(series)}});
  }
  return list;
}

std::map<SeriesKey, Series> series_map_of(const Json& list) {
  std::map<SeriesKey, Series> map;
  for (const Json& entry : list) {
    const Json& key = entry.at("key");
    if (key.size() != 3)
      throw std::invalid_argument("a series key has " + std::to_string(key.size()) + " parts, not 3");
    map[{key.at(0).get<std::string>(), key.at(1).get<std::string>(), key.at(2).get<std::string>()}] =
        series_of(entry.at("series"));
  }
  return map;
}

}  // namespace

std::string rank_result_text(const RankResult& result) {
  Json steps = Json::array();
  for (const auto& [key, step] : result.steps) {
    const auto& [strategy, phase, operation, path] = key;
    steps.push_back(Json{
        {"key", {strategy, phase, operation, path}}, {"seconds", hex_double(step.seconds)}, {"bytes", step.bytes}});
  }
  const Json json{{"format", kFormat},
                  {"version", kRankResultVersion},
                  {"device", result.device_description},
                  {"shard_bytes", result.shard_bytes},
                  {"d2h_bytes", result.d2h_bytes},
                  {"notes", result.notes},
                  {"phases", series_map_json(result.phases)},
                  {"bounds", series_map_json(result.bounds)},
                  {"steps", steps}};
  return json.dump(1) + "\n";
}

RankResult parse_rank_result(const std::string& text, const std::string& source) {
  try {
    const Json json = Json::parse(text);
    if (json.at("format").get<std::string>() != kFormat) {
      throw std::invalid_argument("format is '" + json.at("format").get<std::string>() + "', not " + kFormat);
    }
    const int version = json.at("version").get<int>();
    if (version != kRankResultVersion) {
      throw std::invalid_argument("version " + std::to_string(version) + ", this bench reads version " +
                                  std::to_string(kRankResultVersion));
    }
    RankResult result;
    result.device_description = json.at("device").get<std::string>();
    result.shard_bytes = json.at("shard_bytes").get<std::int64_t>();
    result.d2h_bytes = json.at("d2h_bytes").get<std::int64_t>();
    result.notes = json.at("notes").get<std::vector<std::string>>();
    result.phases = series_map_of(json.at("phases"));
    result.bounds = series_map_of(json.at("bounds"));
    for (const Json& entry : json.at("steps")) {
      const Json& key = entry.at("key");
      if (key.size() != 4)
        throw std::invalid_argument("a step key has " + std::to_string(key.size()) + " parts, not 4");
      StepTotal& step = result.steps[{key.at(0).get<std::string>(), key.at(1).get<std::string>(),
                                      key.at(2).get<std::string>(), key.at(3).get<std::string>()}];
      step.seconds = parse_hex_double(entry.at("seconds").get<std::string>());
      step.bytes = entry.at("bytes").get<std::int64_t>();
    }
    return result;
  } catch (const nlohmann::json::exception& error) {
    HS_THROW(core::Error, "rank result " + source + ": " + error.what());
  } catch (const std::invalid_argument& error) {
    HS_THROW(core::Error, "rank result " + source + ": " + error.what());
  }
}

RankFiles rank_files(const std::filesystem::path& directory, int rank) {
  const std::string name = "rank-" + std::to_string(rank);
  return {directory / "store", directory / (name + ".json"), directory / (name + ".error")};
}

void write_text_file(const std::filesystem::path& file, const std::string& text) {
  const std::filesystem::path partial = file.string() + ".partial";
  const int fd = create_exclusive(partial, 0600);
  if (fd < 0) HS_THROW(core::Error, "cannot create " + partial.string() + ": " + std::strerror(errno));
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      HS_THROW(core::Error, "cannot write " + partial.string() + ": " + reason);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) HS_THROW(core::Error, "cannot write " + partial.string() + ": " + std::strerror(errno));
  if (rename_file(partial, file, false) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(partial.c_str());
    HS_THROW(core::Error, "cannot rename " + partial.string() + " to " + file.string() + ": " + reason);
  }
}

std::string read_text_file(const std::filesystem::path& file) {
  std::string problem;
  std::optional<std::string> text = read_input_file(file, kMaxResultBytes, problem);
  if (!text) HS_THROW(core::Error, file.string() + " " + problem);
  return std::move(*text);
}

}  // namespace hybridshard::service::bench::detail
