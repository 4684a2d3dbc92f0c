// A problem with a value, tagged with the field it is about. validate() functions return these so that a caller
// (the job loader) can point at the key the user wrote from the field alone, never by reading the sentence.
#pragma once

#include <string>
#include <vector>

namespace hybridshard::core {

template <typename Field>
struct FieldProblem {
  Field field;
  std::string message;  // a whole sentence in the model's / framework's own names
};

// The sentences alone, for callers that only print or throw them.
template <typename Field>
std::vector<std::string> problem_messages(const std::vector<FieldProblem<Field>>& problems) {
  std::vector<std::string> messages;
  messages.reserve(problems.size());
  for (const FieldProblem<Field>& problem : problems) messages.push_back(problem.message);
  return messages;
}

}  // namespace hybridshard::core
