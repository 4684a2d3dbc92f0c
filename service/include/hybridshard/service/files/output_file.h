// Files the service writes under a name the operator gave (the run record): only regular files, created exclusively
// (never an existing file, never through a planted symbolic link) and renamed into place without replacing what is
// not theirs to replace.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace hybridshard::service {

// A file type in words: "a directory", "a FIFO", "a character device", "a block device", "a socket", "a symbolic
// link", "a regular file".
std::string file_kind_name(mode_t mode);

// Why `path` cannot name a regular file the service is about to write ("" when it can), as a phrase after the path:
// a directory, device, FIFO or socket is never written ("is a FIFO, not a regular file"); an existing regular file or
// symbolic link only when `replace` ("exists"); a missing parent directory is "is in a directory that does not exist".
std::string output_path_problem(const std::filesystem::path& path, bool replace);

// Creates `path` for writing (O_CREAT | O_EXCL | O_NOFOLLOW, close-on-exec): fails with EEXIST when anything exists
// there, a link included. Returns the descriptor or -1 with errno set.
int create_exclusive(const std::filesystem::path& path, mode_t mode);

// Renames `from` to `to`. Without `replace` it fails with EEXIST when `to` exists (RENAME_NOREPLACE; link + unlink
// where the file system lacks it). Returns 0, or -1 with errno set.
int rename_file(const std::filesystem::path& from, const std::filesystem::path& to, bool replace);

// Renames `from` to `base`, else `base.2`, `base.3`, ...: the first name where nothing exists. Returns the name it
// took, or "" with errno set.
std::filesystem::path rename_to_free_name(const std::filesystem::path& from, const std::filesystem::path& base);

}  // namespace hybridshard::service
