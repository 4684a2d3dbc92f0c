// A rank's RankResult as text: how a rank process (RankMode::kProcess) hands what it measured to the bench that
// started it. JSON with a format name and version; every double as a hexadecimal floating-point string ("%a"), so
// that the parent combines exactly the times the rank measured.
#pragma once

#include <filesystem>
#include <string>

#include "detail/measure.h"

namespace hybridshard::service::bench::detail {

inline constexpr int kRankResultVersion = 1;

std::string rank_result_text(const RankResult& result);
// Throws core::Error naming `source` and what is wrong (a key missing or of the wrong type, a version not this one).
RankResult parse_rank_result(const std::string& text, const std::string& source);

// The files of a rank process in the parent's private directory: the store the ranks meet in, and per rank its
// result (written when it finished) or its error (the message of what failed).
struct RankFiles {
  std::filesystem::path store;
  std::filesystem::path result;
  std::filesystem::path error;
};
RankFiles rank_files(const std::filesystem::path& directory, int rank);

// Writes `text` to `file` (which must not exist) under a temporary name first, then renames it: a reader never sees
// half a file. Throws core::Error naming the file.
void write_text_file(const std::filesystem::path& file, const std::string& text);
// The whole file; throws core::Error naming the file when it cannot be read.
std::string read_text_file(const std::filesystem::path& file);

}  // namespace hybridshard::service::bench::detail
