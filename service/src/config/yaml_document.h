// A YAML document as the job loader sees it: built from yaml-cpp's parser events rather than YAML::Node, so that
// every key and value keeps its line and column, duplicate keys are caught (YAML::Node keeps the first silently),
// and the work is bounded whatever the input (aliases are expanded into copies under a node budget, so an alias bomb
// ends with an error instead of exponential time).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace hybridshard::service::detail {

struct YamlNode {
  enum class Kind { kNull, kScalar, kSequence, kMap };
  Kind kind = Kind::kNull;
  int line = 0;  // 1-based position of the value
  int column = 0;
  std::string scalar;  // kScalar: the text
  bool plain = false;  // kScalar: written without quotes and without an explicit tag
  // Set on the values of a map: the key and where it was written.
  std::string key;
  int key_line = 0;
  int key_column = 0;
  std::vector<YamlNode> children;  // sequence items, or map values (in file order)
};

// A problem found while reading the text (syntax, duplicate key, binary data, ...), 1-based position.
struct YamlProblem {
  int line = 0;
  int column = 0;
  std::string key;  // dotted path of the map key concerned, when known
  std::string message;
};

struct YamlDocument {
  bool ok = false;  // a document was read (possibly with duplicate-key problems)
  YamlNode root;
  std::vector<YamlProblem> problems;
};

// Largest job file read, and the most nodes (after alias expansion) a document may hold.
inline constexpr std::size_t kMaxYamlBytes = std::size_t{8} << 20;
inline constexpr std::size_t kMaxYamlNodes = 200'000;

YamlDocument parse_yaml_document(std::string_view text);

}  // namespace hybridshard::service::detail
