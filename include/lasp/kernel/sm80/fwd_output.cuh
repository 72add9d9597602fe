#pragma once
// fwd_output (sm_80): O = scale (((Q K^T) .* M) V + diag(exp(g)) Q S_prev) chunk by chunk, the
// state S entering each chunk carried in registers from the segment's incoming state
// Apre * P_r + X_seg. Reads Q, K, V; writes O.
//
// Partition: warp w owns columns [w E/4, (w+1) E/4) of the state S (all D rows) and of the
// output O (all C rows), so the state operand of Q S_prev is the warp's own slice (no CTA-wide
// exchange of S); the masked scores P are computed 16 rows per warp and shared. With fp16
// elements the state operand is scaled by a power of two into fp16's range (Fp16Range).
#include "chunk_walk.cuh"
#include "params.cuh"
#include "state.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <class T, class Decay, int D, int E, int C, bool Docs = false>
struct FwdOutput {
  using Params = ChunkParams<T, Decay>;
  using Op = op_for_t<T>;
  static constexpr int kThreads = 128;
  /// Q, K, V double-buffered (the next chunk loads while this one computes), the masked scores
  /// shared by the warps. The state stays in registers.
  struct SharedStorage {
    alignas(128) Op k[2][C * D];
    alignas(128) Op v[2][C * E];
    alignas(128) Op q[2][C * D];
    alignas(128) Op p[C * C];  // masked scores
    float g[2][C];
  };
  static dim3 grid(const Params& p) { return chunk_grid(p); }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    constexpr int EW = E / 4;                // state / output columns per warp
    constexpr int MS = D / 16, NS = EW / 8;  // state tiles per warp
    constexpr int MO = C / 16;               // output row tiles (all rows)
    static_assert(C == 16 * (kThreads / 32), "each warp owns 16 rows of the chunk's scores");
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    if (p.status && *p.status) return;  // a device-side check failed: leave outputs untouched
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (p.tag && tid == 0 && blockIdx.x == 0 && blockIdx.y == 0) *p.tag = p.tag_value;  // this forward filled the reserve
    const CtaCoords cta = CtaCoords::of(p);
    const index_t b = cta.b, h = cta.h;
    const int e0 = warp * EW;
    // Incoming state of the segment: Apre * P_r + X_seg (this warp's columns).
    float S[MS][NS][4];
    {
      const index_t sidx = cta.seg_index(p);
      load_state<MS, NS, E>(S, p.seg_Apre[sidx], cta.rank_state(p) + cta.bh * D * E, p.seg_S + sidx * D * E, 0, e0, lane);
    }
    const int m0 = warp * 16;  // this warp's rows of the scores
    const ChunkWalk<C, 2, false, Decay> walk{cta.n_begin, cta.n_end, p.decay, b, h, nullptr};
    auto issue = [&](index_t n0, int len, int buf) {
          load_tile_async<C, D, kThreads>(sm.q[buf], p.q.at(b, n0, h), p.q.stride_n, len, tid);
          load_tile_async<C, D, kThreads>(sm.k[buf], p.k.at(b, n0, h), p.k.stride_n, len, tid);
          load_tile_async<C, E, kThreads>(sm.v[buf], p.v.at(b, n0, h), p.v.stride_n, len, tid);
          cp_async_commit();
        };
    auto body = [&](index_t n0, int len, int buf) {
          const Op* sq = sm.q[buf];
          const Op* sk = sm.k[buf];
          const Op* sv = sm.v[buf];
          const float* g = sm.g[buf];
          // Intra-chunk scores of this warp's rows, masked by M_ij = exp(g_i - g_j) (j <= i), times scale.
          {
            float A[1][C / 8][4];
            zero_acc(A);
            mma_abt<1, C / 8, D, D, D>(A, sq, m0, sk, 0, lane);  // Q K^T
            store_masked<C, false>(sm.p, A, g, p.scale, m0, lane);
          }
          __syncthreads();
          {
            float O[MO][NS][4];
            zero_acc(O);
            if constexpr (std::is_same_v<Op, __half>) {  // the state may exceed fp16's range: scale it
              const Fp16Range range = Fp16Range::for_max(warp_abs_max(S));
              mma_a_sreg<MO, NS, MS, D>(O, sq, S, lane, range);
              scale_rows(O, lane, [&](int r) { return p.scale * __expf(g[r]) * range.up; });
            } else {
              mma_a_sreg<MO, NS, MS, D>(O, sq, S, lane);  // Q S_prev, the state straight from registers
              scale_rows(O, lane, [&](int r) { return p.scale * __expf(g[r]); });
            }
            mma_ab<MO, NS, C, C, E>(O, sm.p, 0, sv, e0, lane);  // + P V
            store_rows<MO, NS, true>(p.o.at(b, n0, h) + e0, p.o.stride_n, O, lane, len);
          }
          // S <- exp(G) S + (diag(exp(G - g)) K)^T V  (own columns; weights applied in registers)
          const float G = g[C - 1];
          update_state<C, D, E>(S, __expf(G), sk, 0, sv, e0, lane, ToEndScale{g, G});
        };
    if constexpr (Docs) {
      walk.run_docs(
          sm.g, cta.cursor<C, false>(p), issue,
          [&](const DocChunk& ch) {  // a document starts from its initial state (or zero)
            if (!ch.starts) return;
            if (const float* I = doc_initial(p, ch.doc, h, D * E)) load_state<MS, NS, E>(S, 0.f, nullptr, I, 0, e0, lane);
            else zero_acc(S);
          },
          [&](const DocChunk& ch, int buf) {
            body(ch.n0, ch.len, buf);
            if (ch.ends && p.doc_final) store_state<E>(doc_row(p.doc_final, ch.doc, p.H, h, D * E) + e0, S, 0, lane);
          });
    } else {
      walk.run(sm.g, issue, body);
    }
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
