// The dashboard's data layer: a GET /status body (parse_status) and a run record (RunRecord::load_from_data, then the
// state at its start, middle and end). Either ok/loaded, or an error that says what; never a crash.
#include <QByteArray>
#include <QString>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "run_record.h"
#include "status_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace hybridshard::gui;
  const QByteArray bytes = QByteArray::fromRawData(reinterpret_cast<const char*>(data), static_cast<qsizetype>(size));

  const StatusParseResult status = parse_status(bytes);
  if (!status.ok && status.error.isEmpty()) std::abort();

  RunRecord record;
  QString error;
  if (!record.load_from_data(bytes, QStringLiteral("fuzz.jsonl"), &error)) {
    if (error.isEmpty()) std::abort();
    return 0;
  }
  if (record.empty()) return 0;
  RecordPlayer player(&record);
  player.seek(record.end_time());
  player.seek(record.begin_time());
  player.seek((record.begin_time() + record.end_time()) / 2);
  (void)snapshot_at(record, record.end_time());
  return 0;
}
