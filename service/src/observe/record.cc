#include "hybridshard/service/observe/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "hybridshard/core/error.h"
#include "hybridshard/service/events/event_json.h"

namespace hybridshard::service {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

RecordWriter::RecordWriter(std::string path) : path_(std::move(path)) {
  if (path_.empty()) HS_THROW(core::Error, "record: empty file name");
  const std::string partial = partial_path();
  fd_ = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    if (errno == EEXIST) {
      HS_THROW(core::Error, "record: " + partial +
                                " already exists: it is the record of a run that did not finish; move it away or "
                                "delete it");
    }
    HS_THROW(core::Error, "record: cannot create " + partial + ": " + errno_text());
  }
}

RecordWriter::~RecordWriter() {
  try {
    close();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hybridshard: record: %s\n", error.what());
  }
}

void RecordWriter::write(const JobEvent& event) { write(event_to_json(event)); }

void RecordWriter::write(const nlohmann::json& event) {
  std::string line = event_line(event);
  line.push_back('\n');
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) HS_THROW(core::Error, "record: " + path_ + " is closed");
  const char* data = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      HS_THROW(core::Error, "record: writing line " + std::to_string(lines_ + 1) + " of " + partial_path() +
                                " failed: " + errno_text());
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  ++lines_;
}

void RecordWriter::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) return;
  int fd = fd_;
  fd_ = -1;
  bool synced = ::fsync(fd) == 0;
  std::string sync_error = synced ? "" : errno_text();
  if (::close(fd) != 0 && synced) {
    HS_THROW(core::Error, "record: closing " + partial_path() + " failed: " + errno_text());
  }
  if (!synced) HS_THROW(core::Error, "record: fsync of " + partial_path() + " failed: " + sync_error);
  if (std::rename(partial_path().c_str(), path_.c_str()) != 0) {
    HS_THROW(core::Error, "record: renaming " + partial_path() + " to " + path_ + " failed: " + errno_text());
  }
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
