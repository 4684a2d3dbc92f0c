// What the readers of a job file's sections share: the job being filled in, the diagnostics found so far, the keys
// whose values failed to read, and the typed value readers (each reports its own problem at the value's place).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "hybridshard/service/config/job_config.h"
#include "yaml_document.h"

namespace hybridshard::service::detail {

class JobReader {
 public:
  JobReader(std::string file, JobConfig& job) : file_(std::move(file)), job_(job) { job_.file = file_; }

  JobConfig& job() { return job_; }
  const std::string& file() const { return file_; }
  std::vector<Diagnostic>& diagnostics() { return diagnostics_; }
  const std::set<std::string>& failed() const { return failed_; }

  // ---- diagnostics ----
  void add(int line, int column, std::string key, std::string message, Severity severity = Severity::kError);
  // An error at `at` about `key`; the key's value is not read (its default stands in and is not checked further).
  void error(const YamlNode& at, const std::string& key, std::string message);
  void warning(const YamlNode& at, const std::string& key, std::string message);
  void mark_failed(const std::string& key) { failed_.insert(key); }
  // Where the value of `canonical` was written, and the key as spelled there (an alias, say).
  void remember(const std::string& canonical, const YamlNode& node, const std::string& spelled);
  void unknown_key(const YamlNode& node, const std::string& path, const std::vector<std::string_view>& known);

  // Calls `read(value_node, key_path)` for every known key of the mapping `node` (`keys`, and `also_accepted`: old
  // names and aliases, read but never suggested); reports the unknown ones.
  void section(const YamlNode& node, const std::string& path, const std::vector<std::string_view>& keys,
               const std::function<void(const YamlNode&, const std::string&)>& read,
               const std::vector<std::string_view>& also_accepted = {});
  // A key under an alias or old name (`spelled`, as written): its value is `canonical`'s, given once. Records where
  // it was written; false (reported) when `canonical` was given before with another value.
  bool alias_given(const std::string& canonical, const YamlNode& node, const std::string& spelled,
                   const std::string& value_text);

  // ---- typed values: nullopt after reporting the problem ----
  bool scalar(const YamlNode& node, const std::string& key, const char* expected);
  std::optional<std::int64_t> integer(const YamlNode& node, const std::string& key, std::int64_t min, std::int64_t max);
  std::optional<int> small_integer(const YamlNode& node, const std::string& key, int min, int max);
  // A real number in [min, max] (or (min, max] with `min_exclusive`).
  std::optional<double> real(const YamlNode& node, const std::string& key, double min, double max, bool min_exclusive);
  std::optional<bool> boolean(const YamlNode& node, const std::string& key);
  std::optional<std::string> text(const YamlNode& node, const std::string& key);
  // One of `choices`; suggests the closest.
  std::optional<std::string> choice(const YamlNode& node, const std::string& key,
                                    const std::vector<std::string_view>& choices);
  std::optional<std::int64_t> byte_size(const YamlNode& node, const std::string& key, std::int64_t min,
                                        std::int64_t max);
  // A duration from 1ms to 24h ("30s", "500ms", "2m").
  std::optional<std::chrono::milliseconds> duration(const YamlNode& node, const std::string& key);

 private:
  std::string file_;
  JobConfig& job_;
  std::vector<Diagnostic> diagnostics_;
  std::set<std::string> failed_;
  struct Given {
    int line = 0;
    std::string spelled;
    std::string value_text;
  };
  std::map<std::string, Given> aliased_;  // canonical key -> where and how it was first given
};

// "'two'", "a list", "the quoted text \"4\"": what a value is, for messages.
std::string describe(const YamlNode& node);

// "model.num_layers" from "model" and "num_layers".
std::string join_key(const std::string& path, std::string_view key);

// The `model` section (read last: the checkpoint check wants a clean file first). Relative checkpoint paths are
// relative to `base_directory`.
void read_model_section(JobReader& reader, const YamlNode& node, const std::filesystem::path& base_directory);

}  // namespace hybridshard::service::detail
