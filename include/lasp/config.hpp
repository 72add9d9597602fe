#pragma once
// Compiler portability macros. Everything here compiles with a plain C++17 host compiler;
// under nvcc the same functions become host+device.
#include <cstdint>

#if defined(__CUDACC__)
#define LASP_HD __host__ __device__ __forceinline__
#define LASP_DEVICE __device__ __forceinline__
#else
#define LASP_HD inline
#define LASP_DEVICE inline
#endif

// Evaluate an expression returning lasp::Status; return it from the enclosing function unless kSuccess.
// Users may predefine LASP_RETURN_IF_ERROR to hook their own logging.
#ifndef LASP_RETURN_IF_ERROR
#define LASP_RETURN_IF_ERROR(expr)                             \
  do {                                                         \
    ::lasp::Status lasp_status_ = (expr);                      \
    if (lasp_status_ != ::lasp::Status::kSuccess) return lasp_status_; \
  } while (0)
#endif

namespace lasp {
using index_t = std::int64_t;
}  // namespace lasp
