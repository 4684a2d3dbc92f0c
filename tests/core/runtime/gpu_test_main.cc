// main() of the gpu-labelled tests: exit 77 (ctest: skipped) when there is no usable CUDA device.
#include <gtest/gtest.h>

#include <cstdio>

#include "hybridshard/core/device.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!hybridshard::core::cuda_available()) {
    std::printf("no CUDA device (or built without CUDA): skipping\n");
    return 77;
  }
  return RUN_ALL_TESTS();
}
