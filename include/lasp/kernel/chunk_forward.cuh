#pragma once
// Forward chunk kernels. Parallel decomposition: a CTA of 4 warps owns one (b,h) and one segment
// of `seg_len` tokens of this rank and walks its chunks in order, keeping the D x E state in
// registers (warp w owns state rows [w D/4, (w+1) D/4)), so chunk states never touch HBM.
//   fwd_summary: L_seg = sum_j exp(c_end - c_j) k_j v_j^T, A_seg = exp(c_end - c_start)  (reads K, V)
//   fwd_output : O = scale (((Q K^T) .* M) V + diag(exp(g)) Q S_prev), S from the segment's
//                incoming state Apre * P_r + X_seg                                        (reads Q, K, V)
#include "params.cuh"
#include "tile_ops.cuh"

namespace lasp::kernel {

constexpr int kThreads = 128;  // 4 warps

/// fwd_output: Q, K, V double-buffered (the next chunk loads while this one computes), the
/// masked scores shared by the warps. The state stays in registers.
template <class T, int D, int E, int C>
struct FwdSmem {
  alignas(128) T k[2][C * D];
  alignas(128) T v[2][C * E];
  alignas(128) T q[2][C * D];
  alignas(128) T p[C * C];   // masked scores
  float g[2][C];
};

/// fwd_summary needs only K and V, double-buffered so the next chunk loads while this one computes.
template <class T, int D, int E, int C>
struct SumSmem {
  alignas(128) T k[2][C * D];
  alignas(128) T v[2][C * E];
  float g[2][C];
};

template <class T, class Decay, int D, int E, int C>
__global__ void __launch_bounds__(kThreads) fwd_summary(const ChunkParams<T, Decay> p) {
  constexpr int MT = D / 64, NT = E / 8;  // per warp: D/4 rows = MT m-tiles
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<SumSmem<op_for_t<T>, D, E, C>*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int seg = blockIdx.x;
  const index_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const index_t n_begin = seg * p.seg_len, n_end = imin(p.N, n_begin + p.seg_len);
  float S[MT][NT][4];
  zero_acc(S);
  float total = 0.f;
  auto issue = [&](index_t n0, int buf) {
    const int len = int(imin(index_t(C), n_end - n0));
    load_tile_async<C, D, kThreads>(sm.k[buf], p.k.at(b, n0, h), p.k.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.v[buf], p.v.at(b, n0, h), p.v.stride_n, len, tid);
    cp_async_commit();
    if (warp == 0) chunk_log_decay<C>(sm.g[buf], p.decay, b, n0, h, len, lane, p.status, true);
  };
  if (n_begin < n_end) issue(n_begin, 0);
  int buf = 0;
  for (index_t n0 = n_begin; n0 < n_end; n0 += C, buf ^= 1) {
    // Prefetch the next chunk into the other buffer (freed by the barrier that ended the last iteration).
    if (n0 + C < n_end) {
      issue(n0 + C, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const float G = sm.g[buf][C - 1];
    total += G;
    scale_acc(S, __expf(G));
    // S += (diag(exp(G - g)) K)^T V, the weights applied to the A fragments in registers.
    warp_mma<MT, NT, C, true, true, D, E>(S, sm.k[buf], warp * (D / 4), sm.v[buf], 0, lane, ToEndScale{sm.g[buf], G});
    __syncthreads();
  }
  // Write the segment summary (fp32).
  const int gid = lane >> 2, t4 = lane & 3;
  float* out = p.seg_S + (index_t(seg) * p.B * p.H + bh) * D * E;
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = warp * (D / 4) + 16 * i + gid, c = 8 * j + 2 * t4;
      *reinterpret_cast<float2*>(out + r * E + c) = make_float2(S[i][j][0], S[i][j][1]);
      *reinterpret_cast<float2*>(out + (r + 8) * E + c) = make_float2(S[i][j][2], S[i][j][3]);
    }
  if (tid == 0) p.seg_A[index_t(seg) * p.B * p.H + bh] = __expf(total);
}

/// Partition: warp w owns columns [w E/4, (w+1) E/4) of the state S (all D rows) and of the
/// output O (all C rows), so the state operand of Q S_prev is the warp's own slice (no CTA-wide
/// exchange of S); the masked scores P are computed 16 rows per warp and shared.
template <class T, class Decay, int D, int E, int C>
__global__ void __launch_bounds__(kThreads) fwd_output(const ChunkParams<T, Decay> p) {
  constexpr int EW = E / 4;             // state / output columns per warp
  constexpr int MS = D / 16, NS = EW / 8;  // state tiles per warp
  constexpr int MO = C / 16;            // output row tiles (all rows)
  static_assert(C == 16 * (kThreads / 32), "each warp owns 16 rows of the chunk's scores");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<FwdSmem<op_for_t<T>, D, E, C>*>(smem_raw);
  if (p.status && *p.status) return;  // a device-side check failed: leave outputs untouched
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int seg = blockIdx.x;
  const index_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const index_t n_begin = seg * p.seg_len, n_end = imin(p.N, n_begin + p.seg_len);
  const int e0 = warp * EW;
  // Incoming state of the segment: Apre * P_r + X_seg (this warp's columns).
  float S[MS][NS][4];
  {
    const index_t sidx = index_t(seg) * p.B * p.H + bh;
    load_state<MS, NS, E>(S, p.seg_Apre[sidx], p.rank_state + bh * D * E, p.seg_S + sidx * D * E, 0, e0, lane);
  }
  const int m0 = warp * 16;  // this warp's rows of the scores
  // Next chunk's decay values: loaded (into registers) with the next tiles, scanned into
  // sm.g at the end of this chunk, so their latency hides behind this chunk's work.
  ChunkDecay<C, Decay> next_decay;
  auto issue = [&](index_t n0, int buf) {
    const int len = int(imin(index_t(C), n_end - n0));
    load_tile_async<C, D, kThreads>(sm.q[buf], p.q.at(b, n0, h), p.q.stride_n, len, tid);
    load_tile_async<C, D, kThreads>(sm.k[buf], p.k.at(b, n0, h), p.k.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.v[buf], p.v.at(b, n0, h), p.v.stride_n, len, tid);
    cp_async_commit();
    if (warp == 0) {
      next_decay.load(p.decay, b, n0, h, len, lane);
      // Without per-token values there is nothing to wait for: fill the buffer now, off the
      // critical path (gates are scanned at the end of the chunk, when their loads have landed).
      if constexpr (!Decay::kPerToken) next_decay.finish(sm.g[buf], p.decay, h, lane);
    }
  };
  if (n_begin < n_end) {
    issue(n_begin, 0);
    if constexpr (Decay::kPerToken) {
      if (warp == 0) next_decay.finish(sm.g[0], p.decay, h, lane);
    }
  }
  int buf = 0;
  for (index_t n0 = n_begin; n0 < n_end; n0 += C, buf ^= 1) {
    const int len = int(imin(index_t(C), n_end - n0));
    const bool more = n0 + C < n_end;
    if (more) {
      issue(n0 + C, buf ^ 1);  // the other buffer was released by the barrier ending the last chunk
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const op_for_t<T>* sq = sm.q[buf];
    const op_for_t<T>* sk = sm.k[buf];
    const op_for_t<T>* sv = sm.v[buf];
    const float* g = sm.g[buf];
    // Intra-chunk scores of this warp's rows, masked by M_ij = exp(g_i - g_j) (j <= i), times scale.
    {
      float A[1][C / 8][4];
      zero_acc(A);
      warp_mma<1, C / 8, D, false, false, D, D>(A, sq, m0, sk, 0, lane);
      store_masked<C, false>(sm.p, A, g, p.scale, m0, lane);
    }
    __syncthreads();
    {
      float O[MO][NS][4];
      zero_acc(O);
      warp_mma_breg<MO, NS, MS, D>(O, sq, S, lane);  // Q S_prev, the state straight from registers
      scale_rows(O, lane, [&](int r) { return p.scale * __expf(g[r]); });
      warp_mma<MO, NS, C, false, true, C, E>(O, sm.p, 0, sv, e0, lane);  // + P V
      store_rows<MO, NS>(p.o.at(b, n0, h) + e0, p.o.stride_n, O, lane, len);
    }
    // S <- exp(G) S + (diag(exp(G - g)) K)^T V  (own columns; weights applied in registers)
    const float G = g[C - 1];
    scale_acc(S, __expf(G));
    warp_mma<MS, NS, C, true, true, D, E>(S, sk, 0, sv, e0, lane, ToEndScale{g, G});
    if constexpr (Decay::kPerToken) {
      if (more && warp == 0) next_decay.finish(sm.g[buf ^ 1], p.decay, h, lane);
    }
    __syncthreads();
  }
}

}  // namespace lasp::kernel
