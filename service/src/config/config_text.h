// Small text helpers shared by the job loader, the validator and the memory plan table.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hybridshard::service::detail {

// The candidate closest to `word` by edit distance, when it is close enough to be a likely typo; "" otherwise.
std::string closest_word(std::string_view word, const std::vector<std::string_view>& candidates);

// "a, b or c" (with `last` = "or") / "a, b and c".
std::string join_words(const std::vector<std::string_view>& words, std::string_view last);
std::string join_numbers(const std::vector<long long>& numbers, std::string_view last);

// Shortest text that reads back as the same double: "500000", "1e-05", "0.5".
std::string format_number(double value);

}  // namespace hybridshard::service::detail
