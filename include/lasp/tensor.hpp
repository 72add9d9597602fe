#pragma once
// Shapes and strided tensor views. Pointers are user-owned (device memory for the CUDA backend,
// host memory for the host backend); lasp never allocates or frees them.
#include "config.hpp"

LASP_NAMESPACE_BEGIN

/// Problem shape of one SP rank's local segment.
/// B batch, N local tokens (any N >= 1; N = 0, an empty shard, on the host backend: args.hpp),
/// H heads, D key dim, E value dim, R the SP group size
/// the caller expects (checked against the communicator).
struct Shape {
  index_t B = 1, N = 1, H = 1, D = 64, E = 64;
  int R = 1;
  friend constexpr bool operator==(const Shape& a, const Shape& b) {
    return a.B == b.B && a.N == b.N && a.H == b.H && a.D == b.D && a.E == b.E && a.R == b.R;
  }
};

/// A rank-4 view (b, n, h, x) with explicit strides in elements for b, n and h and a
/// contiguous last dimension. Token-major [B,N,H,X] and head-major [B,H,N,X] both fit.
template <class T>
struct Tensor {
  T* ptr = nullptr;
  index_t stride_b = 0, stride_n = 0, stride_h = 0;

  LASP_HD T* at(index_t b, index_t n, index_t h) const { return ptr + b * stride_b + n * stride_n + h * stride_h; }
  LASP_HD T& operator()(index_t b, index_t n, index_t h, index_t x) const { return at(b, n, h)[x]; }
  /// Implicit conversion T -> const T.
  template <class U>
  constexpr operator Tensor<const U>() const { return {ptr, stride_b, stride_n, stride_h}; }
};

/// [B,N,H,X] contiguous (what model projections produce).
template <class T>
constexpr Tensor<T> token_major(T* p, index_t N, index_t H, index_t X) {
  return {p, N * H * X, H * X, X};
}
/// [B,H,N,X] contiguous.
template <class T>
constexpr Tensor<T> head_major(T* p, index_t N, index_t H, index_t X) {
  return {p, H * N * X, X, N * X};
}

/// A rank-3 view (b, n, h) of fp32 per-token-per-head values (log-gates and their gradient).
struct GateTensor {
  float* ptr = nullptr;
  index_t stride_b = 0, stride_n = 0, stride_h = 0;
  LASP_HD float& operator()(index_t b, index_t n, index_t h) const { return ptr[b * stride_b + n * stride_n + h * stride_h]; }
};
struct ConstGateTensor {
  const float* ptr = nullptr;
  index_t stride_b = 0, stride_n = 0, stride_h = 0;
  LASP_HD float operator()(index_t b, index_t n, index_t h) const { return ptr[b * stride_b + n * stride_n + h * stride_h]; }
};
/// [B,N,H] contiguous gates.
constexpr ConstGateTensor gates_token_major(const float* p, index_t N, index_t H) { return {p, N * H, H, 1}; }
constexpr GateTensor gates_token_major(float* p, index_t N, index_t H) { return {p, N * H, H, 1}; }
/// [B,H,N] contiguous gates.
constexpr ConstGateTensor gates_head_major(const float* p, index_t N, index_t H) { return {p, H * N, 1, N}; }
constexpr GateTensor gates_head_major(float* p, index_t N, index_t H) { return {p, H * N, 1, N}; }

LASP_NAMESPACE_END
