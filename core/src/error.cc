#include "hybridshard/core/error.h"

#include <atomic>
#include <utility>

namespace hybridshard::core {
namespace {

std::atomic<int> g_error_rank{-1};

// "<file>:<line>: [rank N] message (expression: ...; library: ...)"; the rank and the parenthesis only when known.
std::string format_error(const std::string& what_happened, const char* file, int line, const std::string& expression,
                         const std::string& library_message) {
  std::string text = std::string(file != nullptr ? file : "?") + ":" + std::to_string(line) + ": ";
  if (const int rank = g_error_rank.load(std::memory_order_relaxed); rank >= 0) {
    text += "[rank " + std::to_string(rank) + "] ";
  }
  text += what_happened;
  if (!expression.empty() || !library_message.empty()) {
    text += " (";
    if (!expression.empty()) text += "expression: " + expression;
    if (!expression.empty() && !library_message.empty()) text += "; ";
    if (!library_message.empty()) text += "library: " + library_message;
    text += ")";
  }
  return text;
}

}  // namespace

Error::Error(std::string what_happened, const char* file, int line, std::string expression, std::string library_message)
    : std::runtime_error(format_error(what_happened, file, line, expression, library_message)),
      file_(file != nullptr ? file : "?"),
      line_(line),
      expression_(std::move(expression)),
      library_message_(std::move(library_message)) {}

void set_error_rank(int rank) { g_error_rank.store(rank, std::memory_order_relaxed); }

int error_rank() { return g_error_rank.load(std::memory_order_relaxed); }

}  // namespace hybridshard::core
