// The units job files and command lines are written in: byte sizes ("256MiB", "80GB", "4096") and durations ("30s",
// "500ms", "2m"). Parsers return nullopt and say why, never throw.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hybridshard::service {

// A whole number of bytes: digits (with optional '_' separators and a fractional part) and an optional unit:
// B, KiB, MiB, GiB, TiB (powers of 1024), KB, MB, GB, TB (powers of 1000). "1.5GiB" is fine when it comes out whole.
// Sets `why` ("unknown unit 'Mib'; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB", "larger than 2^63-1 bytes") on
// failure. Negative sizes are refused.
std::optional<std::int64_t> parse_byte_size(std::string_view text, std::string* why = nullptr);

// A duration: a number and a unit: ms, s, m, h ("30s", "1.5s", "500ms"); a bare number means seconds.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* why = nullptr);

// "1.50 GiB", "256.00 MiB", "512 B": for tables and messages.
std::string format_bytes(std::int64_t bytes);

}  // namespace hybridshard::service
