# Finds NCCL and, when found, defines lasp::nccl = lasp::lasp + NCCL + CUDA runtime.
#
# Included by lasp's CMakeLists.txt (build tree, where lasp::nccl is an alias of lasp_nccl)
# and by the installed laspConfig.cmake (where lasp::nccl is an imported target), so
# find_package(lasp) consumers get lasp::nccl exactly when NCCL is found on their machine.
# Nothing here is required: without NCCL or the CUDA toolkit, lasp::nccl is simply absent.
#
# Hints: NCCL_ROOT (CMake or environment variable), CUDAToolkit_ROOT, or set the cache
# entries NCCL_INCLUDE_DIR / NCCL_LIBRARY directly.
# Sets: LASP_NCCL_FOUND, LASP_NCCL_VERSION (e.g. 2.28.9).

set(LASP_NCCL_FOUND FALSE)
if(TARGET lasp::nccl)
  set(LASP_NCCL_FOUND TRUE)
  return()
endif()

if(NOT TARGET CUDA::cudart)
  find_package(CUDAToolkit QUIET)
endif()
if(NOT TARGET CUDA::cudart)
  return()
endif()

set(_lasp_nccl_hints ${NCCL_ROOT} $ENV{NCCL_ROOT})
find_path(NCCL_INCLUDE_DIR nccl.h
  HINTS ${_lasp_nccl_hints} ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include
  PATH_SUFFIXES include
  DOC "Directory holding nccl.h")
find_library(NCCL_LIBRARY NAMES nccl
  HINTS ${_lasp_nccl_hints} ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64 /usr/local/cuda/lib
  PATH_SUFFIXES lib64 lib
  DOC "The NCCL library (libnccl.so)")
mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)
unset(_lasp_nccl_hints)
if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
  return()
endif()

set(LASP_NCCL_VERSION "")
file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _lasp_nccl_defs
     REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
foreach(_lasp_part MAJOR MINOR PATCH)
  if(_lasp_nccl_defs MATCHES "NCCL_${_lasp_part} +([0-9]+)")
    list(APPEND LASP_NCCL_VERSION "${CMAKE_MATCH_1}")
  endif()
endforeach()
list(JOIN LASP_NCCL_VERSION "." LASP_NCCL_VERSION)
unset(_lasp_nccl_defs)
unset(_lasp_part)

get_target_property(_lasp_imported lasp::lasp IMPORTED)
if(_lasp_imported)  # installed package
  add_library(lasp::nccl INTERFACE IMPORTED)
  set_target_properties(lasp::nccl PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "lasp::lasp;${NCCL_LIBRARY};CUDA::cudart")
else()              # lasp's own build tree (top level or add_subdirectory/FetchContent)
  add_library(lasp_nccl INTERFACE)
  add_library(lasp::nccl ALIAS lasp_nccl)
  target_include_directories(lasp_nccl SYSTEM INTERFACE "${NCCL_INCLUDE_DIR}")
  target_link_libraries(lasp_nccl INTERFACE lasp::lasp "${NCCL_LIBRARY}" CUDA::cudart)
endif()
unset(_lasp_imported)
set(LASP_NCCL_FOUND TRUE)
