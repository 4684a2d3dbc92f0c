# Model, layouts and the reshard plan: pure functions, no libtorch, no communication. Relative to core/; one list
# for the library and for the fuzz build (tests/fuzz), which compiles them with its own flags.
set(HYBRIDSHARD_CORE_PURE_SOURCES
  src/dtype.cc
  src/error.cc
  src/model_spec.cc
  src/buffer_layout.cc
  src/train_layout.cc
  src/inference_layout.cc
  src/reshard_plan.cc
  src/plan_classes.cc
  src/enter_time.cc
)
