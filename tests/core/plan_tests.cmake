# Model spec, layouts and the reshard plan (pure functions), checked against an independent reference.

# The reference: expected vLLM and Megatron-Core tensors built by slicing full tensors; used by the transition tests.
add_library(hybridshard_test_reference STATIC ${CMAKE_CURRENT_LIST_DIR}/reference/reference.cc)
target_include_directories(hybridshard_test_reference PUBLIC ${CMAKE_CURRENT_LIST_DIR}/reference)
target_link_libraries(hybridshard_test_reference PUBLIC hybridshard::core)
hybridshard_set_warnings(hybridshard_test_reference)

hybridshard_add_gtest(NAME model_spec_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/model_spec_test.cc
                      LIBS hybridshard_test_reference GTest::gtest_main LABEL unit)
hybridshard_add_gtest(NAME train_layout_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/train_layout_test.cc
                      LIBS hybridshard_test_reference GTest::gtest_main LABEL unit)
hybridshard_add_gtest(NAME inference_layout_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/inference_layout_test.cc
                      LIBS hybridshard_test_reference GTest::gtest_main LABEL unit)
hybridshard_add_gtest(NAME reshard_plan_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/reshard_plan_test.cc
                      LIBS hybridshard_test_reference GTest::gtest_main LABEL unit)
hybridshard_add_gtest(NAME plan_classes_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/plan_classes_test.cc
                      LIBS hybridshard_test_reference GTest::gtest_main LABEL unit)
hybridshard_add_gtest(NAME enter_time_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/enter_time_test.cc
                      LIBS hybridshard::core GTest::gtest_main LABEL unit)
