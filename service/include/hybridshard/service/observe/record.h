// The run record: every event of a run as JSON lines (docs/record-format.md), enough for the dashboard to replay it.
//
// Crash safety. RecordWriter writes to "<path>.partial" and renames it to <path> on close(). Each line goes to the
// kernel in one write(2) as soon as it is written (no user-space buffer), so a crash of the process loses at most the
// line being written. What a reader sees:
//   - <path> exists: the run closed its record; every line is complete (the last is usually job_end).
//   - only <path>.partial exists: the run died (or is still running). Every line but possibly the last is complete;
//     the last may be cut short. RecordReader reports such a cut line (truncated_last_line()) when told to accept it,
//     and fails otherwise. The job_end line is then missing, which is how the dashboard tells a crash.
//   - <path>.incomplete (or .incomplete.2, ...): a record that could not be written completely (a write or the final
//     flush failed: a full disk, a file size limit), or the .partial of a run that died, moved aside by the next run.
// Only regular files are written: a directory, device, FIFO or socket at <path> is refused when the writer starts,
// and an existing record unless RecordOptions::replace. The .partial is created exclusively (never through a link)
// and locked (flock) while its run writes it: a .partial nobody holds is stale and is moved to <path>.incomplete; one
// that is held belongs to a live run and is refused.
#pragma once

#include <cstdint>
#include <istream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hybridshard/service/events/job_event.h"

namespace hybridshard::service {

struct RecordOptions {
  // Replace an existing record (a regular file or a link) at the path when closing (`--force`). A directory, device,
  // FIFO or socket is never replaced.
  bool replace = false;
};

class RecordWriter {
 public:
  // Checks the path and opens "<path>.partial"; throws core::Error naming the file when it cannot: the path is not a
  // regular file, an existing record (without options.replace), or its .partial is held by a live run.
  explicit RecordWriter(std::string path, RecordOptions options = {});
  ~RecordWriter();  // close(), errors swallowed: call close() to see them
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  // One JSON object per line. Thread-safe; throws core::Error after close(). A failed write does not throw (the
  // job's events keep flowing): failure() says what failed, and the lines after it are dropped.
  void write(const nlohmann::json& event);
  void write(const JobEvent& event);

  // "" while every line reached the file; else what failed first ("writing line 12 of run.jsonl.partial failed:
  // File too large").
  std::string failure() const;

  // Flushes to disk (fsync) and renames "<path>.partial" to <path>. When a write, the flush or the rename failed, the
  // file goes to <path>.incomplete (the first free name) instead and close() throws core::Error saying so and where
  // it is. Idempotent.
  void close();

  const std::string& path() const { return path_; }
  std::string partial_path() const { return path_ + ".partial"; }
  std::int64_t lines_written() const;
  // Where a stale .partial found at the start was moved ("" when there was none).
  const std::string& stale_partial_moved_to() const { return stale_moved_to_; }

 private:
  void take_stale_partial();

  std::string path_;
  RecordOptions options_;
  std::string stale_moved_to_;
  mutable std::mutex mutex_;
  int fd_ = -1;
  std::int64_t lines_ = 0;
  std::string failure_;
};

struct RecordReadOptions {
  // Accept a last line without its newline that is not valid JSON (a record whose writer crashed mid-line): it is
  // not returned, and truncated_last_line() says so. Any other malformed line is still an error.
  bool accept_truncated_last_line = false;
};

// Reads a record (or any stream of event lines). Skips nothing silently: a malformed line, an empty line or an
// object without "type" is a core::Error naming the file and line number.
class RecordReader {
 public:
  static RecordReader open(const std::string& path, RecordReadOptions options = {});
  RecordReader(std::istream& in, std::string name, RecordReadOptions options = {});

  // Every event, in order. Throws core::Error("FILE:LINE: ...").
  std::vector<nlohmann::json> read_all();

  // 1-based number of the truncated line that was dropped, 0 if none (only with accept_truncated_last_line).
  long truncated_last_line() const { return truncated_line_; }
  // True when the last event read was job_end.
  bool complete() const { return complete_; }

 private:
  std::unique_ptr<std::istream> owned_;
  std::istream* in_;
  std::string name_;
  RecordReadOptions options_;
  long truncated_line_ = 0;
  bool complete_ = false;
};

}  // namespace hybridshard::service
