#include "hybridshard/service/config/units.h"

#include <array>
#include <cstdio>
#include <limits>
#include <utility>

namespace hybridshard::service {
namespace {

__extension__ typedef unsigned __int128 Uint128;

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

void set_why(std::string* why, std::string message) {
  if (why != nullptr) *why = std::move(message);
}

// A non-negative decimal number "123", "1_000", "1.25" as an exact fraction numerator / 10^decimals.
struct Decimal {
  Uint128 numerator = 0;
  int decimals = 0;
};

// Parses the leading number of `text`; returns the rest (the unit) in `rest`.
std::optional<Decimal> parse_decimal(std::string_view text, std::string_view& rest, std::string* why) {
  Decimal value;
  std::size_t i = 0;
  bool any_digit = false;
  bool in_fraction = false;
  const Uint128 limit = Uint128{1} << 100;  // far above any int64 result; stops growth long before 128 bits
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c >= '0' && c <= '9') {
      value.numerator = value.numerator * 10 + static_cast<unsigned>(c - '0');
      if (value.numerator > limit) {
        set_why(why, "the number is far too large");
        return std::nullopt;
      }
      if (in_fraction) ++value.decimals;
      if (value.decimals > 18) {
        set_why(why, "too many decimals");
        return std::nullopt;
      }
      any_digit = true;
    } else if (c == '_' && any_digit && i + 1 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '9') {
      continue;
    } else if (c == '.' && !in_fraction && any_digit) {
      in_fraction = true;
    } else {
      break;
    }
  }
  if (!any_digit) {
    set_why(why, "expected a number");
    return std::nullopt;
  }
  rest = trim(text.substr(i));
  return value;
}

Uint128 pow10(int exponent) {
  Uint128 result = 1;
  for (int k = 0; k < exponent; ++k) result *= 10;
  return result;
}

}  // namespace

std::optional<std::int64_t> parse_byte_size(std::string_view text, std::string* why) {
  text = trim(text);
  if (!text.empty() && text.front() == '-') {
    set_why(why, "a size cannot be negative");
    return std::nullopt;
  }
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  std::string_view unit;
  const auto number = parse_decimal(text, unit, why);
  if (!number) return std::nullopt;
  static constexpr std::array<std::pair<std::string_view, std::int64_t>, 11> kUnits{{
      {"", 1},
      {"B", 1},
      {"KiB", std::int64_t{1} << 10},
      {"MiB", std::int64_t{1} << 20},
      {"GiB", std::int64_t{1} << 30},
      {"TiB", std::int64_t{1} << 40},
      {"KB", 1'000},
      {"kB", 1'000},
      {"MB", 1'000'000},
      {"GB", 1'000'000'000},
      {"TB", 1'000'000'000'000},
  }};
  std::int64_t multiplier = 0;
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) multiplier = factor;
  }
  if (multiplier == 0) {
    set_why(why, "unknown unit '" + std::string(unit) + "'; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB");
    return std::nullopt;
  }
  const Uint128 scaled = number->numerator * static_cast<Uint128>(multiplier);
  const Uint128 divisor = pow10(number->decimals);
  if (scaled % divisor != 0) {
    set_why(why, "'" + std::string(text) + "' is not a whole number of bytes");
    return std::nullopt;
  }
  const Uint128 bytes = scaled / divisor;
  if (bytes > static_cast<Uint128>(std::numeric_limits<std::int64_t>::max())) {
    set_why(why, "'" + std::string(text) + "' is larger than 2^63-1 bytes");
    return std::nullopt;
  }
  return static_cast<std::int64_t>(bytes);
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* why) {
  text = trim(text);
  if (!text.empty() && text.front() == '-') {
    set_why(why, "a duration cannot be negative");
    return std::nullopt;
  }
  std::string_view unit;
  const auto number = parse_decimal(text, unit, why);
  if (!number) return std::nullopt;
  std::int64_t milliseconds_per_unit = 0;
  if (unit.empty() || unit == "s") {
    milliseconds_per_unit = 1000;
  } else if (unit == "ms") {
    milliseconds_per_unit = 1;
  } else if (unit == "m" || unit == "min") {
    milliseconds_per_unit = 60'000;
  } else if (unit == "h") {
    milliseconds_per_unit = 3'600'000;
  } else {
    set_why(why, "unknown unit '" + std::string(unit) + "'; use ms, s, m or h (\"30s\")");
    return std::nullopt;
  }
  const Uint128 scaled = number->numerator * static_cast<Uint128>(milliseconds_per_unit);
  const Uint128 milliseconds = scaled / pow10(number->decimals);
  if (milliseconds > static_cast<Uint128>(std::numeric_limits<std::int64_t>::max() / 1000)) {
    set_why(why, "'" + std::string(text) + "' is far too long");
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(milliseconds));
}

std::string format_bytes(std::int64_t bytes) {
  static constexpr std::array<std::string_view, 5> kNames{"B", "KiB", "MiB", "GiB", "TiB"};
  const bool negative = bytes < 0;
  // -2^63 has no positive counterpart; show it through the double below.
  double value = negative ? -static_cast<double>(bytes) : static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kNames.size()) {
    value /= 1024.0;
    ++unit;
  }
  char text[64];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%s%.0f B", negative ? "-" : "", value);
  } else {
    std::snprintf(text, sizeof text, "%s%.2f %s", negative ? "-" : "", value, std::string(kNames[unit]).c_str());
  }
  return text;
}

}  // namespace hybridshard::service
