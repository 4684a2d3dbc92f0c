// One exception family for the whole engine, and the check macros that throw it.
//
// Every error carries where it was raised (file:line), the failed expression, the library's own message and, where
// known, the rank and the operation, so that a failure on rank 37 of a job reads as such in the launcher's log.
#pragma once

#include <stdexcept>
#include <string>

namespace hybridshard::core {

class Error : public std::runtime_error {
 public:
  Error(std::string what_happened, const char* file, int line, std::string expression = {},
        std::string library_message = {});

  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& expression() const { return expression_; }
  const std::string& library_message() const { return library_message_; }

 private:
  std::string file_;
  int line_;
  std::string expression_;
  std::string library_message_;
};

// A collective or point-to-point operation failed or timed out; names the rank, the peer and the operation.
class CommError : public Error {
 public:
  using Error::Error;
};

// A wait ran past its deadline.
class TimeoutError : public CommError {
 public:
  using CommError::CommError;
};

// An allocation failed (device, pinned host or host memory).
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

// Input (a model spec, a layout, a checkpoint) is inconsistent; raised before anything runs.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// Process-wide rank shown in error messages; set once by whoever knows it (the launcher's rank main).
void set_error_rank(int rank);
int error_rank();

}  // namespace hybridshard::core

#define HS_THROW(ErrorType, message) throw ErrorType((message), __FILE__, __LINE__)

#define HS_CHECK(condition, message)                                                               \
  do {                                                                                             \
    if (!(condition)) throw ::hybridshard::core::Error((message), __FILE__, __LINE__, #condition); \
  } while (0)
