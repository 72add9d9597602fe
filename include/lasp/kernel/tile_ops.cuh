#pragma once
// Tile operations shared by the forward and backward chunk kernels: accumulator scaling and
// loading, masked scores, row-wise output stores. Device code only.
#include "mma.cuh"

namespace lasp::kernel {

template <int MT, int NT>
LASP_DEVICE void scale_acc(float (&a)[MT][NT][4], float f) {
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j)
      #pragma unroll
      for (int e = 0; e < 4; ++e) a[i][j][e] *= f;
}

/// Load a * X + Y, fp32 D x E states (row stride E), into accumulator tiles covering rows
/// [r0, r0 + 16 MT) and columns [c0, c0 + 8 NT). X may be null (zero).
template <int MT, int NT, int E>
LASP_DEVICE void load_state(float (&S)[MT][NT][4], float a, const float* X, const float* Y, int r0, int c0, int lane) {
  const int gid = lane >> 2, t4 = lane & 3;
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = r0 + 16 * i + gid, c = c0 + 8 * j + 2 * t4;
      const float2 y0 = *reinterpret_cast<const float2*>(Y + r * E + c), y1 = *reinterpret_cast<const float2*>(Y + (r + 8) * E + c);
      float2 x0 = make_float2(0.f, 0.f), x1 = x0;
      if (X) { x0 = *reinterpret_cast<const float2*>(X + r * E + c); x1 = *reinterpret_cast<const float2*>(X + (r + 8) * E + c); }
      S[i][j][0] = a * x0.x + y0.x; S[i][j][1] = a * x0.y + y0.y;
      S[i][j][2] = a * x1.x + y1.x; S[i][j][3] = a * x1.y + y1.y;
    }
}

/// Masked scores into this warp's rows of sp: lower (j <= i, forward mask M) or upper (i >= j
/// seen from the key row, mask M^T) triangle, weight scale * exp(g_row - g_col) or exp(g_col - g_row).
template <int C, bool Upper, class T>
LASP_DEVICE void store_masked(T* sp, const float (&A)[1][C / 8][4], const float* g, float scale, int m0, int lane) {
  const int gid = lane >> 2, t4 = lane & 3;
  const int r0 = m0 + gid, r1 = r0 + 8;
  const float g0 = g[r0], g1 = g[r1];
  #pragma unroll
  for (int j = 0; j < C / 8; ++j) {
    const int c = 8 * j + 2 * t4;
    const float gc0 = g[c], gc1 = g[c + 1];
    float w00, w01, w10, w11;
    if constexpr (!Upper) {
      w00 = c <= r0 ? scale * __expf(g0 - gc0) : 0.f; w01 = c + 1 <= r0 ? scale * __expf(g0 - gc1) : 0.f;
      w10 = c <= r1 ? scale * __expf(g1 - gc0) : 0.f; w11 = c + 1 <= r1 ? scale * __expf(g1 - gc1) : 0.f;
    } else {
      w00 = c >= r0 ? scale * __expf(gc0 - g0) : 0.f; w01 = c + 1 >= r0 ? scale * __expf(gc1 - g0) : 0.f;
      w10 = c >= r1 ? scale * __expf(gc0 - g1) : 0.f; w11 = c + 1 >= r1 ? scale * __expf(gc1 - g1) : 0.f;
    }
    *reinterpret_cast<std::uint32_t*>(sp + Swz<C>::off(r0, c)) = MmaOp<T>::pack(A[0][j][0] * w00, A[0][j][1] * w01);
    *reinterpret_cast<std::uint32_t*>(sp + Swz<C>::off(r1, c)) = MmaOp<T>::pack(A[0][j][2] * w10, A[0][j][3] * w11);
  }
}

/// Multiply accumulator rows (16 i + gid, 16 i + gid + 8) by f(row).
template <int MT, int NT, class F>
LASP_DEVICE void scale_rows(float (&a)[MT][NT][4], int lane, F f) {
  const int gid = lane >> 2;
  #pragma unroll
  for (int i = 0; i < MT; ++i) {
    const float f0 = f(16 * i + gid), f1 = f(16 * i + gid + 8);
    #pragma unroll
    for (int j = 0; j < NT; ++j) { a[i][j][0] *= f0; a[i][j][1] *= f0; a[i][j][2] *= f1; a[i][j][3] *= f1; }
  }
}

/// Store accumulator tiles (rows 16 i + gid (+8), columns 8 j + 2 t4 (+1)) to global rows
/// [0, valid_rows) of element type G, row stride ld: each quad writes 16 contiguous bytes of a
/// row and L2 merges the sectors, so no shared-memory staging is needed.
template <int MT, int NT, class G>
LASP_DEVICE void store_rows(G* g, index_t ld, const float (&acc)[MT][NT][4], int lane, int valid_rows) {
  const int gid = lane >> 2, t4 = lane & 3;
  #pragma unroll
  for (int i = 0; i < MT; ++i) {
    const int r0 = 16 * i + gid, r1 = r0 + 8;
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int c = 8 * j + 2 * t4;
      if (r0 < valid_rows) store2(g + index_t(r0) * ld + c, acc[i][j][0], acc[i][j][1]);
      if (r1 < valid_rows) store2(g + index_t(r1) * ld + c, acc[i][j][2], acc[i][j][3]);
    }
  }
}

}  // namespace lasp::kernel
