#pragma once
// Compiler portability, the versioned namespace and the error-handling macros. Everything here
// compiles with a plain C++17 host compiler; under nvcc the same functions become host+device.
#include <cstdint>

#if defined(__CUDACC__)
#define LASP_HD __host__ __device__ __forceinline__
#define LASP_DEVICE __device__ __forceinline__
#else
#define LASP_HD inline
#define LASP_DEVICE inline
#endif

// Every lasp symbol lives in lasp::LASP_ABI_NAMESPACE (an inline namespace named after the
// version), so two libraries that each bundle a different lasp version link into one program
// without ODR clashes. Users keep writing lasp::forward, lasp::decay::PerHead, ...
#ifndef LASP_ABI_NAMESPACE
#define LASP_ABI_NAMESPACE v0_3
#endif
#define LASP_NAMESPACE_BEGIN \
  namespace lasp {           \
  inline namespace LASP_ABI_NAMESPACE {
#define LASP_NAMESPACE_END \
  }                        \
  }

// Called with (status, "what failed", __FILE__, __LINE__) wherever lasp turns a failure into a
// non-success Status. Empty by default (lasp never prints); define it before including lasp to
// log, e.g. #define LASP_ON_ERROR(s, what, file, line) my_log(file, line, what).
#ifndef LASP_ON_ERROR
#define LASP_ON_ERROR(status, what, file, line) ((void)0)
#endif

// Evaluate an expression returning lasp::Status; return it from the enclosing function unless
// kSuccess. Users may predefine it.
#ifndef LASP_RETURN_IF_ERROR
#define LASP_RETURN_IF_ERROR(expr)                                          \
  do {                                                                      \
    ::lasp::Status lasp_status_ = (expr);                                   \
    if (lasp_status_ != ::lasp::Status::kSuccess) return lasp_status_;      \
  } while (0)
#endif

LASP_NAMESPACE_BEGIN
using index_t = std::int64_t;
LASP_NAMESPACE_END
