// Quantities as an operator reads them, the same everywhere in the dashboard: bytes in binary units (B, KiB … TiB),
// rates in decimal units (B/s, kB/s, MB/s, GB/s; 1 GB = 10^9 B, as nccl-tests and docs/performance.md count), and
// durations in µs, ms, s, min, h. Three significant digits, so "621 KiB at 1.24 GB/s" and "412 ms" rather than
// "0.0 GB/s" and "(0.0 s)".
#pragma once

#include <QString>
#include <cstdint>

namespace hybridshard::gui {

QString format_bytes(std::int64_t bytes);      // "17 B", "3.00 KiB", "621 KiB", "12.5 GiB"
QString format_rate(double bytes_per_second);  // "512 B/s", "3.40 kB/s", "621 MB/s", "29.1 GB/s"; "—" if < 0
QString format_duration(double seconds);  // "850 µs", "12.3 ms", "4.20 s", "3 min 20 s", "2 h 05 min"; "—" if < 0

// A binary byte unit for an axis whose values reach `largest_bytes`: the unit's name and its size in bytes.
struct ByteUnit {
  QString name;  // "B", "KiB", "MiB", "GiB", "TiB"
  double bytes = 1;
};
ByteUnit byte_unit_for(double largest_bytes);

// A time unit for an axis that spans `span_seconds`: seconds up to 10 min, minutes up to 10 h, then hours.
struct TimeUnit {
  QString name;  // "seconds", "minutes", "hours"
  double seconds = 1;
};
TimeUnit time_unit_for(double span_seconds);

}  // namespace hybridshard::gui
