#include "units.h"

#include <array>
#include <cmath>

namespace hybridshard::gui {

namespace {

// `value` (>= 0) with three significant digits: "3.00", "12.3", "621".
QString three_digits(double value) {
  const int decimals = value < 10 ? 2 : (value < 100 ? 1 : 0);
  return QString::number(value, 'f', decimals);
}

// `value` rounded to three significant digits, as three_digits() prints it.
double rounded(double value) {
  const double scale = value < 10 ? 100 : (value < 100 ? 10 : 1);
  return std::round(value * scale) / scale;
}

// Scales `value` by `base` until it is below `base` (after rounding), at most to the last unit.
template <std::size_t N>
QString scaled(double value, double base, const std::array<const char*, N>& units) {
  std::size_t unit = 0;
  while (unit + 1 < N && rounded(value) >= base) {
    value /= base;
    ++unit;
  }
  return three_digits(value) + QLatin1Char(' ') + QLatin1String(units[unit]);
}

}  // namespace

QString format_bytes(std::int64_t bytes) {
  const double magnitude = std::abs(static_cast<double>(bytes));
  const QString sign = bytes < 0 ? QStringLiteral("\u2212") : QString();
  if (magnitude < 1024) return sign + QString::number(static_cast<qint64>(magnitude)) + QStringLiteral(" B");
  static constexpr std::array<const char*, 4> kUnits = {"KiB", "MiB", "GiB", "TiB"};
  return sign + scaled(magnitude / 1024, 1024, kUnits);
}

QString format_rate(double bytes_per_second) {
  if (!(bytes_per_second >= 0) || std::isinf(bytes_per_second)) return QStringLiteral("\u2014");
  if (rounded(bytes_per_second) < 1000)
    return QString::number(std::round(bytes_per_second), 'f', 0) + QStringLiteral(" B/s");
  static constexpr std::array<const char*, 4> kUnits = {"kB/s", "MB/s", "GB/s", "TB/s"};
  return scaled(bytes_per_second / 1000, 1000, kUnits);
}

QString format_duration(double seconds) {
  if (!(seconds >= 0) || std::isinf(seconds)) return QStringLiteral("\u2014");
  if (seconds == 0) return QStringLiteral("0 s");
  if (rounded(seconds * 1e6) < 1000) return three_digits(seconds * 1e6) + QStringLiteral(" \u00b5s");
  if (rounded(seconds * 1e3) < 1000) return three_digits(seconds * 1e3) + QStringLiteral(" ms");
  if (rounded(seconds) < 60) return three_digits(seconds) + QStringLiteral(" s");
  const qint64 whole = std::llround(seconds);
  if (whole < 3600) return QStringLiteral("%1 min %2 s").arg(whole / 60).arg(whole % 60, 2, 10, QLatin1Char('0'));
  const qint64 minutes = std::llround(seconds / 60);
  return QStringLiteral("%1 h %2 min").arg(minutes / 60).arg(minutes % 60, 2, 10, QLatin1Char('0'));
}

ByteUnit byte_unit_for(double largest_bytes) {
  static const std::array<const char*, 5> kUnits = {"B", "KiB", "MiB", "GiB", "TiB"};
  std::size_t unit = 0;
  double bytes = 1;
  while (unit + 1 < kUnits.size() && largest_bytes >= bytes * 1024) {
    bytes *= 1024;
    ++unit;
  }
  return ByteUnit{QLatin1String(kUnits[unit]), bytes};
}

TimeUnit time_unit_for(double span_seconds) {
  if (span_seconds <= 600) return TimeUnit{QStringLiteral("seconds"), 1};
  if (span_seconds <= 36000) return TimeUnit{QStringLiteral("minutes"), 60};
  return TimeUnit{QStringLiteral("hours"), 3600};
}

}  // namespace hybridshard::gui
