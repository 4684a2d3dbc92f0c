#include "detail/environment.h"

#include <cstdlib>
#include <string>

#include "hybridshard/core/error.h"

namespace hybridshard::core::detail {

std::int64_t count_from_environment(const char* name, std::int64_t fallback, std::int64_t least, std::int64_t most) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long long count = std::strtoll(value, &end, 10);
  if (end == value || *end != '\0' || count < least || count > most) {
    HS_THROW(ConfigError, std::string(name) + ": '" + value + "' is not a whole number from " + std::to_string(least) +
                              " to " + std::to_string(most));
  }
  return count;
}

}  // namespace hybridshard::core::detail
