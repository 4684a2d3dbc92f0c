// Reading the JSON of docs/record-format.md: the status document (GET /status) and the job object shared with the
// run record's `job` event.
#pragma once

#include <QByteArray>
#include <QJsonObject>
#include <QString>

#include "job_snapshot.h"

namespace hybridshard::gui {

struct StatusParseResult {
  bool ok = false;
  QString error;  // "status: ranks[2].buffers[0].residency: expected gpu, cpu or none, got \"disk\""
  JobSnapshot snapshot;
};

// Parses a whole GET /status body. Wrong JSON, a missing or mistyped required field, or an unknown residency make
// ok false with an error naming the key path; optional fields take their defaults.
StatusParseResult parse_status(const QByteArray& body);

// The `job` object (or the `job` event of a record): fills `info`, or returns false with `error` naming the key.
bool parse_job_info(const QJsonObject& object, JobInfo* info, QString* error);

}  // namespace hybridshard::gui
