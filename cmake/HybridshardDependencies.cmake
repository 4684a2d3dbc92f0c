# Finds every dependency once and exposes it as a namespaced target:
#   hybridshard::torch_cpu  libtorch's CPU half (torch_cpu + c10): c10d TCPStore, ProcessGroupGloo, ATen on CPU.
#                           Safe in processes that serve HTTP (see docs/architecture.md, "why the launcher serves").
#   hybridshard::torch      all of libtorch (torch_cuda on CUDA builds): only the rank processes' workloads.
#   hybridshard::cuda       CUDA runtime + NCCL (HYBRIDSHARD_WITH_CUDA).
# yaml-cpp, prometheus-cpp, nlohmann_json, CLI11 and GoogleTest are found where they are used.

find_package(Threads REQUIRED)

find_package(Torch REQUIRED)
set_package_properties(Torch PROPERTIES TYPE REQUIRED PURPOSE "tensors, c10d TCPStore and Gloo, workloads")
get_filename_component(_hs_torch_lib_hint "${TORCH_LIBRARY}" DIRECTORY)
find_library(HYBRIDSHARD_TORCH_CPU_LIBRARY torch_cpu HINTS "${_hs_torch_lib_hint}" "${TORCH_INSTALL_PREFIX}/lib" REQUIRED)
find_library(HYBRIDSHARD_C10_LIBRARY c10 HINTS "${_hs_torch_lib_hint}" "${TORCH_INSTALL_PREFIX}/lib" REQUIRED)

add_library(hybridshard_torch_cpu INTERFACE)
add_library(hybridshard::torch_cpu ALIAS hybridshard_torch_cpu)
target_include_directories(hybridshard_torch_cpu SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_link_libraries(hybridshard_torch_cpu INTERFACE ${HYBRIDSHARD_TORCH_CPU_LIBRARY} ${HYBRIDSHARD_C10_LIBRARY}
                                                      Threads::Threads)
separate_arguments(_hs_torch_cxx_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(hybridshard_torch_cpu INTERFACE ${_hs_torch_cxx_flags})

# Gloo through c10d's ProcessGroupGloo: needs gloo's headers beside libtorch's.
find_path(HYBRIDSHARD_GLOO_INCLUDE_DIR gloo/algorithm.h HINTS ${TORCH_INCLUDE_DIRS} /usr/include)
if(HYBRIDSHARD_GLOO_INCLUDE_DIR)
  set(HYBRIDSHARD_WITH_GLOO ON)
  target_compile_definitions(hybridshard_torch_cpu INTERFACE USE_C10D_GLOO)
  target_include_directories(hybridshard_torch_cpu SYSTEM INTERFACE ${HYBRIDSHARD_GLOO_INCLUDE_DIR})
else()
  set(HYBRIDSHARD_WITH_GLOO OFF)
endif()
add_feature_info(Gloo HYBRIDSHARD_WITH_GLOO "Gloo communicator (c10d ProcessGroupGloo)")

add_library(hybridshard_torch INTERFACE)
add_library(hybridshard::torch ALIAS hybridshard_torch)
target_include_directories(hybridshard_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_link_libraries(hybridshard_torch INTERFACE ${TORCH_LIBRARIES} hybridshard::torch_cpu)

if(HYBRIDSHARD_WITH_CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_COMPILER ${HYBRIDSHARD_NVCC})
  endif()
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  find_library(HYBRIDSHARD_NCCL_LIBRARY nccl HINTS /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu REQUIRED)
  add_library(hybridshard_cuda INTERFACE)
  add_library(hybridshard::cuda ALIAS hybridshard_cuda)
  target_include_directories(hybridshard_cuda SYSTEM INTERFACE ${HYBRIDSHARD_NCCL_INCLUDE_DIR})
  target_link_libraries(hybridshard_cuda INTERFACE CUDA::cudart ${HYBRIDSHARD_NCCL_LIBRARY})
  target_compile_definitions(hybridshard_cuda INTERFACE HYBRIDSHARD_WITH_CUDA=1)
endif()

# A prefix of Debian packages unpacked with dpkg -x (scripts/gpu on the GPU machine: prometheus-cpp, civetweb,
# nlohmann-json, CLI11). Packages are found there through CMAKE_PREFIX_PATH; where a package's CMake file needs what
# that machine lacks (prometheus-cpp asks for CURL and ZLIB), the users fall back to find_library/find_path. The
# unpacked shared libraries need each other at link time (-rpath-link) and our binaries need them at run time (RPATH).
set(HYBRIDSHARD_DEPS_PREFIX "" CACHE PATH "Prefix of unpacked dependency packages (its usr/ directory)")
if(HYBRIDSHARD_DEPS_PREFIX)
  list(APPEND CMAKE_PREFIX_PATH "${HYBRIDSHARD_DEPS_PREFIX}")
  if(CMAKE_LIBRARY_ARCHITECTURE)
    set(_hs_deps_lib "${HYBRIDSHARD_DEPS_PREFIX}/lib/${CMAKE_LIBRARY_ARCHITECTURE}")
  else()
    set(_hs_deps_lib "${HYBRIDSHARD_DEPS_PREFIX}/lib/x86_64-linux-gnu")
  endif()
  add_link_options("LINKER:-rpath-link,${_hs_deps_lib}")
  list(APPEND CMAKE_BUILD_RPATH "${_hs_deps_lib}")
  # prometheus-cpp-pull links civetweb-cpp and civetweb: found here so that a user of pull can link them directly.
  find_library(HYBRIDSHARD_CIVETWEB_CPP_LIBRARY civetweb-cpp HINTS "${_hs_deps_lib}")
  message(STATUS "hybridshard: dependency prefix ${HYBRIDSHARD_DEPS_PREFIX} (libraries in ${_hs_deps_lib})")
endif()
