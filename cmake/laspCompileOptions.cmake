# Compile settings for lasp's OWN tests, benchmarks and examples (never for lasp::lasp,
# never installed): warnings, and the CUDA standard and flags.

option(LASP_WARNINGS_AS_ERRORS "Treat warnings in lasp's own targets as errors" OFF)

# lasp_target_options(<target>): warnings for C++ sources; C++17 and
# --expt-relaxed-constexpr -lineinfo for CUDA sources.
function(lasp_target_options target)
  # Host warnings; for CUDA only -Wall reaches the host compiler (-Wextra fires on the
  # host stubs nvcc generates).
  set(_warn -Wall -Wextra)
  set(_warn_cuda -Xcompiler=-Wall)
  if(LASP_WARNINGS_AS_ERRORS)
    list(APPEND _warn -Werror)
    list(APPEND _warn_cuda -Xcompiler=-Werror)
  endif()
  # The sm_90a kernel family exists in the binary only when 90a is among the architectures; the
  # host side of the kernel table learns it from LASP_SM90A (a header cannot see the targets).
  if("90a" IN_LIST CMAKE_CUDA_ARCHITECTURES)
    target_compile_definitions(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:LASP_SM90A=1>)
  endif()
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${_warn}>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo ${_warn_cuda}>)
  set_target_properties(${target} PROPERTIES
    CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
endfunction()
