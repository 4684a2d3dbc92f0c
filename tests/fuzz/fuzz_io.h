// Files for fuzz targets whose reader takes a path: a private directory per process (on /dev/shm when there is one),
// removed at exit.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace hybridshard::fuzz {

class ScratchDirectory {
 public:
  ScratchDirectory() {
    const std::filesystem::path base = std::filesystem::is_directory("/dev/shm")
                                           ? std::filesystem::path("/dev/shm")
                                           : std::filesystem::temp_directory_path();
    path_ = base / ("hybridshard-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Empties the directory (the previous input's files must not leak into this one).
  void clear() const {
    for (const auto& entry : std::filesystem::directory_iterator(path_)) std::filesystem::remove_all(entry.path());
  }

  std::filesystem::path write(const std::string& name, std::string_view bytes) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) std::abort();
    return file;
  }

 private:
  std::filesystem::path path_;
};

// Splits `data` at each occurrence of `separator`.
inline std::vector<std::string_view> split_parts(std::string_view data, std::string_view separator) {
  std::vector<std::string_view> parts;
  std::size_t begin = 0;
  while (true) {
    const std::size_t at = data.find(separator, begin);
    if (at == std::string_view::npos) {
      parts.push_back(data.substr(begin));
      return parts;
    }
    parts.push_back(data.substr(begin, at - begin));
    begin = at + separator.size();
  }
}

}  // namespace hybridshard::fuzz
