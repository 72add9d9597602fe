#pragma once
// Named operations on a D x E fp32 state (or state gradient) held in a warp's mma accumulator
// tiles: load it from global memory, decay-and-accumulate one chunk into it, store it.
#include "mma.cuh"
#include "tile_ops.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

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

/// S <- f S + A^T B over the K rows of a chunk: A stored [K][M] (keys, or queries), B stored
/// [K][N] (values, or output gradients), the rows of A weighted by w(k) in registers. With
/// f = exp(G) and w(k) = exp(G - g_k) this is the chunk's state update (math.md section 2).
template <int K, int ColsA, int ColsB, int MT, int NT, class Op, class KScale = NoKScale>
LASP_DEVICE void update_state(float (&S)[MT][NT][4], float f, const Op* sA, int m0, const Op* sB, int n0, int lane,
                              KScale w = {}) {
  scale_acc(S, f);
  mma_atb<MT, NT, K, ColsA, ColsB>(S, sA, m0, sB, n0, lane, w);
}

/// Store accumulator tiles covering rows [r0, r0 + 16 MT), columns [0, 8 NT) of a fp32 state
/// with row stride E.
template <int E, int MT, int NT>
LASP_DEVICE void store_state(float* out, const float (&S)[MT][NT][4], int r0, int lane) {
  const int gid = lane >> 2, t4 = lane & 3;
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = r0 + 16 * i + gid, c = 8 * j + 2 * t4;
      *reinterpret_cast<float2*>(out + r * E + c) = make_float2(S[i][j][0], S[i][j][1]);
      *reinterpret_cast<float2*>(out + (r + 8) * E + c) = make_float2(S[i][j][2], S[i][j][3]);
    }
}

}  // namespace kernel::sm80
LASP_NAMESPACE_END
