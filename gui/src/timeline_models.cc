#include "timeline_models.h"

#include <algorithm>
#include <vector>

namespace hybridshard::gui {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace

void MemorySeriesModel::set_snapshot(const JobSnapshot& snapshot) {
  snapshot_ = snapshot;
  snapshot_.ranks.clear();
  snapshot_.phases.clear();
  rebuild();
}

void MemorySeriesModel::set_ranks(const QVector<int>& ranks) {
  ranks_ = ranks;
  std::sort(ranks_.begin(), ranks_.end());
  rebuild();
}

void MemorySeriesModel::rebuild() {
  beginResetModel();
  rows_.clear();
  const double origin = snapshot_.origin();
  now_ = snapshot_.time - origin;
  const QStringList& kinds = buffer_kinds();
  // Each selected rank's latest sample in bytes, and their running sum: a new sample replaces its rank's part of the
  // sum, so that a row costs O(kinds) and not O(selected ranks) (512 ranks summed stay cheap).
  using Bytes = std::array<std::int64_t, kColumnCount>;
  auto bytes_of = [&](const MemorySample& sample) {
    Bytes bytes{};
    // A sample holds a few kinds: walking them beats hashing every kind's name (the hash was most of the time).
    for (auto it = sample.by_kind.cbegin(); it != sample.by_kind.cend(); ++it) {
      const qsizetype kind = kinds.indexOf(it.key());
      if (kind >= 0 && kFirstKind + kind < kTracked) bytes[kFirstKind + kind] = it.value();
    }
    bytes[kTracked] = sample.tracked;
    bytes[kCached] = sample.cached;
    bytes[kUntracked] = std::max<std::int64_t>(0, sample.device_used - sample.tracked - sample.cached);
    bytes[kDeviceUsed] = sample.device_used;
    bytes[kDeviceTotal] = sample.device_total;
    return bytes;
  };
  // A sample's slot among the selected ranks, or -1.
  auto slot_of = [&](int rank) {
    const auto it = std::lower_bound(ranks_.cbegin(), ranks_.cend(), rank);
    return it != ranks_.cend() && *it == rank ? static_cast<int>(it - ranks_.cbegin()) : -1;
  };
  // Rows start once every selected rank that has samples has reported, so that a sum never lacks a rank.
  std::vector<char> has_samples(ranks_.size(), 0), reported(ranks_.size(), 0);
  int reporting = 0, reported_count = 0;
  for (const MemorySample& sample : std::as_const(snapshot_.memory)) {
    const int slot = slot_of(sample.rank);
    if (slot >= 0 && !has_samples[slot]) {
      has_samples[slot] = 1;
      ++reporting;
    }
  }
  std::vector<Bytes> latest(ranks_.size(), Bytes{});
  Bytes sum{};
  bool changed = false;
  for (int index = 0; index < snapshot_.memory.size(); ++index) {
    const MemorySample& sample = snapshot_.memory[index];
    if (const int slot = slot_of(sample.rank); slot >= 0) {
      const Bytes bytes = bytes_of(sample);
      for (int column = kFirstKind; column < kColumnCount; ++column)
        sum[column] += bytes[column] - latest[slot][column];
      latest[slot] = bytes;
      if (!reported[slot]) {
        reported[slot] = 1;
        ++reported_count;
      }
      changed = true;
    }
    // Samples of several ranks at the same time make one row (the last of that time, selected or not, ends it).
    const bool more_at_same_time =
        index + 1 < snapshot_.memory.size() && snapshot_.memory[index + 1].time == sample.time;
    if (!changed || more_at_same_time || reported_count < reporting) continue;
    std::array<double, kColumnCount> row{};
    row[kTime] = sample.time - origin;
    for (int column = kFirstKind; column < kColumnCount; ++column)
      row[column] = static_cast<double>(sum[column]) / kGiB;
    rows_.push_back(row);
    changed = false;
  }
  endResetModel();
}

int MemorySeriesModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : rows_.size(); }

int MemorySeriesModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : kColumnCount; }

QVariant MemorySeriesModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  if (role != Qt::DisplayRole && role != Qt::EditRole) return {};
  return rows_[index.row()][index.column()];
}

QVariant MemorySeriesModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
    return QAbstractTableModel::headerData(section, orientation, role);
  if (section == kTime) return QStringLiteral("Time (s)");
  if (section >= kFirstKind && section < kTracked) return buffer_kind_label(buffer_kinds().value(section - kFirstKind));
  switch (section) {
    case kTracked:
      return QStringLiteral("Tracked (GiB)");
    case kCached:
      return QStringLiteral("Cached (GiB)");
    case kUntracked:
      return QStringLiteral("Untracked (GiB)");
    case kDeviceUsed:
      return QStringLiteral("Device used (GiB)");
    case kDeviceTotal:
      return QStringLiteral("Capacity (GiB)");
    default:
      return {};
  }
}

void PhaseIntervalModel::set_snapshot(const JobSnapshot& snapshot) {
  snapshot_ = snapshot;
  snapshot_.ranks.clear();
  snapshot_.memory.clear();
  rebuild();
}

void PhaseIntervalModel::set_ranks(const QVector<int>& ranks) {
  ranks_ = ranks;
  std::sort(ranks_.begin(), ranks_.end());
  rebuild();
}

void PhaseIntervalModel::rebuild() {
  beginResetModel();
  rows_.clear();
  const double origin = snapshot_.origin();
  for (const PhaseInterval& phase : std::as_const(snapshot_.phases)) {
    if (!std::binary_search(ranks_.begin(), ranks_.end(), phase.rank)) continue;
    PhaseInterval row = phase;
    row.begin = phase.begin - origin;
    row.end = (phase.end >= 0 ? phase.end : snapshot_.time) - origin;
    rows_.push_back(row);
  }
  endResetModel();
}

int PhaseIntervalModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : rows_.size(); }

int PhaseIntervalModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : kColumnCount; }

QVariant PhaseIntervalModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  if (role != Qt::DisplayRole) return {};
  const PhaseInterval& row = rows_[index.row()];
  switch (index.column()) {
    case kRank:
      return row.rank;
    case kIteration:
      return row.iteration;
    case kPhase:
      return row.phase;
    case kBegin:
      return row.begin;
    case kEnd:
      return row.end;
    default:
      return {};
  }
}

QVariant PhaseIntervalModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
    return QAbstractTableModel::headerData(section, orientation, role);
  static const char* const kNames[] = {"Rank", "Iteration", "Phase", "Begin (s)", "End (s)"};
  return section >= 0 && section < kColumnCount ? QVariant(QString::fromLatin1(kNames[section])) : QVariant();
}

}  // namespace hybridshard::gui
