# The Python package (python/): HYBRIDSHARD_WITH_PYTHON defaults to on when an interpreter that imports torch, its
# headers (Python.h) and pybind11's headers are found. The interpreter is the first of Python3_EXECUTABLE (when
# given), `python3` on PATH and /usr/bin/python3 that can `import torch`: the module shares that torch's libtorch
# (Debian: python3-torch and libtorch-dev are the same .so files; the GPU machine: Python's torch is the libtorch
# CMake finds), so both load into one process.
if(NOT Python3_EXECUTABLE)
  find_program(_hs_python_on_path python3 NO_CACHE)
  foreach(_hs_candidate IN ITEMS ${_hs_python_on_path} /usr/bin/python3)
    if(EXISTS "${_hs_candidate}")
      execute_process(COMMAND "${_hs_candidate}" -c "import torch" RESULT_VARIABLE _hs_rc OUTPUT_QUIET ERROR_QUIET)
      if(_hs_rc EQUAL 0)
        set(Python3_EXECUTABLE "${_hs_candidate}" CACHE FILEPATH "Python interpreter the package is built for")
        break()
      endif()
    endif()
  endforeach()
endif()

set(_hybridshard_python_default OFF)
if(Python3_EXECUTABLE)
  find_package(Python3 QUIET COMPONENTS Interpreter Development.Module)
  find_package(pybind11 CONFIG QUIET)
  if(TARGET pybind11::headers)
    set(_hs_pybind11_found ON)
  else()
    # Python's torch ships pybind11's headers (torch/include/pybind11).
    find_path(HYBRIDSHARD_PYBIND11_INCLUDE_DIR pybind11/pybind11.h HINTS ${TORCH_INCLUDE_DIRS})
    if(HYBRIDSHARD_PYBIND11_INCLUDE_DIR)
      set(_hs_pybind11_found ON)
    endif()
  endif()
  # Not under sanitizers: an instrumented extension module cannot load into the uninstrumented interpreter.
  if(Python3_FOUND AND Python3_Development.Module_FOUND AND _hs_pybind11_found AND HYBRIDSHARD_WITH_SERVICE
     AND NOT HYBRIDSHARD_SANITIZE)
    set(_hybridshard_python_default ON)
  endif()
endif()
option(HYBRIDSHARD_WITH_PYTHON "Build the Python package hybridshard (pybind11, torch tensor views)"
       ${_hybridshard_python_default})
add_feature_info(HYBRIDSHARD_WITH_PYTHON HYBRIDSHARD_WITH_PYTHON "Python package hybridshard (pybind11)")
