#include "hybridshard/service/files/output_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hybridshard::service {

std::string file_kind_name(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

std::string output_path_problem(const std::filesystem::path& path, bool replace) {
  if (path.empty()) return "is an empty file name";
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    if (errno != ENOENT) return std::string("cannot be looked at: ") + std::strerror(errno);
    const std::filesystem::path parent = path.parent_path().empty() ? "." : path.parent_path();
    struct stat parent_info {};
    if (::stat(parent.c_str(), &parent_info) != 0 || !S_ISDIR(parent_info.st_mode)) {
      return "is in a directory that does not exist (" + parent.string() + ")";
    }
    return "";
  }
  if (S_ISLNK(info.st_mode)) {
    // Renaming over a link replaces the link, not what it points to; still, it exists.
    struct stat target {};
    if (::stat(path.c_str(), &target) == 0 && !S_ISREG(target.st_mode)) {
      return "is a symbolic link to " + file_kind_name(target.st_mode) + ", not a regular file";
    }
    return replace ? "" : "exists (a symbolic link)";
  }
  if (S_ISDIR(info.st_mode)) return "is a directory; name a file";
  if (!S_ISREG(info.st_mode)) return "is " + file_kind_name(info.st_mode) + ", not a regular file";
  return replace ? "" : "exists";
}

int create_exclusive(const std::filesystem::path& path, mode_t mode) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, mode);
}

int rename_file(const std::filesystem::path& from, const std::filesystem::path& to, bool replace) {
  if (replace) return ::rename(from.c_str(), to.c_str());
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  // No RENAME_NOREPLACE here: link(2) fails when the name exists.
  if (::link(from.c_str(), to.c_str()) != 0) return -1;
  ::unlink(from.c_str());
  return 0;
}

std::filesystem::path rename_to_free_name(const std::filesystem::path& from, const std::filesystem::path& base) {
  for (int counter = 1; counter <= 1000; ++counter) {
    const std::filesystem::path name =
        counter == 1 ? base : std::filesystem::path(base.string() + "." + std::to_string(counter));
    if (rename_file(from, name, false) == 0) return name;
    if (errno != EEXIST) return {};
  }
  errno = EEXIST;
  return {};
}

}  // namespace hybridshard::service
