// Compares two job snapshots field by field; the first difference, named, or "" when they agree. For the tests that
// hold one way of building a snapshot to another (an incremental poll to the whole document, a replay to the fold).
#pragma once

#include <QString>

#include "job_snapshot.h"

namespace hybridshard::gui::testing {

inline QString first_difference(const JobSnapshot& a, const JobSnapshot& b) {
  if (a.state != b.state || a.message != b.message) return QStringLiteral("state/message");
  if (a.time != b.time || a.started != b.started || a.iteration != b.iteration) return QStringLiteral("time/iteration");
  if (a.job.known != b.job.known || a.job.world_size != b.job.world_size) return QStringLiteral("job");
  if (a.ranks.size() != b.ranks.size())
    return QStringLiteral("ranks: %1 vs %2").arg(a.ranks.size()).arg(b.ranks.size());
  for (int r = 0; r < a.ranks.size(); ++r) {
    const RankState& x = a.ranks[r];
    const RankState& y = b.ranks[r];
    const QString where = QStringLiteral("rank %1: ").arg(x.rank);
    if (x.rank != y.rank || x.up != y.up || x.host != y.host || x.pid != y.pid || x.device != y.device)
      return where + QStringLiteral("identity");
    if (x.phase != y.phase || x.phase_since != y.phase_since || x.iteration != y.iteration)
      return where + QStringLiteral("phase");
    if (x.device_used != y.device_used || x.device_total != y.device_total || x.tracked != y.tracked)
      return where + QStringLiteral("memory");
    if (x.buffers.size() != y.buffers.size()) return where + QStringLiteral("buffers");
    for (int k = 0; k < x.buffers.size(); ++k) {
      const BufferState& p = x.buffers[k];
      const BufferState& q = y.buffers[k];
      if (p.name != q.name || p.bytes != q.bytes || p.residency != q.residency || p.since != q.since)
        return where + QStringLiteral("buffer ") + p.name;
    }
  }
  if (a.memory.size() != b.memory.size())
    return QStringLiteral("memory samples: %1 vs %2").arg(a.memory.size()).arg(b.memory.size());
  for (int m = 0; m < a.memory.size(); ++m) {
    const MemorySample& x = a.memory[m];
    const MemorySample& y = b.memory[m];
    if (x.time != y.time || x.rank != y.rank || x.device_used != y.device_used || x.tracked != y.tracked ||
        x.device_total != y.device_total || x.by_kind != y.by_kind || x.coarse != y.coarse)
      return QStringLiteral("memory[%1] (rank %2, time %3, coarse %4)")
          .arg(m)
          .arg(x.rank)
          .arg(x.time, 0, 'f', 3)
          .arg(x.coarse);
  }
  if (a.phases.size() != b.phases.size())
    return QStringLiteral("phases: %1 vs %2").arg(a.phases.size()).arg(b.phases.size());
  for (int p = 0; p < a.phases.size(); ++p) {
    const PhaseInterval& x = a.phases[p];
    const PhaseInterval& y = b.phases[p];
    // Phase shares are sums of seconds: the same sums in the same order on both sides, but through JSON text.
    if (x.rank != y.rank || x.phase != y.phase || x.iteration != y.iteration || x.coarse != y.coarse ||
        std::abs(x.begin - y.begin) > 1e-6 || std::abs(x.end - y.end) > 1e-6)
      return QStringLiteral("phases[%1] (rank %2, %3 at %4)").arg(p).arg(x.rank).arg(x.phase).arg(x.begin, 0, 'f', 3);
  }
  return {};
}

}  // namespace hybridshard::gui::testing
