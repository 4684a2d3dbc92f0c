// Reads samples back from Prometheus text output, for tests.
#pragma once

#include <map>
#include <optional>
#include <sstream>
#include <string>

namespace hybridshard::testing {

// The value of the one sample of metric `name` whose labels include all of `labels`; nullopt when none matches.
inline std::optional<double> sample_value(const std::string& text, const std::string& name,
                                          const std::map<std::string, std::string>& labels = {}) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool all = true;
    for (const auto& [key, value] : labels) {
      if (line.find(key + "=\"" + value + "\"") == std::string::npos) all = false;
    }
    if (!all) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

}  // namespace hybridshard::testing
