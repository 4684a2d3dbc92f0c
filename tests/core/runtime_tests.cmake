# Runtime tests: devices, flat buffers, events, store and communicators (owner: runtime).
set(_hs_runtime ${CMAKE_CURRENT_SOURCE_DIR}/runtime)

hybridshard_add_gtest(NAME core_runtime_test LABEL unit
  SOURCES ${_hs_runtime}/events_test.cc
          ${_hs_runtime}/cpu_device_test.cc
          ${_hs_runtime}/flat_buffer_test.cc
          ${_hs_runtime}/loopback_communicator_test.cc
  LIBS hybridshard::core GTest::gtest_main)

# The CUDA device's piece tables and routing without a GPU, and the per-enter counts of a plan.
hybridshard_add_gtest(NAME piece_table_test LABEL unit
  SOURCES ${_hs_runtime}/piece_table_test.cc
  LIBS hybridshard::core GTest::gtest_main)
target_include_directories(piece_table_test PRIVATE ${PROJECT_SOURCE_DIR}/core/src)

# The NCCL peer path's meeting in shared host memory and share_memory's protocol over it: threads and a forked
# process, no GPU.
hybridshard_add_gtest(NAME host_meeting_test LABEL unit
  SOURCES ${_hs_runtime}/host_meeting_test.cc ${_hs_runtime}/shared_records_test.cc
  LIBS hybridshard::core GTest::gtest_main)
target_include_directories(host_meeting_test PRIVATE ${PROJECT_SOURCE_DIR}/core/src)

hybridshard_add_gtest(NAME core_comm_test LABEL multirank TIMEOUT 180
  SOURCES ${_hs_runtime}/store_test.cc
          ${_hs_runtime}/gloo_communicator_test.cc
  LIBS hybridshard::core GTest::gtest_main)

# Exit code 77 (skipped) without a GPU: gpu_test_main.cc checks cuda_available() first.
hybridshard_add_gtest(NAME core_cuda_test LABEL gpu TIMEOUT 600
  SOURCES ${_hs_runtime}/gpu_test_main.cc
          ${_hs_runtime}/cuda_device_test.cc
          ${_hs_runtime}/nccl_communicator_test.cc
  LIBS hybridshard::core)

# NCCL across 2 GPUs (ranks as threads); skipped case by case with fewer GPUs, exit 77 without any.
hybridshard_add_gtest(NAME nccl_multigpu_test LABEL gpu TIMEOUT 300
  SOURCES ${_hs_runtime}/gpu_test_main.cc ${_hs_runtime}/nccl_multigpu_test.cc
  LIBS hybridshard::core)
