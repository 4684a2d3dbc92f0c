// Files the service reads (job files, config.json, safetensors shards): only regular files. A FIFO, a device, a
// socket or a directory is refused before it is opened for reading, so that nothing blocks on it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace hybridshard::service {

// Opens `path` for reading when it is a regular file (symbolic links followed). Returns the descriptor (close-on-exec,
// blocking), or -1 with `problem` saying why as a phrase that follows "it": "does not exist", "is a FIFO, not a
// regular file", "is a symbolic link loop (too many levels of symbolic links)", "cannot be opened: Permission denied".
int open_input_file(const std::filesystem::path& path, std::string& problem);

// The whole of a regular file of at most `max_bytes`; nullopt with `problem` (as above, or "is larger than the M bytes
// allowed (N bytes)", "could not be read completely: ...") otherwise.
std::optional<std::string> read_input_file(const std::filesystem::path& path, std::int64_t max_bytes,
                                           std::string& problem);

}  // namespace hybridshard::service
