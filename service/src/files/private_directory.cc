#include "hybridshard/service/files/private_directory.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace hybridshard::service {

PrivateDirectory::PrivateDirectory(const std::string& purpose) {
  const char* tmpdir = std::getenv("TMPDIR");
  const std::filesystem::path parent = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
  std::string name = (parent / ("hybridshard-" + purpose + "-XXXXXX")).string();
  if (::mkdtemp(name.data()) == nullptr) {
    throw std::runtime_error("cannot create a private directory for the " + purpose + " in " + parent.string() + ": " +
                             std::strerror(errno));
  }
  path_ = name;
}

PrivateDirectory::~PrivateDirectory() {
  std::error_code ignored;  // best effort: a destructor must not throw; what is left is named hybridshard-<purpose>-*
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace hybridshard::service
