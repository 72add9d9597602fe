#pragma once
// fwd_summary (sm_80): one CTA of 4 warps per (segment, b, h) walks its segment's chunks with the
// D x E state in registers (warp w owns state rows [w D/4, (w+1) D/4)) and writes the segment
// summary: L_seg = sum_j exp(c_end - c_j) k_j v_j^T and A_seg = exp(c_end - c_start). Reads K, V.
// Gate values are checked here (the first pass that reads them).
#include "chunk_walk.cuh"
#include "params.cuh"
#include "state.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <class T, class Decay, int D, int E, int C, bool Docs = false>
struct FwdSummary {
  using Params = ChunkParams<T, Decay>;
  using Op = op_for_t<T>;
  static constexpr int kThreads = 128;
  struct SharedStorage {
    alignas(128) Op k[2][C * D];
    alignas(128) Op v[2][C * E];
    float g[2][C];
  };
  static dim3 grid(const Params& p) { return chunk_grid(p); }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    constexpr int MT = D / 64, NT = E / 8;  // per warp: D/4 rows = MT m-tiles
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const CtaCoords cta = CtaCoords::of(p);
    float S[MT][NT][4];
    zero_acc(S);
    float total = 0.f;
    const ChunkWalk<C, 2, false, Decay, false> walk{cta.n_begin, cta.n_end, p.decay, cta.b, cta.h, p.status};
    auto issue = [&](index_t n0, int len, int buf) {
      load_tile_async<C, D, kThreads>(sm.k[buf], p.k.at(cta.b, n0, cta.h), p.k.stride_n, len, tid);
      load_tile_async<C, E, kThreads>(sm.v[buf], p.v.at(cta.b, n0, cta.h), p.v.stride_n, len, tid);
      cp_async_commit();
    };
    auto body = [&](int buf) {
      const float G = sm.g[buf][C - 1];
      total += G;
      // S <- exp(G) S + (diag(exp(G - g)) K)^T V, the weights applied to the A fragments in registers.
      update_state<C, D, E>(S, __expf(G), sm.k[buf], warp * (D / 4), sm.v[buf], 0, lane, ToEndScale{sm.g[buf], G});
    };
    if constexpr (Docs) {
      // A document start resets the state to the document's initial state; the segment's A
      // becomes 0 (exp(-inf)): nothing before the start reaches the segment's end.
      walk.run_docs(
          sm.g, cta.cursor<C, false>(p), issue,
          [&](const DocChunk& ch) {
            if (!ch.starts) return;
            total = -INFINITY;
            if (const float* I = doc_initial(p, ch.doc, cta.h, D * E)) load_state<MT, NT, E>(S, 0.f, nullptr, I, warp * (D / 4), 0, lane);
            else zero_acc(S);
          },
          [&](const DocChunk&, int buf) { body(buf); });
    } else {
      walk.run(sm.g, issue, [&](index_t, int, int buf) { body(buf); });
    }
    store_state<E>(p.seg_S + cta.seg_index(p) * D * E, S, warp * (D / 4), lane);
    if (tid == 0) p.seg_A[cta.seg_index(p)] = __expf(total);
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
