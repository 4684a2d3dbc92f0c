// Internals shared by the safetensors reader and the checkpoint directory checks: the same checks, but returning every
// problem as text (without the C++ source position core::Error adds) so that `validate` can list them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/service/checkpoint/safetensors.h"

namespace hybridshard::service::detail {

// Parses a header; appends problems (each starting with `file_name`) and returns the tensors when there were none.
std::vector<SafetensorsTensor> check_safetensors_header(std::string_view header_json, std::int64_t data_bytes,
                                                        const std::string& file_name,
                                                        std::map<std::string, std::string>* metadata,
                                                        std::vector<std::string>& problems);

// Opens a file and checks its header; nullopt (and problems) when it cannot be used.
std::optional<SafetensorsFile> try_open_safetensors(const std::filesystem::path& path,
                                                    std::vector<std::string>& problems);

// Reads a whole small text file (config.json, index.json) of at most `max_bytes`; nullopt and a problem otherwise.
std::optional<std::string> read_small_file(const std::filesystem::path& path, std::int64_t max_bytes,
                                           std::vector<std::string>& problems);

// Throws core::ConfigError listing the problems (one per line).
[[noreturn]] void throw_problems(const std::vector<std::string>& problems);

}  // namespace hybridshard::service::detail
