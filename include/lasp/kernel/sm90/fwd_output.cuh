#pragma once
// fwd_output (sm_90a): the sm_80 FwdOutput's product, O = scale (((Q K^T) .* M) V +
// diag(exp(g)) Q S_prev) chunk by chunk with S carried from the segment's incoming state
// Apre * P_r + X_seg, computed with wgmma by two warpgroups. Reads Q, K, V; writes O.
//
// Partition: warpgroup w owns columns [w E/2, (w+1) E/2) of the state S (all D rows) and of O
// (all C rows); both compute the chunk's masked scores P = Q K^T (64 x 64, redundant: it costs
// C/(2E+...) of the chunk's work and saves a barrier and a shared tile). Per chunk and warpgroup:
//   P  = Q K^T                 A: Q (smem, K-major)  B: K (smem, K-major)
//   O  = Q S_prev              A: Q                  B: S (bf16 copy in smem, MN-major)
//   O  = diag(scale e^g) O + (P .* M) V              A: P (registers)   B: V (smem, MN-major)
//   S  = e^G S + (diag(e^(G-g)) K)^T V               A: K^T (registers, weighted) B: V
// The state stays in fp32 registers (D/64 tiles of 64 rows); its bf16 copy, the B operand of the
// next chunk's Q S_prev, is written by the warpgroup that owns those columns, so the two
// warpgroups share only the Q, K, V tiles. bf16 operands only (bf16 and fp32 elements): fp16
// needs the state's range scaling (sm_80 family) and E = 128 (one 64-column atom per warpgroup).
#include "../sm80/chunk_walk.cuh"
#include "../sm80/params.cuh"
#include "../sm80/tile_ops.cuh"
#include "wgmma.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm90 {

template <class T, class Decay, int D, int E, int C>
struct FwdOutput {
  using Params = sm80::ChunkParams<T, Decay>;
  using Op = sm80::op_for_t<T>;
  static_assert(std::is_same_v<Op, __nv_bfloat16>, "bf16 tensor-core operands");
  static_assert(E == 128 && (D == 64 || D == 128) && C == 64, "one 64-column atom of S per warpgroup");
  // kSm90Split: one warpgroup per CTA and the two column halves in two CTAs (grid z), each with
  // its own tiles (Q, K read twice, mostly from L2), two CTAs per SM that run out of step, so one
  // CTA's scalar work overlaps the other's wgmma; else both warpgroups in one CTA share the tiles.
  static constexpr bool kSplit = kSm90Split;
  static constexpr int kWarpgroups = kSplit ? 1 : 2;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kStages = kSplit ? 2 : kSm90Stages;  // chunks of tiles in flight + 1
  static constexpr int EW = E / 2;  // columns per warpgroup
  static constexpr int EL = kSplit ? EW : E;  // columns of V a CTA loads
  struct SharedStorage {
    alignas(1024) Op q[kStages][C * D];
    alignas(1024) Op k[kStages][C * D];
    alignas(1024) Op v[kStages][C * EL];
    alignas(1024) Op s[D * EL];  // bf16 copy of the state entering the chunk (this CTA's columns)
    float g[kStages][C];
  };
  static dim3 grid(const Params& p) {
    dim3 g = sm80::chunk_grid(p);
    if (kSplit) g.x *= 2;  // the two halves of a (b, h, segment) adjacent: launched together, Q/K shared in L2
    return g;
  }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    using namespace sm80;
    constexpr int MS = D / 64, NS = EW / 8;  // state: MS row tiles of 64, NS column tiles of 8
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    if (p.status && *p.status) return;  // a device-side check failed: leave outputs untouched
    const int tid = threadIdx.x, lane = tid & 31, wq = (tid >> 5) & 3;
    const int wg = kSplit ? int(blockIdx.x & 1) : tid >> 7;  // which column half
    const int atom = kSplit ? 0 : wg;                      // its 64-column atom in this CTA's V and S tiles
    const int gid = lane >> 2, t4 = lane & 3;
    if (p.tag && tid == 0 && blockIdx.x == 0 && blockIdx.y == 0) *p.tag = p.tag_value;
    const CtaCoords cta = coords(p);
    const index_t b = cta.b, h = cta.h;
    const int c0 = wg * EW;  // this warpgroup's columns
    // Incoming state Apre * P_r + X_seg, rows 64 i + 16 wq + gid (+8), columns c0 + 8 j + 2 t4 (+1).
    float S[MS][NS][4];
    {
      const index_t sidx = cta.seg_index(p);
      const float a = p.seg_Apre[sidx];
      const float* X = cta.rank_state(p) + cta.bh * D * E;
      const float* Y = p.seg_S + sidx * D * E;
      #pragma unroll
      for (int i = 0; i < MS; ++i)
        #pragma unroll
        for (int j = 0; j < NS; ++j)
          #pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int r = 64 * i + 16 * wq + gid + 8 * hf, c = c0 + 8 * j + 2 * t4;
            const float2 y = *reinterpret_cast<const float2*>(Y + r * E + c);
            float2 x = make_float2(0.f, 0.f);
            if (X) x = *reinterpret_cast<const float2*>(X + r * E + c);
            S[i][j][2 * hf] = a * x.x + y.x;
            S[i][j][2 * hf + 1] = a * x.y + y.y;
          }
    }
    auto store_state_copy = [&] {  // bf16 S into this warpgroup's atom of sm.s
      #pragma unroll
      for (int i = 0; i < MS; ++i)
        #pragma unroll
        for (int j = 0; j < NS; ++j)
          #pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int r = 64 * i + 16 * wq + gid + 8 * hf, c = c0 + 8 * j + 2 * t4;
            *reinterpret_cast<std::uint32_t*>(sm.s + Atoms<D>::off(r, c - (kSplit ? c0 : 0))) =
                MmaOp<Op>::pack(S[i][j][2 * hf], S[i][j][2 * hf + 1]);
          }
      fence_async_smem();
    };
    store_state_copy();  // ordered before the first chunk by the walk's first barrier
    const ChunkWalk<C, kStages, false, Decay, true, true> walk{cta.n_begin, cta.n_end, p.decay, b, h, nullptr};
    walk.run(
        sm.g,
        [&](index_t n0, int len, int buf) {
          load_tile_async<C, D, kThreads, Atoms<C>>(sm.q[buf], p.q.at(b, n0, h), p.q.stride_n, len, tid);
          load_tile_async<C, D, kThreads, Atoms<C>>(sm.k[buf], p.k.at(b, n0, h), p.k.stride_n, len, tid);
          load_tile_async<C, EL, kThreads, Atoms<C>>(sm.v[buf], p.v.at(b, n0, h) + (kSplit ? c0 : 0), p.v.stride_n, len, tid);
          cp_async_commit();
        },
        [&](index_t n0, int len, int buf) {
          const Op* sq = sm.q[buf];
          const Op* sk = sm.k[buf];
          const Op* sv = sm.v[buf];
          const float* g = sm.g[buf];
          float P[C / 8][4], O[NS][4];
          zero_acc1(P);
          zero_acc1(O);
          wg_fence();
          #pragma unroll
          for (int kk = 0; kk < D / 16; ++kk) Wgmma<64>::ss<0, 0>(P, desc_k<C>(sq, kk), desc_k<C>(sk, kk));  // Q K^T
          wg_commit();
          #pragma unroll
          for (int kk = 0; kk < D / 16; ++kk) Wgmma<EW>::ss<0, 1>(O, desc_k<C>(sq, kk), desc_mn<D>(sm.s, atom, kk));  // Q S_prev
          wg_commit();
          // Mask and weight the scores: M_ij = exp(g_i - g_j) for j <= i, times scale.
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
            for (int j = 0; j < NS; ++j) { O[j][0] *= f0; O[j][1] *= f0; O[j][2] *= f1; O[j][3] *= f1; }
          }
          wg_fence();
          #pragma unroll
          for (int kk = 0; kk < C / 16; ++kk) Wgmma<EW>::rs<1>(O, pa[kk], desc_mn<C>(sv, atom, kk));  // + P V
          wg_commit();
          // S <- exp(G) S + (diag(exp(G - g)) K)^T V, this warpgroup's columns.
          const float G = g[C - 1];
          scale_acc(S, __expf(G));
          float wk[C / 16][4];
          #pragma unroll
          for (int kk = 0; kk < C / 16; ++kk) a_weights(wk[kk], kk, lane, ToEndScale{g, G});
          #pragma unroll
          for (int i = 0; i < MS; ++i) {
            std::uint32_t ka[C / 16][4];
            #pragma unroll
            for (int kk = 0; kk < C / 16; ++kk) load_a_trans<C>(ka[kk], sk, 64 * i + 16 * wq, kk, lane, wk[kk]);
            wg_fence();
            #pragma unroll
            for (int kk = 0; kk < C / 16; ++kk) Wgmma<EW>::rs<1>(S[i], ka[kk], desc_mn<C>(sv, atom, kk));
            wg_commit();
          }
          wg_wait<0>();
          {
            float(&O1)[1][NS][4] = *reinterpret_cast<float(*)[1][NS][4]>(&O);
            store_rows<1, NS>(p.o.at(b, n0 + 16 * wq, h) + c0, p.o.stride_n, O1, lane, len - 16 * wq);
          }
          store_state_copy();  // read by the next chunk after the walk's closing barrier
        });
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
  LASP_DEVICE static void zero_acc1(float (&a)[NT][4]) {
    #pragma unroll
    for (int j = 0; j < NT; ++j) a[j][0] = a[j][1] = a[j][2] = a[j][3] = 0.f;
  }
};

}  // namespace kernel::sm90
LASP_NAMESPACE_END
