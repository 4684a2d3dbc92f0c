// The text helpers of config_text.h.
#include "config_text.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace hybridshard::service::detail {

std::string closest_word(std::string_view word, const std::vector<std::string_view>& candidates) {
  std::string best;
  std::size_t best_distance = std::string::npos;
  for (std::string_view candidate : candidates) {
    // Levenshtein distance, one row at a time.
    std::vector<std::size_t> row(candidate.size() + 1);
    for (std::size_t j = 0; j <= candidate.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= word.size(); ++i) {
      std::size_t diagonal = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= candidate.size(); ++j) {
        const std::size_t above = row[j];
        const std::size_t cost = word[i - 1] == candidate[j - 1] ? 0 : 1;
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
        diagonal = above;
      }
    }
    if (row.back() < best_distance) {
      best_distance = row.back();
      best = std::string(candidate);
    }
  }
  // Close enough to be a typo: a third of the word, at least 2 edits; or a prefix ("tensor_model" -> "..._size").
  const std::size_t allowed = std::max<std::size_t>(2, word.size() / 3);
  if (best_distance <= allowed) return best;
  for (std::string_view candidate : candidates) {
    if (word.size() >= 4 && candidate.substr(0, word.size()) == word) return std::string(candidate);
  }
  return {};
}

std::string join_words(const std::vector<std::string_view>& words, std::string_view last) {
  std::string text;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) text += i + 1 == words.size() ? " " + std::string(last) + " " : ", ";
    text += words[i];
  }
  return text;
}

std::string join_numbers(const std::vector<long long>& numbers, std::string_view last) {
  std::vector<std::string> texts;
  for (long long number : numbers) texts.push_back(std::to_string(number));
  return join_words(std::vector<std::string_view>(texts.begin(), texts.end()), last);
}

std::string format_number(double value) {
  char text[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*g", precision, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  return text;
}

}  // namespace hybridshard::service::detail
