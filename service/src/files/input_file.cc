#include "hybridshard/service/files/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "hybridshard/service/files/output_file.h"

namespace hybridshard::service {
namespace {

std::string errno_problem(int error) {
  if (error == ENOENT) return "does not exist";
  if (error == ELOOP) return "is a symbolic link loop (too many levels of symbolic links)";
  if (error == ENOTDIR) return "does not exist (a part of the path is not a directory)";
  return std::string("cannot be opened: ") + std::strerror(error);
}

std::string not_regular(mode_t mode) {
  if (S_ISDIR(mode)) return "is a directory";
  return "is " + file_kind_name(mode) + ", not a regular file";
}

}  // namespace

int open_input_file(const std::filesystem::path& path, std::string& problem) {
  // Looked at before it is opened: opening a FIFO for reading waits for a writer.
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    problem = errno_problem(errno);
    return -1;
  }
  if (!S_ISREG(info.st_mode)) {
    problem = not_regular(info.st_mode);
    return -1;
  }
  // O_NONBLOCK: should it have become a FIFO since, the open does not wait; fstat then refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    problem = errno_problem(errno);
    return -1;
  }
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    problem = not_regular(info.st_mode);
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

std::optional<std::string> read_input_file(const std::filesystem::path& path, std::int64_t max_bytes,
                                           std::string& problem) {
  const int fd = open_input_file(path, problem);
  if (fd < 0) return std::nullopt;
  struct stat info {};
  std::optional<std::string> text;
  if (::fstat(fd, &info) != 0) {
    problem = std::string("cannot be read: ") + std::strerror(errno);
  } else if (info.st_size > max_bytes) {
    problem = "is larger than the " + std::to_string(max_bytes) + " bytes allowed (" + std::to_string(info.st_size) +
              " bytes)";
  } else {
    std::string content;
    char buffer[65536];
    while (true) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        problem = std::string("could not be read completely: ") + std::strerror(errno);
        break;
      }
      if (n == 0) {
        text = std::move(content);
        break;
      }
      content.append(buffer, static_cast<std::size_t>(n));
      if (static_cast<std::int64_t>(content.size()) > max_bytes) {  // it grew while being read
        problem = "is larger than the " + std::to_string(max_bytes) + " bytes allowed";
        break;
      }
    }
  }
  ::close(fd);
  return text;
}

}  // namespace hybridshard::service
