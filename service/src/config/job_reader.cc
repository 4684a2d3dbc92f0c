// JobReader: diagnostics at the value's place, mappings of known keys, and typed values.
#include "job_reader.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <utility>

#include "config_text.h"
#include "hybridshard/service/config/units.h"

namespace hybridshard::service::detail {
namespace {

// Whole numbers as YAML 1.2 writes them, with optional '_' separators: "-12", "200_000_000".
enum class IntParse { kOk, kNotInteger, kOverflow };
IntParse parse_integer(std::string_view text, std::int64_t& value) {
  std::string digits;
  bool negative = false;
  std::size_t i = 0;
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else if (c == '_' && !digits.empty() && i + 1 < text.size()) {
      continue;
    } else {
      return IntParse::kNotInteger;
    }
  }
  if (digits.empty()) return IntParse::kNotInteger;
  std::uint64_t magnitude = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), magnitude);
  if (error == std::errc::result_out_of_range) return IntParse::kOverflow;
  if (error != std::errc() || end != digits.data() + digits.size()) return IntParse::kNotInteger;
  const auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (magnitude > limit + (negative ? 1u : 0u)) return IntParse::kOverflow;
  value = negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
  return IntParse::kOk;
}

}  // namespace

std::string describe(const YamlNode& node) {
  switch (node.kind) {
    case YamlNode::Kind::kNull:
      return "nothing";
    case YamlNode::Kind::kSequence:
      return "a list";
    case YamlNode::Kind::kMap:
      return "a mapping";
    case YamlNode::Kind::kScalar:
      break;
  }
  std::string text = node.scalar.size() > 40 ? node.scalar.substr(0, 40) + "..." : node.scalar;
  return node.plain ? "'" + text + "'" : "the quoted text \"" + text + "\"";
}

std::string join_key(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

// ---- diagnostics --------------------------------------------------------------------------------------------------

void JobReader::add(int line, int column, std::string key, std::string message, Severity severity) {
  diagnostics_.push_back({file_, line, column, std::move(key), std::move(message), severity});
}

void JobReader::error(const YamlNode& at, const std::string& key, std::string message) {
  add(at.line, at.column, key, std::move(message));
  failed_.insert(key);
}

void JobReader::warning(const YamlNode& at, const std::string& key, std::string message) {
  add(at.key_line > 0 ? at.key_line : at.line, at.key_line > 0 ? at.key_column : at.column, key, std::move(message),
      Severity::kWarning);
}

void JobReader::remember(const std::string& canonical, const YamlNode& node, const std::string& spelled) {
  job_.positions[canonical] = SourcePosition{node.line, node.column, spelled};
}

void JobReader::unknown_key(const YamlNode& node, const std::string& path, const std::vector<std::string_view>& known) {
  const std::string key = join_key(path, node.key);
  std::string message = "unknown key '" + node.key + "'";
  if (const std::string near = closest_word(node.key, known); !near.empty()) {
    message += "; did you mean '" + near + "'?";
  } else {
    message += "; known keys" + std::string(path.empty() ? "" : " of '" + path + "'") + ": " + join_words(known, "and");
  }
  add(node.key_line, node.key_column, key, message);
  failed_.insert(key);
}

void JobReader::section(const YamlNode& node, const std::string& path, const std::vector<std::string_view>& keys,
                        const std::function<void(const YamlNode&, const std::string&)>& read,
                        const std::vector<std::string_view>& also_accepted) {
  if (node.kind == YamlNode::Kind::kNull) return;  // "memory:" alone: every default
  if (node.kind != YamlNode::Kind::kMap) {
    error(node, path, "expected a mapping of keys (" + join_words(keys, "and") + "), got " + describe(node));
    return;
  }
  const auto known = [&](const std::string& key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end() ||
           std::find(also_accepted.begin(), also_accepted.end(), key) != also_accepted.end();
  };
  for (const YamlNode& child : node.children) {
    if (!known(child.key)) {
      unknown_key(child, path, keys);
      continue;
    }
    const std::string key = join_key(path, child.key);
    remember(key, child, key);
    read(child, key);
  }
}

bool JobReader::alias_given(const std::string& canonical, const YamlNode& node, const std::string& spelled,
                            const std::string& value_text) {
  auto [it, first] = aliased_.emplace(canonical, Given{node.line, spelled, value_text});
  if (first) {
    remember(canonical, node, spelled);
    return true;
  }
  if (it->second.value_text == value_text) return true;
  error(node, spelled,
        value_text + " conflicts with " + it->second.spelled + " " + it->second.value_text + " (line " +
            std::to_string(it->second.line) + "); give one of them");
  mark_failed(canonical);
  return false;
}

// ---- typed values -------------------------------------------------------------------------------------------------

bool JobReader::scalar(const YamlNode& node, const std::string& key, const char* expected) {
  if (node.kind == YamlNode::Kind::kScalar) return true;
  error(node, key, std::string("expected ") + expected + ", got " + describe(node));
  return false;
}

std::optional<std::int64_t> JobReader::integer(const YamlNode& node, const std::string& key, std::int64_t min,
                                               std::int64_t max) {
  if (!scalar(node, key, "a whole number")) return std::nullopt;
  std::int64_t value = 0;
  const IntParse parsed = node.plain ? parse_integer(node.scalar, value) : IntParse::kNotInteger;
  if (parsed == IntParse::kOverflow) {
    error(node, key, node.scalar + " is too large; at most " + std::to_string(max));
    return std::nullopt;
  }
  if (parsed != IntParse::kOk) {
    error(node, key, "expected a whole number, got " + describe(node));
    return std::nullopt;
  }
  if (value < min || value > max) {
    error(node, key,
          std::to_string(value) + (value < min ? " is too small; at least " + std::to_string(min)
                                               : " is too large; at most " + std::to_string(max)));
    return std::nullopt;
  }
  return value;
}

std::optional<int> JobReader::small_integer(const YamlNode& node, const std::string& key, int min, int max) {
  auto value = integer(node, key, min, max);
  if (!value) return std::nullopt;
  return static_cast<int>(*value);
}

std::optional<double> JobReader::real(const YamlNode& node, const std::string& key, double min, double max,
                                      bool min_exclusive) {
  if (!scalar(node, key, "a number")) return std::nullopt;
  const std::string& text = node.scalar;
  char* end = nullptr;
  errno = 0;
  const double value = node.plain && !text.empty() ? std::strtod(text.c_str(), &end) : 0.0;
  const bool whole = node.plain && !text.empty() && end == text.c_str() + text.size();
  const bool hex = text.find_first_of("xXnN") != std::string::npos;  // no hex floats, no nan/inf
  if (!whole || hex || !std::isfinite(value)) {
    error(node, key, "expected a number, got " + describe(node));
    return std::nullopt;
  }
  const bool too_small = min_exclusive ? !(value > min) : !(value >= min);
  if (too_small || value > max) {
    std::ostringstream message;
    message << text << " is out of range; use a number " << (min_exclusive ? "above " : "from ") << min
            << (min_exclusive ? " up to " : " to ") << max;
    error(node, key, message.str());
    return std::nullopt;
  }
  return value;
}

std::optional<bool> JobReader::boolean(const YamlNode& node, const std::string& key) {
  if (!scalar(node, key, "true or false")) return std::nullopt;
  if (node.plain) {
    const std::string& text = node.scalar;
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
  }
  error(node, key, "expected true or false, got " + describe(node));
  return std::nullopt;
}

std::optional<std::string> JobReader::text(const YamlNode& node, const std::string& key) {
  if (node.kind == YamlNode::Kind::kNull) {
    error(node, key, "no value given; write \"\" for an empty text");
    return std::nullopt;
  }
  if (!scalar(node, key, "a text")) return std::nullopt;
  return node.scalar;
}

std::optional<std::string> JobReader::choice(const YamlNode& node, const std::string& key,
                                             const std::vector<std::string_view>& choices) {
  auto value = text(node, key);
  if (!value) return std::nullopt;
  if (std::find(choices.begin(), choices.end(), *value) != choices.end()) return value;
  std::string message = "'" + *value + "' is not one of " + join_words(choices, "or");
  if (const std::string near = closest_word(*value, choices); !near.empty()) {
    message += "; did you mean '" + near + "'?";
  }
  error(node, key, message);
  return std::nullopt;
}

std::optional<std::int64_t> JobReader::byte_size(const YamlNode& node, const std::string& key, std::int64_t min,
                                                 std::int64_t max) {
  if (!scalar(node, key, "a size such as 256MiB")) return std::nullopt;
  std::string why;
  const auto value = parse_byte_size(node.scalar, &why);
  if (!value) {
    error(node, key, "expected a size such as 4096, 256MiB or 80GB: " + why);
    return std::nullopt;
  }
  if (*value < min || *value > max) {
    error(node, key,
          node.scalar + (*value < min ? " is too small; at least " + format_bytes(min)
                                      : " is too large; at most " + format_bytes(max)));
    return std::nullopt;
  }
  return value;
}

std::optional<std::chrono::milliseconds> JobReader::duration(const YamlNode& node, const std::string& key) {
  if (!scalar(node, key, "a duration such as 30s")) return std::nullopt;
  std::string why;
  const auto value = parse_duration(node.scalar, &why);
  if (!value) {
    error(node, key, "expected a duration such as 30s, 500ms or 2m: " + why);
    return std::nullopt;
  }
  if (value->count() < 1 || *value > std::chrono::hours(24)) {
    error(node, key, node.scalar + " is out of range; use 1ms to 24h");
    return std::nullopt;
  }
  return value;
}

}  // namespace hybridshard::service::detail
