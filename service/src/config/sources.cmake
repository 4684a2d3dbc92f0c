# The sources of hybridshard::config, relative to this folder. One list for the library and for the fuzz build
# (tests/fuzz), which compiles the readers with its own flags.
set(HYBRIDSHARD_CONFIG_SOURCES
  units.cc
  config_text.cc
  yaml_document.cc
  job_reader.cc
  job_loader.cc
  model_section.cc
  job_validator.cc
  layout_checks.cc
  batch_checks.cc
  job_config.cc
  memory_policy.cc
  memory_plan.cc
)
