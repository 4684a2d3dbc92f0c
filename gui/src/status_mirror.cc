#include "status_mirror.h"

#include <algorithm>

namespace hybridshard::gui {

void StatusMirror::clear() {
  snapshot_ = JobSnapshot();
  history_ = JobHistory();
  cursor_.clear();
}

void StatusMirror::apply(StatusParseResult parsed) {
  cursor_ = parsed.cursor;
  if (!parsed.incremental) {
    history_ = JobHistory(parsed.limits);
    history_.apply(parsed.series);
    snapshot_ = std::move(parsed.snapshot);
    return;
  }
  const JobSnapshot& changes = parsed.snapshot;
  if (parsed.has_job) snapshot_.job = changes.job;
  snapshot_.state = changes.state;
  snapshot_.message = changes.message;
  snapshot_.time = changes.time;
  snapshot_.started = changes.started;
  snapshot_.iteration = changes.iteration;
  for (const RankState& changed : changes.ranks) {
    auto it = std::lower_bound(snapshot_.ranks.begin(), snapshot_.ranks.end(), changed.rank,
                               [](const RankState& held, int rank) { return held.rank < rank; });
    if (it == snapshot_.ranks.end() || it->rank != changed.rank) it = snapshot_.ranks.insert(it, RankState{});
    QVector<BufferState> buffers = std::move(it->buffers);
    *it = changed;
    if (parsed.ranks_without_buffers.contains(changed.rank)) it->buffers = std::move(buffers);
  }
  history_.apply(parsed.series);
  history_.compose(&snapshot_.memory, &snapshot_.phases);
}

}  // namespace hybridshard::gui
