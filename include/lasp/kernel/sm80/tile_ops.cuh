#pragma once
// Tile operations shared by the sm_80 chunk kernels: accumulator scaling, masked scores, row
// scaling and dot products, row-wise output stores. Device code only.
#include "mma.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <int MT, int NT>
LASP_DEVICE void scale_acc(float (&a)[MT][NT][4], float f) {
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j)
      #pragma unroll
      for (int e = 0; e < 4; ++e) a[i][j][e] *= f;
}

/// Masked scores into this warp's rows of sp: lower (j <= i, forward mask M) or upper (i >= j
/// seen from the key row, mask M^T) triangle, weight scale * exp(g_row - g_col) or exp(g_col - g_row).
template <int C, bool Upper, class T>
LASP_DEVICE void store_masked(T* sp, const float (&A)[1][C / 8][4], const float* g, float scale, int m0, int lane) {
  const int gid = lane >> 2, t4 = lane & 3;
  const int r0 = m0 + gid, r1 = r0 + 8;
  const float g0 = g[r0], g1 = g[r1];
  const SwzAddr<C> ps(sp, r0, 2 * t4);
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
    st_shared_u32(ps.at(0, 8 * j), MmaOp<T>::pack(A[0][j][0] * w00, A[0][j][1] * w01));
    st_shared_u32(ps.at(8, 8 * j), MmaOp<T>::pack(A[0][j][2] * w10, A[0][j][3] * w11));
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
/// kWholeTiles: also a branch-free path for whole tiles (valid_rows >= 16 MT, every chunk but a
/// tail). The per-row tests make nvcc wrap each store in BSSY/BSYNC/BRA + ISETP; measured on
/// H200 (bench/RESULTS.md, "store_rows"): FwdOutput with gates -4.5%, but BwdDq + BwdDkDv +2%
/// (more registers live across the chunk loop), so only FwdOutput asks for it.
template <int MT, int NT, bool kWholeTiles = false, class G>
LASP_DEVICE void store_rows(G* g, index_t ld, const float (&acc)[MT][NT][4], int lane, int valid_rows) {
  const int gid = lane >> 2, t4 = lane & 3;
  if constexpr (kWholeTiles) {
    if (valid_rows >= 16 * MT) {
      G* r0 = g + index_t(gid) * ld + 2 * t4;
      G* r1 = r0 + 8 * ld;
      #pragma unroll
      for (int i = 0; i < MT; ++i) {
        #pragma unroll
        for (int j = 0; j < NT; ++j) {
          store2(r0 + index_t(16 * i) * ld + 8 * j, acc[i][j][0], acc[i][j][1]);
          store2(r1 + index_t(16 * i) * ld + 8 * j, acc[i][j][2], acc[i][j][3]);
        }
      }
      return;
    }
  }
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

/// Row dot products of accumulators (rows m0+gid, m0+gid+8) with a swizzled smem tile; the
/// result is complete in every lane of the quad.
template <int NT, int X, class T>
LASP_DEVICE void row_dots(const float (&A)[1][NT][4], const T* s, int m0, int lane, float& d0, float& d1) {
  const int gid = lane >> 2, t4 = lane & 3;
  d0 = 0.f; d1 = 0.f;
  const SwzAddr<X> ps(s, m0 + gid, 2 * t4);  // m0 % 8 == 0: rows m0 + gid and + 8 share the swizzle key
  #pragma unroll
  for (int j = 0; j < NT; ++j) {
    const float2 x0 = MmaOp<T>::unpack(ld_shared_u32(ps.at(0, 8 * j)));
    const float2 x1 = MmaOp<T>::unpack(ld_shared_u32(ps.at(8, 8 * j)));
    d0 += A[0][j][0] * x0.x + A[0][j][1] * x0.y;
    d1 += A[0][j][2] * x1.x + A[0][j][3] * x1.y;
  }
  d0 += __shfl_xor_sync(0xffffffffu, d0, 1); d0 += __shfl_xor_sync(0xffffffffu, d0, 2);
  d1 += __shfl_xor_sync(0xffffffffu, d1, 1); d1 += __shfl_xor_sync(0xffffffffu, d1, 2);
}

}  // namespace kernel::sm80
LASP_NAMESPACE_END
