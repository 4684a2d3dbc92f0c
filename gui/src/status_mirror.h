// The dashboard's copy of a job's state polled from GET /status: the first answer is a whole document, later ones
// only what changed since the cursor of the one before (docs/record-format.md, "Incremental status"). Merging an
// incremental answer gives the snapshot the whole document of that moment would give (tests/gui/
// tst_incrementalstatus.cpp checks it against the service's own documents).
#pragma once

#include <QString>

#include "job_history.h"
#include "job_snapshot.h"
#include "status_json.h"

namespace hybridshard::gui {

class StatusMirror {
 public:
  // A whole document replaces everything; an incremental one is merged into what is held. An incremental answer
  // with nothing held yet (it cannot be: the first poll has no cursor) is taken as it is.
  void apply(StatusParseResult parsed);
  void clear();

  const JobSnapshot& snapshot() const { return snapshot_; }
  const JobHistory& history() const { return history_; }
  // The cursor to poll with next ("" before the first answer, or from a service without cursors).
  const QString& cursor() const { return cursor_; }

 private:
  JobSnapshot snapshot_;
  JobHistory history_;
  QString cursor_;
};

}  // namespace hybridshard::gui
