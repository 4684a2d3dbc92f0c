// Reading the JSON of docs/record-format.md: the status document (GET /status) and the job object shared with the
// run record's `job` event.
#pragma once

#include <QByteArray>
#include <QJsonObject>
#include <QString>

#include "job_history.h"
#include "job_snapshot.h"

namespace hybridshard::gui {

struct StatusParseResult {
  bool ok = false;
  QString error;  // "status: ranks[2].buffers[0].residency: expected gpu, cpu or none, got \"disk\""
  // What the document says by itself (its series composed from its own samples, intervals and history): a whole
  // document's state; of an incremental one, only what changed (StatusMirror merges it).
  JobSnapshot snapshot;
  QString cursor;                   // "" from a service without cursors
  bool incremental = false;         // "since" present (docs/record-format.md, "Incremental status")
  bool has_job = false;             // the "job" object was present
  QSet<int> ranks_without_buffers;  // ranks listed without "buffers" (unchanged since the cursor)
  HistoryLimits limits;             // "kept"
  SeriesChanges series;             // memory, phases and history as the document lists them
};

// Parses a GET /status body, whole or incremental. Wrong JSON, a missing or mistyped required field, or an unknown
// residency make ok false with an error naming the key path; optional fields take their defaults.
StatusParseResult parse_status(const QByteArray& body);

// The `job` object (or the `job` event of a record): fills `info`, or returns false with `error` naming the key.
bool parse_job_info(const QJsonObject& object, JobInfo* info, QString* error);

}  // namespace hybridshard::gui
