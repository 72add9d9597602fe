#pragma once
// bwd_dq (sm_80): a forward walk with the state S: dq = scale ((dO V^T) .* M) K +
// scale diag(exp(g)) dO S^T. Reads dO, K, V (and Q for gates, to form q.dq per token).
//
// K, V, dO double-buffered; the state stays in registers, row-partitioned (warp w owns state
// rows [w D/4, (w+1) D/4)), which is also the dq column slice the warp computes, so the state
// operand of dO S^T comes straight from its registers. With fp16 elements the state operand is
// scaled by a power of two into fp16's range (Fp16Range).
#include "chunk_walk.cuh"
#include "params.cuh"
#include "state.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <class T, class Decay, int D, int E, int C, bool Docs = false>
struct BwdDq {
  using Params = ChunkParams<T, Decay>;
  using Op = op_for_t<T>;
  static constexpr int kThreads = 128;
  struct SharedStorage {
    alignas(128) Op k[2][C * D];
    alignas(128) Op v[2][C * E];
    alignas(128) Op dO[2][C * E];
    alignas(128) Op p[C * C];
    float g[2][C];
    float qdq[4][C];  // decays with a gradient: per-warp partial sums of q.dq
  };
  static dim3 grid(const Params& p) { return chunk_grid(p); }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    constexpr int DW = D / 4, MS = DW / 16, NS = E / 8, NQ = DW / 8, MO = C / 16;
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    if (p.status && *p.status) return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, t4 = lane & 3;
    const CtaCoords cta = CtaCoords::of(p);
    const index_t b = cta.b, h = cta.h, bh = cta.bh;
    const index_t sidx = cta.seg_index(p);
    const int d0 = warp * DW;
    float S[MS][NS][4];
    load_state<MS, NS, E>(S, p.seg_Apre[sidx], cta.rank_state(p) + bh * D * E, p.seg_S + sidx * D * E, d0, 0, lane);
    const int m0 = warp * 16;
    // Decays with a gradient: q.dq of a chunk is summed over the warps' column slices through
    // shared memory and written out one barrier later.
    auto flush_qdq = [&](index_t n0, int len) {
      if (tid < len) p.qdq[bh * p.N + n0 + tid] = sm.qdq[0][tid] + sm.qdq[1][tid] + sm.qdq[2][tid] + sm.qdq[3][tid];
    };
    index_t prev_n0 = -1;
    int prev_len = 0;
    const ChunkWalk<C, 2, false, Decay> walk{cta.n_begin, cta.n_end, p.decay, b, h, nullptr};
    auto issue = [&](index_t n0, int len, int buf) {
          load_tile_async<C, D, kThreads>(sm.k[buf], p.k.at(b, n0, h), p.k.stride_n, len, tid);
          load_tile_async<C, E, kThreads>(sm.v[buf], p.v.at(b, n0, h), p.v.stride_n, len, tid);
          load_tile_async<C, E, kThreads>(sm.dO[buf], p.dout.at(b, n0, h), p.dout.stride_n, len, tid);
          cp_async_commit();
        };
    auto body = [&](index_t n0, int len, int buf) {
          const Op* sk = sm.k[buf];
          const Op* sv = sm.v[buf];
          const Op* sdo = sm.dO[buf];
          const float* g = sm.g[buf];
          {  // masked dO V^T, this warp's 16 rows
            float A[1][C / 8][4];
            zero_acc(A);
            mma_abt<1, C / 8, E, E, E>(A, sdo, m0, sv, 0, lane);
            store_masked<C, false>(sm.p, A, g, p.scale, m0, lane);
          }
          if constexpr (Decay::kHasGradient) {
            if (prev_n0 >= 0) flush_qdq(prev_n0, prev_len);
          }
          __syncthreads();
          {
            float dQ[MO][NQ][4];
            zero_acc(dQ);
            if constexpr (std::is_same_v<Op, __half>) {  // the state may exceed fp16's range: scale it
              const Fp16Range range = Fp16Range::for_max(warp_abs_max(S));
              mma_a_streg<MO, NQ, E / 16, E>(dQ, sdo, S, lane, range);
              scale_rows(dQ, lane, [&](int r) { return p.scale * __expf(g[r]) * range.up; });
            } else {
              mma_a_streg<MO, NQ, E / 16, E>(dQ, sdo, S, lane);  // dO S^T (own column slice of dq)
              scale_rows(dQ, lane, [&](int r) { return p.scale * __expf(g[r]); });
            }
            mma_ab<MO, NQ, C, C, D>(dQ, sm.p, 0, sk, d0, lane);  // + P K
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
          update_state<C, D, E>(S, __expf(G), sk, d0, sv, 0, lane, ToEndScale{g, G});
          prev_n0 = n0;
          prev_len = len;
        };
    if constexpr (Docs) {
      walk.run_docs(
          sm.g, cta.cursor<C, false>(p), issue,
          [&](const DocChunk& ch) {  // a document starts from its initial state (or zero)
            if (!ch.starts) return;
            if (const float* I = doc_initial(p, ch.doc, h, D * E)) load_state<MS, NS, E>(S, 0.f, nullptr, I, d0, 0, lane);
            else zero_acc(S);
          },
          [&](const DocChunk& ch, int buf) {
            body(ch.n0, ch.len, buf);
            if constexpr (Decay::kHasGradient) {
              // A document's final state depends on every gate of the document: its term
              // <dF, S_end> joins q.dq of the document's last token (the reverse sum then
              // carries it to every earlier token of the document).
              const float* F = ch.ends ? doc_row(p.doc_dfinal, ch.doc, p.H, h, D * E) : nullptr;
              if (F) {
                float dot = 0.f;
                #pragma unroll
                for (int i = 0; i < MS; ++i)
                  #pragma unroll
                  for (int j = 0; j < NS; ++j) {
                    const int r = d0 + 16 * i + gid, c = 8 * j + 2 * t4;
                    const float2 f0 = *reinterpret_cast<const float2*>(F + r * E + c);
                    const float2 f1 = *reinterpret_cast<const float2*>(F + (r + 8) * E + c);
                    dot += f0.x * S[i][j][0] + f0.y * S[i][j][1] + f1.x * S[i][j][2] + f1.y * S[i][j][3];
                  }
                #pragma unroll
                for (int o = 16; o; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                __syncwarp();  // this warp's q.dq partials of the chunk are in sm.qdq[warp]
                if (lane == 0) sm.qdq[warp][ch.len - 1] += dot;
              }
            }
          });
    } else {
      walk.run(sm.g, issue, body);
    }
    if constexpr (Decay::kHasGradient) {
      if (prev_n0 >= 0) flush_qdq(prev_n0, prev_len);
    }
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
