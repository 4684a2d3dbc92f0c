// CUDA and NCCL checks that throw core::Error (OutOfMemoryError for allocation failures) with file:line, the failed
// expression, the library's message and the process rank.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

#include "hybridshard/core/error.h"

namespace hybridshard::core::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t error, const char* expression, const char* file, int line) {
  const std::string message = "CUDA error on rank " + std::to_string(error_rank()) + ": " + cudaGetErrorName(error) +
                              " (" + cudaGetErrorString(error) + ") in " + expression;
  if (error == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free allocation error so later calls do not see it
    throw OutOfMemoryError(message, file, line, expression, cudaGetErrorString(error));
  }
  throw Error(message, file, line, expression, cudaGetErrorString(error));
}

[[noreturn]] inline void throw_nccl_error(ncclResult_t result, const char* expression, const char* file, int line) {
  const std::string message =
      "NCCL error on rank " + std::to_string(error_rank()) + ": " + ncclGetErrorString(result) + " in " + expression;
  throw CommError(message, file, line, expression, ncclGetErrorString(result));
}

}  // namespace hybridshard::core::detail

#define HS_CUDA_CHECK(expression)                                                                     \
  do {                                                                                                \
    const cudaError_t hs_cuda_error_ = (expression);                                                  \
    if (hs_cuda_error_ != cudaSuccess) {                                                              \
      ::hybridshard::core::detail::throw_cuda_error(hs_cuda_error_, #expression, __FILE__, __LINE__); \
    }                                                                                                 \
  } while (0)

// ncclInProgress is not an error: non-blocking communicators return it while work is being enqueued.
#define HS_NCCL_CHECK(expression)                                                                      \
  do {                                                                                                 \
    const ncclResult_t hs_nccl_result_ = (expression);                                                 \
    if (hs_nccl_result_ != ncclSuccess && hs_nccl_result_ != ncclInProgress) {                         \
      ::hybridshard::core::detail::throw_nccl_error(hs_nccl_result_, #expression, __FILE__, __LINE__); \
    }                                                                                                  \
  } while (0)

// Checks the launch of the kernel just issued.
#define HS_CUDA_CHECK_LAUNCH() HS_CUDA_CHECK(cudaGetLastError())
