# Packaging test driver, run by CTest as `cmake -P`:
#   MODE=find_package      install lasp's build (LASP_BINARY_DIR) into WORK_DIR/prefix, then build
#                          find_package/ against that prefix only, and run its app
#                          (and nccl_app when EXPECT_NCCL: lasp::nccl must come with the package).
#   MODE=add_subdirectory  build add_subdirectory/ with add_subdirectory(LASP_SOURCE_DIR), run app.
#   MODE=fetchcontent      the same consumer through FetchContent, nothing downloaded.
# Other inputs: CONSUMERS_DIR, WORK_DIR, CONFIG, GENERATOR, MAKE_PROGRAM, CXX_COMPILER,
# INSTALL_INCLUDEDIR, INSTALL_CMAKEDIR (relative to the prefix).
cmake_minimum_required(VERSION 3.21)

foreach(_var MODE LASP_SOURCE_DIR LASP_BINARY_DIR CONSUMERS_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: ${_var} is not set")
  endif()
endforeach()

function(run)
  string(REPLACE ";" " " _pretty "${ARGV}")
  message(STATUS "+ ${_pretty}")
  execute_process(COMMAND ${ARGV} COMMAND_ECHO NONE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "command failed (${_rc}): ${_pretty}")
  endif()
endfunction()

set(_build_type "${CONFIG}")
if(_build_type STREQUAL "")
  set(_build_type Release)
endif()
set(_config_args)
if(NOT "${CONFIG}" STREQUAL "")
  set(_config_args --config "${CONFIG}")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(_build "${WORK_DIR}/build")
set(_configure
  "${CMAKE_COMMAND}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_BUILD_TYPE=${_build_type}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(NOT "${MAKE_PROGRAM}" STREQUAL "")
  list(APPEND _configure "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
set(_apps app)

if(MODE STREQUAL "find_package")
  set(_prefix "${WORK_DIR}/prefix")
  run("${CMAKE_COMMAND}" --install "${LASP_BINARY_DIR}" --prefix "${_prefix}" ${_config_args})
  if(NOT DEFINED INSTALL_INCLUDEDIR)
    set(INSTALL_INCLUDEDIR include)
  endif()
  if(NOT DEFINED INSTALL_CMAKEDIR)
    set(INSTALL_CMAKEDIR share/cmake/lasp)
  endif()
  foreach(_f ${INSTALL_INCLUDEDIR}/lasp/lasp.hpp ${INSTALL_CMAKEDIR}/laspConfig.cmake
             ${INSTALL_CMAKEDIR}/laspConfigVersion.cmake ${INSTALL_CMAKEDIR}/laspTargets.cmake
             ${INSTALL_CMAKEDIR}/laspNCCL.cmake)
    if(NOT EXISTS "${_prefix}/${_f}")
      message(FATAL_ERROR "not installed: ${_prefix}/${_f}")
    endif()
  endforeach()
  file(READ "${_prefix}/${INSTALL_CMAKEDIR}/laspTargets.cmake" _targets)
  string(FIND "${_targets}" "${LASP_SOURCE_DIR}" _pos)
  if(NOT _pos EQUAL -1)
    message(FATAL_ERROR "the installed laspTargets.cmake refers to the source tree "
                        "${LASP_SOURCE_DIR}")
  endif()
  if(NOT DEFINED EXPECT_NCCL)
    set(EXPECT_NCCL OFF)
  endif()
  run(${_configure} -S "${CONSUMERS_DIR}/find_package" -B "${_build}"
      "-DCMAKE_PREFIX_PATH=${_prefix}" "-DEXPECT_NCCL=${EXPECT_NCCL}")
  # The package must come from the temporary prefix, not from some other install.
  file(STRINGS "${_build}/CMakeCache.txt" _lasp_dir REGEX "^lasp_DIR:")
  string(REGEX REPLACE "^lasp_DIR:[A-Z]+=" "" _lasp_dir "${_lasp_dir}")
  file(REAL_PATH "${_lasp_dir}" _lasp_dir)
  file(REAL_PATH "${_prefix}" _real_prefix)
  string(FIND "${_lasp_dir}" "${_real_prefix}/" _pos)
  if(NOT _pos EQUAL 0)
    message(FATAL_ERROR "lasp was found at ${_lasp_dir}, not under ${_real_prefix}")
  endif()
  if(EXPECT_NCCL)
    list(APPEND _apps nccl_app)
  endif()
elseif(MODE STREQUAL "add_subdirectory" OR MODE STREQUAL "fetchcontent")
  set(_via_fc OFF)
  if(MODE STREQUAL "fetchcontent")
    set(_via_fc ON)
  endif()
  run(${_configure} -S "${CONSUMERS_DIR}/add_subdirectory" -B "${_build}"
      "-DLASP_SOURCE_DIR=${LASP_SOURCE_DIR}" "-DLASP_VIA_FETCHCONTENT=${_via_fc}")
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

run("${CMAKE_COMMAND}" --build "${_build}" ${_config_args})
foreach(_app IN LISTS _apps)
  set(_exe "${_build}/${_app}")
  if(NOT EXISTS "${_exe}" AND EXISTS "${_build}/${CONFIG}/${_app}")
    set(_exe "${_build}/${CONFIG}/${_app}")  # multi-config generators
  endif()
  run("${_exe}")
endforeach()
