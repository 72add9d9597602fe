#pragma once
// Small fp32 kernels on D x E states: the scan combine, the fold over a rank's segments, and the
// gate fix-ups. They move B*H*D*E floats, independent of N.
#include <cuda_runtime.h>
#include "../config.hpp"

namespace lasp::kernel {

/// out[i,:] = A[i] * P[i,:] + L[i,:]; A null = 1, P null = 0; out may alias P or L.
template <int = 0>
__global__ void combine_states(float* out, const float* A, const float* P, const float* L, index_t bh, index_t de) {
  const index_t n = bh * de;
  for (index_t x = blockIdx.x * index_t(blockDim.x) + threadIdx.x; x < n; x += index_t(gridDim.x) * blockDim.x) {
    const index_t i = x / de;
    const float a = A ? A[i] : 1.f;
    out[x] = (P ? a * P[x] : 0.f) + L[x];
  }
}

/// Fold the per-segment summaries of each (b,h), in place. Forward (Reverse = false):
/// seg_S[i] <- X_i = state after segments < i from zero, Apre[i] = prod_{j<i} A_j; rank summary
/// (A_r, L_r) = fold of all. Backward (Reverse = true): the same from the last segment down
/// (Y_i, Apost[i] = prod_{j>i} A_j; rank (A_r, M_r)).
/// Grid: (B*H, ceil(D*E / blockDim)).
/// A failed device-side check (`status` non-zero) makes the rank summary NaN: the ranks after
/// this one then produce NaN outputs instead of silently wrong ones (this rank writes nothing).
template <bool Reverse>
__global__ void fold_segments(float* __restrict__ seg_S, const float* __restrict__ seg_A, float* __restrict__ seg_Apre,
                              int nseg, index_t bh_count, index_t de, float* __restrict__ rank_A,
                              float* __restrict__ rank_L, const unsigned* status) {
  const index_t bh = blockIdx.x;
  const index_t e = blockIdx.y * index_t(blockDim.x) + threadIdx.x;
  const bool lead = blockIdx.y == 0 && threadIdx.x == 0;
  float x = 0.f, a = 1.f;
  // The fold is a serial recurrence per element; load a batch of 8 segments' values up front so
  // the loads are in flight together instead of one latency per segment.
  constexpr int kBatch = 8;
  for (int k0 = 0; k0 < nseg; k0 += kBatch) {
    float Lb[kBatch], Ab[kBatch];
    #pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int k = k0 + u;
      const int i = Reverse ? nseg - 1 - k : k;
      const index_t idx = index_t(i) * bh_count + bh;
      Ab[u] = k < nseg ? seg_A[idx] : 1.f;
      Lb[u] = k < nseg && e < de ? seg_S[idx * de + e] : 0.f;
    }
    #pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int k = k0 + u;
      if (k >= nseg) break;
      const int i = Reverse ? nseg - 1 - k : k;
      const index_t idx = index_t(i) * bh_count + bh;
      if (e < de) seg_S[idx * de + e] = x;
      if (lead) seg_Apre[idx] = a;
      x = Ab[u] * x + Lb[u];
      a *= Ab[u];
    }
  }
  if (status && *status) x = a = __int_as_float(0x7fc00000);  // quiet NaN
  if (e < de && rank_L) rank_L[bh * de + e] = x;
  if (lead && rank_A) rank_A[bh] = a;
}

/// Gates: dg of segment i gets the dc totals of the later segments of this rank plus `extra`
/// (the final-state term on the last rank); dc_total[bh] = the rank's total. Grid: (nseg, B*H).
template <class DgTensor>
__global__ void gate_segment_fixup(DgTensor dg, const float* seg_dc, const float* extra, float* dc_total, int nseg,
                                   index_t H, index_t N, index_t seg_len, const unsigned* status) {
  if (*status) {  // a device-side check failed: dg stays untouched, later ranks' suffix goes NaN
    if (blockIdx.x == 0 && threadIdx.x == 0 && dc_total) dc_total[blockIdx.y] = __int_as_float(0x7fc00000);
    return;
  }
  const int seg = blockIdx.x;
  const index_t bh = blockIdx.y, b = bh / H, h = bh % H;
  float add = extra ? extra[bh] : 0.f;
  for (int j = seg + 1; j < nseg; ++j) add += seg_dc[index_t(j) * gridDim.y + bh];
  if (seg == 0 && threadIdx.x == 0 && dc_total) dc_total[bh] = add + seg_dc[bh];
  const index_t n_begin = seg * seg_len, n_end = (N < n_begin + seg_len ? N : n_begin + seg_len);
  if (add != 0.f)
    for (index_t n = n_begin + threadIdx.x; n < n_end; n += blockDim.x) dg(b, n, h) += add;
}

/// extra[bh] = <G[bh], S[bh]> over D*E (one block of 256 threads per (b,h)).
template <int = 0>
__global__ void state_dot(float* extra, const float* G, const float* S, index_t de) {
  __shared__ float red[32];
  const index_t bh = blockIdx.x;
  float acc = 0.f;
  for (index_t x = threadIdx.x; x < de; x += blockDim.x) acc += G[bh * de + x] * S[bh * de + x];
  for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    acc = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.f;
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x == 0) extra[bh] = acc;
  }
}

/// dg[b,:,h] += suffix[b*H + h]. Grid: (ceil(N/256), B*H).
template <class DgTensor>
__global__ void add_suffix(DgTensor dg, const float* suffix, index_t H, index_t N, const unsigned* status) {
  if (*status) return;
  const index_t bh = blockIdx.y, b = bh / H, h = bh % H;
  const index_t n = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (n < N) dg(b, n, h) += suffix[bh];
}

}  // namespace lasp::kernel
