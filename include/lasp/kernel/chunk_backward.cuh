#pragma once
// Backward chunk kernels (math.md sections 2-3), same decomposition as the forward: one CTA per
// (segment, b, h), 4 warps, the D x E state (or state gradient) in registers.
//   bwd_summary: M_seg = scale sum_t exp(c_t - c_segstart) q_t do_t^T, by a reverse walk
//                M <- exp(G) M + scale (diag(exp(g)) Q)^T dO                        (reads Q, dO)
//   bwd_dq     : forward walk with S: dq = scale ((dO V^T) .* M) K + scale diag(exp(g)) dO S^T
//                (reads dO, K, V; Q too for gates, to form q.dq)
//   bwd_dkdv   : reverse walk with dS:
//                dv = scale ((K Q^T) .* M^T) dO + diag(exp(G - g)) K dS
//                dk = scale ((V dO^T) .* M^T) Q + diag(exp(G - g)) V dS^T
//                dS <- exp(G) dS + scale (diag(exp(g)) Q)^T dO                       (reads Q, K, V, dO)
//                gates: dc_t = q.dq - k.dk, reverse-summed within the segment into dg.
#include "chunk_forward.cuh"
#include "tile_ops.cuh"

namespace lasp::kernel {

template <class T, int D, int E, int C>
struct BwdSmem {
  alignas(128) T q[C * D];
  alignas(128) T k[C * D];
  alignas(128) T v[C * E];
  alignas(128) T dO[C * E];
  alignas(128) T s[D * E];
  alignas(128) T p[C * C];
  float g[C];
  float kdk[C];
};

/// Scale row i of a swizzled [C][X] tile by f * exp(g_i).
template <int C, int X, class T>
LASP_DEVICE void scale_rows_from_start(T* s, const float* g, float f, int tid) {
  for (int i = tid; i < C * X / 8; i += kThreads) {
    const int r = i / (X / 8), c = (i % (X / 8)) * 8;
    const float w = f * __expf(g[r]);
    T* p = s + Swz<X>::off(r, c);
    #pragma unroll
    for (int e = 0; e < 8; ++e) p[e] = MmaOp<T>::from(MmaOp<T>::to(p[e]) * w);
  }
}

/// Row dot products of accumulators (rows m0+gid, m0+gid+8) with a swizzled smem tile; the
/// result is complete in every lane of the quad.
template <int NT, int X, class T>
LASP_DEVICE void row_dots(const float (&A)[1][NT][4], const T* s, int m0, int lane, float& d0, float& d1) {
  const int gid = lane >> 2, t4 = lane & 3;
  d0 = 0.f; d1 = 0.f;
  #pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int c = 8 * j + 2 * t4;
    d0 += A[0][j][0] * MmaOp<T>::to(s[Swz<X>::off(m0 + gid, c)]) + A[0][j][1] * MmaOp<T>::to(s[Swz<X>::off(m0 + gid, c + 1)]);
    d1 += A[0][j][2] * MmaOp<T>::to(s[Swz<X>::off(m0 + gid + 8, c)]) + A[0][j][3] * MmaOp<T>::to(s[Swz<X>::off(m0 + gid + 8, c + 1)]);
  }
  d0 += __shfl_xor_sync(0xffffffffu, d0, 1); d0 += __shfl_xor_sync(0xffffffffu, d0, 2);
  d1 += __shfl_xor_sync(0xffffffffu, d1, 1); d1 += __shfl_xor_sync(0xffffffffu, d1, 2);
}

template <class T, class Decay, int D, int E, int C>
__global__ void __launch_bounds__(kThreads) bwd_summary(const ChunkParams<T, Decay> p) {
  constexpr int MT = D / 64, NT = E / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<SumSmem<op_for_t<T>, D, E, C>*>(smem_raw);  // k <- Q, v <- dO
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int seg = blockIdx.x;
  const index_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const index_t n_begin = seg * p.seg_len, n_end = imin(p.N, n_begin + p.seg_len);
  float M[MT][NT][4];
  zero_acc(M);
  auto issue = [&](index_t n0, int buf) {
    const int len = int(imin(index_t(C), n_end - n0));
    load_tile_async<C, D, kThreads>(sm.k[buf], p.q.at(b, n0, h), p.q.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.v[buf], p.dout.at(b, n0, h), p.dout.stride_n, len, tid);
    cp_async_commit();
    if (warp == 0) chunk_log_decay<C>(sm.g[buf], p.decay, b, n0, h, len, lane, p.status, true);
  };
  const index_t last = n_begin + (n_end - 1 - n_begin) / C * C;
  if (n_begin < n_end) issue(last, 0);
  int buf = 0;
  for (index_t n0 = last; n0 >= n_begin; n0 -= C, buf ^= 1) {
    if (n0 - C >= n_begin) {
      issue(n0 - C, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    scale_acc(M, __expf(sm.g[buf][C - 1]));
    // M += scale (diag(exp(g)) Q)^T dO, the weights applied to the A fragments in registers.
    warp_mma<MT, NT, C, true, true, D, E>(M, sm.k[buf], warp * (D / 4), sm.v[buf], 0, lane,
                                          FromStartScale{sm.g[buf], p.scale});
    __syncthreads();
  }
  const int gid = lane >> 2, t4 = lane & 3;
  float* out = p.seg_M + (index_t(seg) * p.B * p.H + bh) * D * E;
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int r = warp * (D / 4) + 16 * i + gid, c = 8 * j + 2 * t4;
      *reinterpret_cast<float2*>(out + r * E + c) = make_float2(M[i][j][0], M[i][j][1]);
      *reinterpret_cast<float2*>(out + (r + 8) * E + c) = make_float2(M[i][j][2], M[i][j][3]);
    }
}

/// bwd_dq: K, V, dO double-buffered; the state stays in registers, row-partitioned (warp w owns
/// state rows [w D/4, (w+1) D/4)), which is also the dq column slice the warp computes, so the
/// state operand of dO S^T comes straight from its registers.
template <class T, int D, int E, int C>
struct DqSmem {
  alignas(128) T k[2][C * D];
  alignas(128) T v[2][C * E];
  alignas(128) T dO[2][C * E];
  alignas(128) T p[C * C];
  float g[2][C];
  float qdq[4][C];  // gates: per-warp partial sums of q.dq
};

template <class T, class Decay, int D, int E, int C>
__global__ void __launch_bounds__(kThreads) bwd_dq(const ChunkParams<T, Decay> p) {
  constexpr int DW = D / 4, MS = DW / 16, NS = E / 8, NQ = DW / 8, MO = C / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<DqSmem<op_for_t<T>, D, E, C>*>(smem_raw);
  if (p.status && *p.status) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, t4 = lane & 3;
  const int seg = blockIdx.x;
  const index_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const index_t n_begin = seg * p.seg_len, n_end = imin(p.N, n_begin + p.seg_len);
  const index_t sidx = index_t(seg) * p.B * p.H + bh;
  const int d0 = warp * DW;
  float S[MS][NS][4];
  load_state<MS, NS, E>(S, p.seg_Apre[sidx], p.rank_state + bh * D * E, p.seg_S + sidx * D * E, d0, 0, lane);
  const int m0 = warp * 16;
  ChunkDecay<C, Decay> next_decay;
  auto issue = [&](index_t n0, int buf) {
    const int len = int(imin(index_t(C), n_end - n0));
    load_tile_async<C, D, kThreads>(sm.k[buf], p.k.at(b, n0, h), p.k.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.v[buf], p.v.at(b, n0, h), p.v.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.dO[buf], p.dout.at(b, n0, h), p.dout.stride_n, len, tid);
    cp_async_commit();
    if (warp == 0) {
      next_decay.load(p.decay, b, n0, h, len, lane);
      // Without per-token values there is nothing to wait for: fill the buffer now, off the
      // critical path (gates are scanned at the end of the chunk, when their loads have landed).
      if constexpr (!Decay::kPerToken) next_decay.finish(sm.g[buf], p.decay, h, lane);
    }
  };
  // Gates: q.dq of a chunk is summed over the warps' column slices through shared memory and
  // written out one barrier later.
  auto flush_qdq = [&](index_t n0, int len) {
    if (tid < len) p.qdq[bh * p.N + n0 + tid] = sm.qdq[0][tid] + sm.qdq[1][tid] + sm.qdq[2][tid] + sm.qdq[3][tid];
  };
  if (n_begin < n_end) {
    issue(n_begin, 0);
    if constexpr (Decay::kPerToken) {
      if (warp == 0) next_decay.finish(sm.g[0], p.decay, h, lane);
    }
  }
  int buf = 0;
  index_t prev_n0 = -1;
  int prev_len = 0;
  for (index_t n0 = n_begin; n0 < n_end; n0 += C, buf ^= 1) {
    const int len = int(imin(index_t(C), n_end - n0));
    const bool more = n0 + C < n_end;
    if (more) {
      issue(n0 + C, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const op_for_t<T>* sk = sm.k[buf];
    const op_for_t<T>* sv = sm.v[buf];
    const op_for_t<T>* sdo = sm.dO[buf];
    const float* g = sm.g[buf];
    {  // masked dO V^T, this warp's 16 rows
      float A[1][C / 8][4];
      zero_acc(A);
      warp_mma<1, C / 8, E, false, false, E, E>(A, sdo, m0, sv, 0, lane);
      store_masked<C, false>(sm.p, A, g, p.scale, m0, lane);
    }
    if constexpr (Decay::kHasGradient) {
      if (prev_n0 >= 0) flush_qdq(prev_n0, prev_len);
    }
    __syncthreads();
    {
      float dQ[MO][NQ][4];
      zero_acc(dQ);
      warp_mma_bstate<MO, NQ, E / 16, E>(dQ, sdo, S, lane);  // dO S^T (own column slice of dq)
      scale_rows(dQ, lane, [&](int r) { return p.scale * __expf(g[r]); });
      warp_mma<MO, NQ, C, false, true, C, D>(dQ, sm.p, 0, sk, d0, lane);  // + P K
      store_rows<MO, NQ>(p.dq.at(b, n0, h) + d0, p.dq.stride_n, dQ, lane, len);
      if constexpr (Decay::kHasGradient) {  // q.dq over this warp's columns, summed in shared memory
        const T* qg = p.q.at(b, n0, h) + d0;
        #pragma unroll
        for (int i = 0; i < MO; ++i) {
          const int r0 = 16 * i + gid, r1 = r0 + 8;
          float s0 = 0.f, s1 = 0.f;
          #pragma unroll
          for (int j = 0; j < NQ; ++j) {
            const int c = 8 * j + 2 * t4;
            if (r0 < len) {
              const float2 q = load2(qg + index_t(r0) * p.q.stride_n + c);
              s0 += q.x * dQ[i][j][0] + q.y * dQ[i][j][1];
            }
            if (r1 < len) {
              const float2 q = load2(qg + index_t(r1) * p.q.stride_n + c);
              s1 += q.x * dQ[i][j][2] + q.y * dQ[i][j][3];
            }
          }
          s0 += __shfl_xor_sync(0xffffffffu, s0, 1); s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
          s1 += __shfl_xor_sync(0xffffffffu, s1, 1); s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
          if (t4 == 0) { sm.qdq[warp][r0] = s0; sm.qdq[warp][r1] = s1; }
        }
      }
    }
    // S <- exp(G) S + (diag(exp(G - g)) K)^T V   (own rows)
    const float G = g[C - 1];
    scale_acc(S, __expf(G));
    warp_mma<MS, NS, C, true, true, D, E>(S, sk, d0, sv, 0, lane, ToEndScale{g, G});
    if constexpr (Decay::kPerToken) {
      if (more && warp == 0) next_decay.finish(sm.g[buf ^ 1], p.decay, h, lane);
    }
    prev_n0 = n0;
    prev_len = len;
    __syncthreads();
  }
  if constexpr (Decay::kHasGradient) {
    if (prev_n0 >= 0) flush_qdq(prev_n0, prev_len);
  }
}

/// bwd_dkdv: each warp owns 16 key rows of the chunk (all columns of dk and dv) and D/4 rows of
/// dS, shared with the other warps through shared memory.
template <class T, class Decay, int D, int E, int C>
__global__ void __launch_bounds__(kThreads) bwd_dkdv(const ChunkParams<T, Decay> p) {
  constexpr int MT = D / 64, NT = E / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<BwdSmem<op_for_t<T>, D, E, C>*>(smem_raw);
  if (p.status && *p.status) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2;
  const int seg = blockIdx.x;
  const index_t bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const index_t n_begin = seg * p.seg_len, n_end = imin(p.N, n_begin + p.seg_len);
  const index_t sidx = index_t(seg) * p.B * p.H + bh;
  float dS[MT][NT][4];
  load_state<MT, NT, E>(dS, p.seg_Apost[sidx], p.rank_grad + bh * D * E, p.seg_M + sidx * D * E, warp * (D / 4), 0, lane);
  const int m0 = warp * 16;
  float carry = 0.f;  // gates: sum of dc over the later chunks of this segment
  for (index_t n0 = n_begin + (n_end - 1 - n_begin) / C * C; n0 >= n_begin; n0 -= C) {
    const int len = int(imin(index_t(C), n_end - n0));
    load_tile_async<C, D, kThreads>(sm.q, p.q.at(b, n0, h), p.q.stride_n, len, tid);
    load_tile_async<C, D, kThreads>(sm.k, p.k.at(b, n0, h), p.k.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.v, p.v.at(b, n0, h), p.v.stride_n, len, tid);
    load_tile_async<C, E, kThreads>(sm.dO, p.dout.at(b, n0, h), p.dout.stride_n, len, tid);
    cp_async_commit();
    store_acc<MT, NT, E>(sm.s, dS, warp * (D / 4), 0, lane, NoScale{});
    if (warp == 0) chunk_log_decay<C>(sm.g, p.decay, b, n0, h, len, lane, p.status, false);
    cp_async_wait<0>();
    __syncthreads();
    const float G = sm.g[C - 1];
    const float w0 = __expf(G - sm.g[m0 + gid]), w1 = __expf(G - sm.g[m0 + gid + 8]);
    {  // dv = scale ((K Q^T) .* M^T) dO + diag(exp(G - g)) K dS
      float A[1][C / 8][4];
      zero_acc(A);
      warp_mma<1, C / 8, D, false, false, D, D>(A, sm.k, m0, sm.q, 0, lane);
      store_masked<C, true>(sm.p, A, sm.g, p.scale, m0, lane);
      __syncwarp();
      float dV[1][NT][4];
      zero_acc(dV);
      warp_mma<1, NT, D, false, true, D, E>(dV, sm.k, m0, sm.s, 0, lane);
      #pragma unroll
      for (int j = 0; j < NT; ++j) { dV[0][j][0] *= w0; dV[0][j][1] *= w0; dV[0][j][2] *= w1; dV[0][j][3] *= w1; }
      warp_mma<1, NT, C, false, true, C, E>(dV, sm.p, m0, sm.dO, 0, lane);
      store_rows<1, NT>(p.dv.at(b, n0 + m0, h), p.dv.stride_n, dV, lane, len - m0);
    }
    __syncwarp();
    {  // dk = scale ((V dO^T) .* M^T) Q + diag(exp(G - g)) V dS^T
      float A[1][C / 8][4];
      zero_acc(A);
      warp_mma<1, C / 8, E, false, false, E, E>(A, sm.v, m0, sm.dO, 0, lane);
      store_masked<C, true>(sm.p, A, sm.g, p.scale, m0, lane);
      __syncwarp();
      float dK[1][D / 8][4];
      zero_acc(dK);
      warp_mma<1, D / 8, E, false, false, E, E>(dK, sm.v, m0, sm.s, 0, lane);
      #pragma unroll
      for (int j = 0; j < D / 8; ++j) { dK[0][j][0] *= w0; dK[0][j][1] *= w0; dK[0][j][2] *= w1; dK[0][j][3] *= w1; }
      warp_mma<1, D / 8, C, false, true, C, D>(dK, sm.p, m0, sm.q, 0, lane);
      store_rows<1, D / 8>(p.dk.at(b, n0 + m0, h), p.dk.stride_n, dK, lane, len - m0);
      if constexpr (Decay::kHasGradient) {
        float d0, d1;
        row_dots<D / 8, D>(dK, sm.k, m0, lane, d0, d1);
        if ((lane & 3) == 0) { sm.kdk[m0 + gid] = d0; sm.kdk[m0 + gid + 8] = d1; }
      }
    }
    __syncthreads();
    if constexpr (Decay::kHasGradient) {
      if (warp == 0) {  // reverse inclusive scan of dc over this chunk's rows, plus the carry
        constexpr int kPer = (C + 31) / 32;
        float v[kPer], run = 0.f;
        #pragma unroll
        for (int e = kPer - 1; e >= 0; --e) {
          const int i = lane * kPer + e;
          const float dc = i < len ? p.qdq[bh * p.N + n0 + i] - sm.kdk[i] : 0.f;
          run += dc;
          v[e] = run;
        }
        float tot = run;  // inclusive scan from the top lane down
        #pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const float y = __shfl_down_sync(0xffffffffu, tot, o);
          if (lane + o < 32) tot += y;
        }
        const float after = tot - run + carry;
        #pragma unroll
        for (int e = 0; e < kPer; ++e) {
          const int i = lane * kPer + e;
          if (i < len) p.decay.dg(b, n0 + i, h) = after + v[e];
        }
        carry += __shfl_sync(0xffffffffu, tot, 0);
      }
    }
    // dS <- exp(G) dS + scale (diag(exp(g)) Q)^T dO
    scale_rows_from_start<C, D>(sm.q, sm.g, p.scale, tid);
    __syncthreads();
    scale_acc(dS, __expf(G));
    warp_mma<MT, NT, C, true, true, D, E>(dS, sm.q, warp * (D / 4), sm.dO, 0, lane);
    __syncthreads();
  }
  if constexpr (Decay::kHasGradient) {
    if (tid == 0) p.seg_dc[sidx] = carry;
  }
}

}  // namespace lasp::kernel
