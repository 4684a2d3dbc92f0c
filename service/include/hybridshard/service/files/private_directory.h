// A directory only this user can enter (mkdtemp: a fresh name, mode 0700), removed with everything in it when the
// owner goes out of scope. The rendezvous store of the processes of one host lives in one (core::StoreOptions::file):
// the directory's permissions, not a port, decide who may join.
#pragma once

#include <filesystem>
#include <string>

namespace hybridshard::service {

class PrivateDirectory {
 public:
  // Creates `$TMPDIR/hybridshard-<purpose>-XXXXXX` (/tmp without TMPDIR). Throws std::runtime_error naming the folder
  // and the system's reason when it cannot.
  explicit PrivateDirectory(const std::string& purpose);
  ~PrivateDirectory();
  PrivateDirectory(const PrivateDirectory&) = delete;
  PrivateDirectory& operator=(const PrivateDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The rendezvous store's file in this directory (core::StoreOptions::file, StoreAddress::file).
  std::string store_file() const { return (path_ / "store").string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace hybridshard::service
