#include "yaml_document.h"

#include <yaml-cpp/anchor.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <utility>

namespace hybridshard::service::detail {
namespace {

// Thrown from the event handler to stop the parser when the node budget is spent.
struct BudgetExceeded {
  int line = 0;
  int column = 0;
};

std::size_t count_nodes(const YamlNode& node) {
  std::size_t count = 1;
  for (const YamlNode& child : node.children) count += count_nodes(child);
  return count;
}

class TreeBuilder : public YAML::EventHandler {
 public:
  explicit TreeBuilder(std::vector<YamlProblem>& problems) : problems_(problems) {}

  bool has_root() const { return has_root_; }
  YamlNode take_root() { return std::move(root_); }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    YamlNode node = make_node(mark, YamlNode::Kind::kNull);
    add(std::move(node), anchor);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) {
      // yaml-cpp reports unknown aliases itself; be safe anyway.
      add(make_node(mark, YamlNode::Kind::kNull), 0);
      return;
    }
    spend(count_nodes(it->second), mark);
    YamlNode copy = it->second;
    copy.line = mark.line + 1;
    copy.column = mark.column + 1;
    add(std::move(copy), 0);
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    YamlNode node = make_node(mark, YamlNode::Kind::kScalar);
    node.scalar = value;
    node.plain = tag == "?";
    if (node.plain && (value == "~" || value == "null" || value == "Null" || value == "NULL")) {
      node.kind = YamlNode::Kind::kNull;
      node.scalar.clear();
    }
    add(std::move(node), anchor);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    push(make_node(mark, YamlNode::Kind::kSequence), anchor);
  }
  void OnSequenceEnd() override { pop(); }

  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    push(make_node(mark, YamlNode::Kind::kMap), anchor);
  }
  void OnMapEnd() override { pop(); }

 private:
  struct Frame {
    YamlNode node;
    YAML::anchor_t anchor = 0;
    std::string path;
    bool has_key = false;
    YamlNode key;
    std::map<std::string, std::pair<int, int>> seen;  // key -> where it was first written
  };

  YamlNode make_node(const YAML::Mark& mark, YamlNode::Kind kind) {
    spend(1, mark);
    YamlNode node;
    node.kind = kind;
    node.line = mark.line + 1;
    node.column = mark.column + 1;
    return node;
  }

  void spend(std::size_t nodes, const YAML::Mark& mark) {
    nodes_ += nodes;
    if (nodes_ > kMaxYamlNodes) throw BudgetExceeded{mark.line + 1, mark.column + 1};
  }

  // The path of the next value added to the top frame.
  std::string child_path() const {
    if (stack_.empty()) return {};
    const Frame& top = stack_.back();
    if (top.node.kind == YamlNode::Kind::kSequence) {
      return top.path + "[" + std::to_string(top.node.children.size()) + "]";
    }
    if (!top.has_key) return top.path;  // a (complex) key
    return top.path.empty() ? top.key.scalar : top.path + "." + top.key.scalar;
  }

  void push(YamlNode node, YAML::anchor_t anchor) {
    Frame frame;
    frame.path = child_path();
    frame.node = std::move(node);
    frame.anchor = anchor;
    stack_.push_back(std::move(frame));
  }

  void pop() {
    if (stack_.empty()) return;
    Frame frame = std::move(stack_.back());
    stack_.pop_back();
    add(std::move(frame.node), frame.anchor);
  }

  void add(YamlNode node, YAML::anchor_t anchor) {
    if (anchor != 0) {
      spend(count_nodes(node), YAML::Mark());
      anchors_[anchor] = node;
    }
    if (stack_.empty()) {
      root_ = std::move(node);
      has_root_ = true;
      return;
    }
    Frame& top = stack_.back();
    if (top.node.kind == YamlNode::Kind::kSequence) {
      top.node.children.push_back(std::move(node));
      return;
    }
    if (!top.has_key) {
      if (node.kind != YamlNode::Kind::kScalar) {
        problems_.push_back({node.line, node.column, top.path,
                             node.kind == YamlNode::Kind::kNull ? "a key is empty"
                                                                : "a key must be a plain word, not a list or mapping"});
        node.kind = YamlNode::Kind::kScalar;
        node.children.clear();
      }
      top.key = std::move(node);
      top.has_key = true;
      return;
    }
    node.key = top.key.scalar;
    node.key_line = top.key.line;
    node.key_column = top.key.column;
    const std::string path = top.path.empty() ? node.key : top.path + "." + node.key;
    auto [it, inserted] = top.seen.emplace(node.key, std::make_pair(node.key_line, node.key_column));
    if (!inserted) {
      problems_.push_back({node.key_line, node.key_column, path,
                           "duplicate key '" + node.key + "' (first given at line " + std::to_string(it->second.first) +
                               "); give each key once"});
    }
    top.node.children.push_back(std::move(node));
    top.has_key = false;
  }

  std::vector<YamlProblem>& problems_;
  std::vector<Frame> stack_;
  std::map<YAML::anchor_t, YamlNode> anchors_;
  std::size_t nodes_ = 0;
  YamlNode root_;
  bool has_root_ = false;
};

// Events of a second document are read and dropped (only to tell that there is one).
class DiscardHandler : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// The first byte that cannot be in a UTF-8 text file (NUL and other control characters, broken UTF-8), if any.
bool find_binary_byte(std::string_view text, std::size_t& at) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      if ((byte < 0x20 && byte != '\t' && byte != '\n' && byte != '\r') || byte == 0x7f) {
        at = i;
        return true;
      }
      ++i;
      continue;
    }
    std::size_t length = 0;
    std::uint32_t code = 0;
    if ((byte & 0xe0) == 0xc0) {
      length = 2;
      code = byte & 0x1f;
    } else if ((byte & 0xf0) == 0xe0) {
      length = 3;
      code = byte & 0x0f;
    } else if ((byte & 0xf8) == 0xf0) {
      length = 4;
      code = byte & 0x07;
    } else {
      at = i;
      return true;
    }
    if (i + length > text.size()) {
      at = i;
      return true;
    }
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) {
        at = i;
        return true;
      }
      code = (code << 6) | (next & 0x3f);
    }
    const bool overlong =
        (length == 2 && code < 0x80) || (length == 3 && code < 0x800) || (length == 4 && code < 0x10000);
    if (overlong || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      at = i;
      return true;
    }
    i += length;
  }
  return false;
}

void line_column_of(std::string_view text, std::size_t offset, int& line, int& column) {
  line = 1;
  column = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
}

}  // namespace

YamlDocument parse_yaml_document(std::string_view text) {
  YamlDocument document;
  if (text.size() > kMaxYamlBytes) {
    document.problems.push_back({0,
                                 0,
                                 {},
                                 "the file has " + std::to_string(text.size()) +
                                     " bytes; a job file may have at most " + std::to_string(kMaxYamlBytes) +
                                     " bytes"});
    return document;
  }
  // A UTF-8 byte order mark is allowed at the start.
  std::string_view body = text;
  if (body.substr(0, 3) == "\xEF\xBB\xBF") body.remove_prefix(3);
  if (std::size_t at = 0; find_binary_byte(body, at)) {
    int line = 0;
    int column = 0;
    line_column_of(body, at, line, column);
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned>(static_cast<unsigned char>(body[at])));
    document.problems.push_back(
        {line, column, {}, std::string("byte ") + hex + " is not text; a job file is YAML in UTF-8 (binary file?)"});
    return document;
  }

  std::istringstream stream{std::string(text)};
  TreeBuilder builder(document.problems);
  try {
    YAML::Parser parser(stream);
    const bool found = parser.HandleNextDocument(builder);
    if (!found || !builder.has_root()) {
      document.problems.push_back({0, 0, {}, "the file is empty; a job needs at least one section, e.g. 'model:'"});
      return document;
    }
    document.root = builder.take_root();
    DiscardHandler discard;
    if (parser.HandleNextDocument(discard)) {
      document.problems.push_back(
          {0, 0, {}, "the file holds more than one YAML document ('---'); a job file is one document"});
      return document;
    }
  } catch (const BudgetExceeded& exceeded) {
    document.problems.push_back({exceeded.line,
                                 exceeded.column,
                                 {},
                                 "the document expands to more than " + std::to_string(kMaxYamlNodes) +
                                     " values (aliases of aliases?); job files must be small"});
    return document;
  } catch (const YAML::Exception& error) {
    const int line = error.mark.is_null() ? 0 : error.mark.line + 1;
    const int column = error.mark.is_null() ? 0 : error.mark.column + 1;
    document.problems.push_back({line, column, {}, "YAML syntax: " + error.msg});
    return document;
  } catch (const std::exception& error) {
    document.problems.push_back({0, 0, {}, std::string("YAML: ") + error.what()});
    return document;
  }
  if (document.root.kind == YamlNode::Kind::kNull) {
    document.problems.push_back({0, 0, {}, "the file is empty; a job needs at least one section, e.g. 'model:'"});
    return document;
  }
  document.ok = true;
  return document;
}

}  // namespace hybridshard::service::detail
