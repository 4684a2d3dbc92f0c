#include "hybridshard/service/observe/record.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/event_json.h"
#include "hybridshard/service/files/output_file.h"

namespace hybridshard::service {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

RecordWriter::RecordWriter(std::string path, RecordOptions options) : path_(std::move(path)), options_(options) {
  if (path_.empty()) HS_THROW(core::Error, "record: empty file name");
  if (const std::string problem = output_path_problem(path_, options_.replace); !problem.empty()) {
    HS_THROW(core::Error,
             "record: " + path_ + " " + problem +
                 (problem.starts_with("exists") ? ": the record of an earlier run; --force replaces it" : ""));
  }
  const std::string partial = partial_path();
  fd_ = create_exclusive(partial, 0644);
  if (fd_ < 0 && errno == EEXIST) {
    take_stale_partial();
    fd_ = create_exclusive(partial, 0644);
  }
  if (fd_ < 0) HS_THROW(core::Error, "record: cannot create " + partial + ": " + errno_text());
  // Held while this run writes: the next run tells a live .partial from one left by a run that died.
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string why = errno_text();
    ::close(fd_);
    ::unlink(partial.c_str());
    fd_ = -1;
    HS_THROW(core::Error, "record: cannot lock " + partial + ": " + why);
  }
}

// A .partial is there already: refused when a live run holds it (or it is not a regular file); else it is the record
// of a run that died, moved aside to <path>.incomplete.
void RecordWriter::take_stale_partial() {
  const std::string partial = partial_path();
  const int fd = ::open(partial.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  struct stat info {};
  if (fd < 0 || ::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    const std::string why = fd < 0 ? errno_text() : "not a regular file";
    if (fd >= 0) ::close(fd);
    HS_THROW(core::Error, "record: " + partial + " is in the way (" + why + "); move it away");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    HS_THROW(core::Error, "record: " + partial +
                              " is being written by a run that is still going; give this run another record name");
  }
  const std::filesystem::path moved = rename_to_free_name(partial, path_ + ".incomplete");
  const std::string why = errno_text();
  ::close(fd);
  if (moved.empty()) {
    HS_THROW(core::Error, "record: " + partial + " was left by a run that did not finish and cannot be moved to " +
                              path_ + ".incomplete: " + why);
  }
  stale_moved_to_ = moved.string();
}

RecordWriter::~RecordWriter() {
  try {
    close();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hybridshard: %s\n", error.what());
  }
}

void RecordWriter::write(const JobEvent& event) { write(event_to_json(event)); }

void RecordWriter::write(const nlohmann::json& event) {
  std::string line = event_line(event);
  line.push_back('\n');
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) HS_THROW(core::Error, "record: " + path_ + " is closed");
  if (!failure_.empty()) return;
  const char* data = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      failure_ = "writing line " + std::to_string(lines_ + 1) + " of " + partial_path() + " failed: " + errno_text();
      return;
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  ++lines_;
}

std::string RecordWriter::failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_;
}

void RecordWriter::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 && failure_.empty()) failure_ = "fsync of " + partial_path() + " failed: " + errno_text();
  // Renamed while still locked: no other run takes it for stale meanwhile.
  if (failure_.empty() && rename_file(partial_path(), path_, options_.replace) != 0) {
    failure_ = "renaming " + partial_path() + " to " + path_ + " failed: " + errno_text() +
               (errno == EEXIST ? " (something was put there while the job ran)" : "");
  }
  if (failure_.empty()) {
    if (::close(fd) != 0) HS_THROW(core::Error, "record: closing " + path_ + " failed: " + errno_text());
    return;
  }
  const std::filesystem::path kept = rename_to_free_name(partial_path(), path_ + ".incomplete");
  ::close(fd);
  HS_THROW(core::Error, "record: " + path_ + " is incomplete: " + failure_ + "; what was written is kept in " +
                            (kept.empty() ? partial_path() : kept.string()));
}

std::int64_t RecordWriter::lines_written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lines_;
}

RecordReader RecordReader::open(const std::string& path, RecordReadOptions options) {
  auto file = std::make_unique<std::ifstream>(path, std::ios::binary);
  if (!*file) HS_THROW(core::Error, "record: cannot open " + path + ": " + errno_text());
  RecordReader reader(*file, path, options);
  reader.owned_ = std::move(file);
  return reader;
}

RecordReader::RecordReader(std::istream& in, std::string name, RecordReadOptions options)
    : in_(&in), name_(std::move(name)), options_(options) {}

std::vector<nlohmann::json> RecordReader::read_all() {
  std::vector<nlohmann::json> events;
  std::string line;
  long number = 0;
  truncated_line_ = 0;
  complete_ = false;
  while (std::getline(*in_, line)) {
    ++number;
    const bool has_newline = !in_->eof();
    try {
      if (line.empty()) HS_THROW(core::Error, "line " + std::to_string(number) + ": empty line");
      nlohmann::json event = parse_event_line(line, number);
      if (!event.contains("type") || !event["type"].is_string()) {
        HS_THROW(core::Error, "line " + std::to_string(number) + ": event without a \"type\" string");
      }
      events.push_back(std::move(event));
    } catch (const core::Error& error) {
      if (!has_newline && options_.accept_truncated_last_line) {
        truncated_line_ = number;
        break;
      }
      HS_THROW(core::Error, name_ + ": " + error_message(error));
    }
  }
  if (in_->bad()) HS_THROW(core::Error, "record: reading " + name_ + " failed after line " + std::to_string(number));
  complete_ = !events.empty() && events.back()["type"] == kJobEndEvent;
  return events;
}

}  // namespace hybridshard::service
