# Transitions (hybridshard and seed strategies), loopback peer data and batch re-distribution (owner: transition).
set(_hs_transition ${CMAKE_CURRENT_SOURCE_DIR}/transition)

# Without a network: names, applicability, the seed's concatenation against the reference, one loopback rank.
hybridshard_add_gtest(NAME transition_test LABEL unit
  SOURCES ${_hs_transition}/transition_test.cc
  LIBS hybridshard_test_reference GTest::gtest_main)
target_include_directories(transition_test PRIVATE ${_hs_transition} ${PROJECT_SOURCE_DIR}/core/src)

# Gloo ranks as threads on 127.0.0.1: the layout matrix for both strategies, and batch round trips.
hybridshard_add_gtest(NAME transition_multirank_test LABEL multirank TIMEOUT 600
  SOURCES ${_hs_transition}/transition_multirank_test.cc
  LIBS hybridshard_test_reference GTest::gtest_main)
target_include_directories(transition_multirank_test PRIVATE ${_hs_transition} ${CMAKE_CURRENT_SOURCE_DIR}/runtime)

# 64 Gloo ranks as threads, each planning itself: every shard bit-exact (issue 13's many-rank simulation).
hybridshard_add_gtest(NAME transition_at_scale_test LABEL multirank TIMEOUT 300
  SOURCES ${_hs_transition}/transition_at_scale_test.cc
  LIBS hybridshard_test_reference GTest::gtest_main)
target_include_directories(transition_at_scale_test PRIVATE ${_hs_transition} ${CMAKE_CURRENT_SOURCE_DIR}/runtime)

hybridshard_add_gtest(NAME batch_test LABEL multirank TIMEOUT 300
  SOURCES ${_hs_transition}/batch_test.cc
  LIBS hybridshard::core GTest::gtest_main)
target_include_directories(batch_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/runtime)

# The same matrix and batch round trips on NCCL ranks, one GPU each (label gpu: exit 77 without a GPU; cases that
# need more GPUs than the machine has are skipped one by one).
hybridshard_add_gtest(NAME transition_nccl_test LABEL gpu TIMEOUT 900
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/runtime/gpu_test_main.cc ${_hs_transition}/transition_multirank_test.cc
  LIBS hybridshard_test_reference)
target_include_directories(transition_nccl_test PRIVATE ${_hs_transition} ${CMAKE_CURRENT_SOURCE_DIR}/runtime)
target_compile_definitions(transition_nccl_test PRIVATE HYBRIDSHARD_TEST_NCCL)

hybridshard_add_gtest(NAME batch_nccl_test LABEL gpu TIMEOUT 300
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/runtime/gpu_test_main.cc ${_hs_transition}/batch_test.cc
  LIBS hybridshard::core)
target_include_directories(batch_nccl_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/runtime)
target_compile_definitions(batch_nccl_test PRIVATE HYBRIDSHARD_TEST_NCCL)

# memory.release_on_exit on a real exit (issue 18): the CPU device here, CUDA device 0 with label gpu.
hybridshard_add_gtest(NAME release_on_exit_test LABEL unit
  SOURCES ${_hs_transition}/release_on_exit_test.cc
  LIBS hybridshard_test_reference GTest::gtest_main)
target_include_directories(release_on_exit_test PRIVATE ${_hs_transition})

hybridshard_add_gtest(NAME release_on_exit_gpu_test LABEL gpu TIMEOUT 120
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/runtime/gpu_test_main.cc ${_hs_transition}/release_on_exit_test.cc
  LIBS hybridshard_test_reference)
target_include_directories(release_on_exit_gpu_test PRIVATE ${_hs_transition})
target_compile_definitions(release_on_exit_gpu_test PRIVATE HYBRIDSHARD_TEST_CUDA)
