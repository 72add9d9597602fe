#pragma once
// bwd_dq (sm_90a): the sm_80 BwdDq's product, dq = scale ((dO V^T) .* M) K +
// scale diag(exp(g)) dO S^T chunk by chunk with the state S carried forward, computed with
// wgmma by two warpgroups. Reads dO, K, V (and Q for gates, to form q.dq per token).
//
// Partition: warpgroup w owns state rows [w D/2, (w+1) D/2), which are the dq columns it
// computes; both compute the masked scores P = dO V^T (64 x 64). Per chunk and warpgroup:
//   P  = dO V^T               A: dO (smem, K-major)  B: V (smem, K-major)
//   dq = dO S^T               A: dO                  B: S (bf16 copy, K-major: rows d, columns e)
//   dq = diag(scale e^g) dq + (P .* M) K              A: P (registers)  B: K (smem, MN-major)
//   S  = e^G S + (diag(e^(G-g)) K)^T V                A: K^T (registers)  B: V (MN-major)
// bf16 operands only, D = 128 (one 64-column atom of K per warpgroup).
#include "../sm80/chunk_walk.cuh"
#include "../sm80/params.cuh"
#include "../sm80/tile_ops.cuh"
#include "wgmma.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm90 {

template <class T, class Decay, int D, int E, int C>
struct BwdDq {
  using Params = sm80::ChunkParams<T, Decay>;
  using Op = sm80::op_for_t<T>;
  static_assert(std::is_same_v<Op, __nv_bfloat16>, "bf16 tensor-core operands");
  static_assert(D == 128 && (E == 64 || E == 128) && C == 64, "one 64-column atom of K per warpgroup");
  // kSplit as in FwdOutput: the two halves of D in two CTAs of one warpgroup (each loads its half
  // of K); decays with a gradient keep both in one CTA (q.dq sums the halves in shared memory).
  static constexpr bool kSplit = kSm90Split && !Decay::kHasGradient;
  static constexpr int kThreads = kSplit ? 128 : 256;
  static constexpr int kStages = kSplit ? 2 : kSm90Stages;  // chunks of tiles in flight + 1
  static constexpr int DW = D / 2;  // state rows = dq columns per warpgroup
  static constexpr int DL = kSplit ? DW : D;  // columns of K (rows of S) a CTA holds
  struct SharedStorage {
    alignas(1024) Op k[kStages][C * DL];
    alignas(1024) Op v[kStages][C * E];
    alignas(1024) Op dO[kStages][C * E];
    alignas(1024) Op s[DL * E];  // bf16 copy of the state entering the chunk (this CTA's rows)
    float g[kStages][C];
    float qdq[2][2][C];  // decays with a gradient: [chunk parity][warpgroup] partial sums of q.dq
  };
  static dim3 grid(const Params& p) {
    dim3 g = sm80::chunk_grid(p);
    if (kSplit) g.x *= 2;  // the two halves of a (b, h, segment) adjacent: launched together, Q/K shared in L2
    return g;
  }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    using namespace sm80;
    constexpr int NA = E / 64;  // 64-column atoms of the state per row
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    if (p.status && *p.status) return;
    const int tid = threadIdx.x, lane = tid & 31, wq = (tid >> 5) & 3;
    const int wg = kSplit ? int(blockIdx.x & 1) : tid >> 7;  // which half of D
    const int gid = lane >> 2, t4 = lane & 3;
    const CtaCoords cta = coords(p);
    const index_t b = cta.b, h = cta.h, bh = cta.bh;
    const int d0 = wg * DW;
    const int dl = kSplit ? 0 : d0;  // the same rows in this CTA's K and S tiles
    // State rows d0 + 16 wq + gid (+8), columns 64 a + 8 j + 2 t4 (+1): S[a] is one m64n64 tile.
    float S[NA][8][4];
    {
      const index_t sidx = cta.seg_index(p);
      const float a = p.seg_Apre[sidx];
      const float* X = cta.rank_state(p) + bh * D * E;
      const float* Y = p.seg_S + sidx * D * E;
      #pragma unroll
      for (int at = 0; at < NA; ++at)
        #pragma unroll
        for (int j = 0; j < 8; ++j)
          #pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int r = d0 + 16 * wq + gid + 8 * hf, c = 64 * at + 8 * j + 2 * t4;
            const float2 y = *reinterpret_cast<const float2*>(Y + r * E + c);
            float2 x = make_float2(0.f, 0.f);
            if (X) x = *reinterpret_cast<const float2*>(X + r * E + c);
            S[at][j][2 * hf] = a * x.x + y.x;
            S[at][j][2 * hf + 1] = a * x.y + y.y;
          }
    }
    auto store_state_copy = [&] {  // bf16 S rows of this warpgroup into sm.s ([D][E] atom tile)
      #pragma unroll
      for (int at = 0; at < NA; ++at)
        #pragma unroll
        for (int j = 0; j < 8; ++j)
          #pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int r = d0 + 16 * wq + gid + 8 * hf, c = 64 * at + 8 * j + 2 * t4;
            *reinterpret_cast<std::uint32_t*>(sm.s + Atoms<DL>::off(r - d0 + dl, c)) =
                MmaOp<Op>::pack(S[at][j][2 * hf], S[at][j][2 * hf + 1]);
          }
      fence_async_smem();
    };
    store_state_copy();
    // q.dq of a chunk: written per warpgroup at the end of its body, summed at the start of the
    // next chunk's (after the walk's barrier); two parities, so the writes of chunk i + 1 never
    // meet the reads of chunk i.
    int parity = 0;
    auto flush_qdq = [&](index_t n0, int len, int par) {
      if (tid < len) p.qdq[bh * p.N + n0 + tid] = sm.qdq[par][0][tid] + sm.qdq[par][1][tid];
    };
    index_t prev_n0 = -1;
    int prev_len = 0;
    const ChunkWalk<C, kStages, false, Decay, true, true> walk{cta.n_begin, cta.n_end, p.decay, b, h, nullptr};
    walk.run(
        sm.g,
        [&](index_t n0, int len, int buf) {
          load_tile_async<C, DL, kThreads, Atoms<C>>(sm.k[buf], p.k.at(b, n0, h) + (d0 - dl), p.k.stride_n, len, tid);
          load_tile_async<C, E, kThreads, Atoms<C>>(sm.v[buf], p.v.at(b, n0, h), p.v.stride_n, len, tid);
          load_tile_async<C, E, kThreads, Atoms<C>>(sm.dO[buf], p.dout.at(b, n0, h), p.dout.stride_n, len, tid);
          cp_async_commit();
        },
        [&](index_t n0, int len, int buf) {
          const Op* sk = sm.k[buf];
          const Op* sv = sm.v[buf];
          const Op* sdo = sm.dO[buf];
          const float* g = sm.g[buf];
          if constexpr (Decay::kHasGradient) {  // the previous chunk's q.dq (its partial sums are complete)
            if (prev_n0 >= 0) flush_qdq(prev_n0, prev_len, parity ^ 1);
          }
          float P[C / 8][4], dQ[DW / 8][4];
          zero(P);
          zero(dQ);
          wg_fence();
          #pragma unroll
          for (int kk = 0; kk < E / 16; ++kk) Wgmma<64>::ss<0, 0>(P, desc_k<C>(sdo, kk), desc_k<C>(sv, kk));  // dO V^T
          wg_commit();
          #pragma unroll
          for (int kk = 0; kk < E / 16; ++kk)  // dO S^T: B = rows [d0, d0 + 64) of the [D][E] state tile, K-major
            Wgmma<64>::ss<0, 0>(dQ, desc_k<C>(sdo, kk), smem_desc(sm.s + (kk >> 2) * (DL * 64) + dl * 64 + (kk & 3) * 16, 16, 1024));
          wg_commit();
          const int r0 = 16 * wq + gid, r1 = r0 + 8;
          const float g0 = g[r0], g1 = g[r1];
          wg_wait<1>();
          #pragma unroll
          for (int j = 0; j < C / 8; ++j) {
            const int c = 8 * j + 2 * t4;
            const float gc0 = g[c], gc1 = g[c + 1];
            P[j][0] = c <= r0 ? P[j][0] * p.scale * __expf(g0 - gc0) : 0.f;
            P[j][1] = c + 1 <= r0 ? P[j][1] * p.scale * __expf(g0 - gc1) : 0.f;
            P[j][2] = c <= r1 ? P[j][2] * p.scale * __expf(g1 - gc0) : 0.f;
            P[j][3] = c + 1 <= r1 ? P[j][3] * p.scale * __expf(g1 - gc1) : 0.f;
          }
          std::uint32_t pa[C / 16][4];
          #pragma unroll
          for (int kk = 0; kk < C / 16; ++kk) acc_to_a<Op>(pa[kk], P, kk);
          wg_wait<0>();
          {
            const float f0 = p.scale * __expf(g0), f1 = p.scale * __expf(g1);
            #pragma unroll
            for (int j = 0; j < DW / 8; ++j) { dQ[j][0] *= f0; dQ[j][1] *= f0; dQ[j][2] *= f1; dQ[j][3] *= f1; }
          }
          wg_fence();
          #pragma unroll
          for (int kk = 0; kk < C / 16; ++kk) Wgmma<64>::rs<1>(dQ, pa[kk], desc_mn<C>(sk, dl / 64, kk));  // + P K
          wg_commit();
          // S <- exp(G) S + (diag(exp(G - g)) K)^T V, this warpgroup's rows.
          const float G = g[C - 1];
          #pragma unroll
          for (int at = 0; at < NA; ++at) {
            #pragma unroll
            for (int j = 0; j < 8; ++j)
              #pragma unroll
              for (int e = 0; e < 4; ++e) S[at][j][e] *= __expf(G);
          }
          float wk[C / 16][4];
          #pragma unroll
          for (int kk = 0; kk < C / 16; ++kk) a_weights(wk[kk], kk, lane, ToEndScale{g, G});
          std::uint32_t ka[C / 16][4];
          #pragma unroll
          for (int kk = 0; kk < C / 16; ++kk) load_a_trans<C>(ka[kk], sk, dl + 16 * wq, kk, lane, wk[kk]);
          wg_fence();
          #pragma unroll
          for (int at = 0; at < NA; ++at)
            #pragma unroll
            for (int kk = 0; kk < C / 16; ++kk) Wgmma<64>::rs<1>(S[at], ka[kk], desc_mn<C>(sv, at, kk));
          wg_commit();
          wg_wait<0>();
          float(&dQ1)[1][DW / 8][4] = *reinterpret_cast<float(*)[1][DW / 8][4]>(&dQ);
          store_rows<1, DW / 8>(p.dq.at(b, n0 + 16 * wq, h) + d0, p.dq.stride_n, dQ1, lane, len - 16 * wq);
          if constexpr (Decay::kHasGradient) {  // q.dq over this warpgroup's columns
            const T* qg = p.q.at(b, n0, h) + d0;
            float s0 = 0.f, s1 = 0.f;
            #pragma unroll
            for (int j = 0; j < DW / 8; ++j) {
              const int c = 8 * j + 2 * t4;
              if (r0 < len) {
                const float2 q = load2(qg + index_t(r0) * p.q.stride_n + c);
                s0 += q.x * dQ[j][0] + q.y * dQ[j][1];
              }
              if (r1 < len) {
                const float2 q = load2(qg + index_t(r1) * p.q.stride_n + c);
                s1 += q.x * dQ[j][2] + q.y * dQ[j][3];
              }
            }
            s0 += __shfl_xor_sync(0xffffffffu, s0, 1); s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
            s1 += __shfl_xor_sync(0xffffffffu, s1, 1); s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
            if (t4 == 0) { sm.qdq[parity][wg][r0] = s0; sm.qdq[parity][wg][r1] = s1; }
          }
          store_state_copy();
          prev_n0 = n0;
          prev_len = len;
          parity ^= 1;
        });
    if constexpr (Decay::kHasGradient) {
      if (prev_n0 >= 0) flush_qdq(prev_n0, prev_len, parity ^ 1);  // after the walk's closing barrier
    }
  }

 private:
  /// CtaCoords of the sm_80 grid; with kSplit, x = 2 (b*H + h) + half.
  LASP_DEVICE static sm80::CtaCoords coords(const Params& p) {
    sm80::CtaCoords c = sm80::CtaCoords::of(p);
    if constexpr (kSplit) {
      c.bh = blockIdx.x >> 1;
      c.b = c.bh / p.H;
      c.h = c.bh % p.H;
    }
    return c;
  }
  template <int NT>
  LASP_DEVICE static void zero(float (&a)[NT][4]) {
    #pragma unroll
    for (int j = 0; j < NT; ++j) a[j][0] = a[j][1] = a[j][2] = a[j][3] = 0.f;
  }
};

}  // namespace kernel::sm90
LASP_NAMESPACE_END
