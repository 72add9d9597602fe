#pragma once
// bwd_summary (sm_80): the backward segment summary by a reverse walk, state gradient in
// registers: M_seg = scale sum_t exp(c_t - c_segstart) q_t do_t^T, M <- exp(G) M +
// scale (diag(exp(g)) Q)^T dO. Reads Q, dO. Gate values are checked here.
#include "chunk_walk.cuh"
#include "params.cuh"
#include "state.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <class T, class Decay, int D, int E, int C, bool Docs = false>
struct BwdSummary {
  using Params = ChunkParams<T, Decay>;
  using Op = op_for_t<T>;
  static constexpr int kThreads = 128;
  struct SharedStorage {
    alignas(128) Op q[2][C * D];
    alignas(128) Op dO[2][C * E];
    float g[2][C];
  };
  static dim3 grid(const Params& p) { return chunk_grid(p); }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    constexpr int MT = D / 64, NT = E / 8;
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    // Is the reserve the one the matching forward filled? If not, mark it: the fold then makes
    // this rank's summary NaN and the output kernels write nothing.
    if (p.tag && tid == 0 && blockIdx.x == 0 && blockIdx.y == 0 && *p.tag != p.tag_value) atomicOr(p.status, 2u);
    const CtaCoords cta = CtaCoords::of(p);
    float M[MT][NT][4];
    zero_acc(M);
    const ChunkWalk<C, 2, true, Decay, false> walk{cta.n_begin, cta.n_end, p.decay, cta.b, cta.h, p.status};
    auto issue = [&](index_t n0, int len, int buf) {
      load_tile_async<C, D, kThreads>(sm.q[buf], p.q.at(cta.b, n0, cta.h), p.q.stride_n, len, tid);
      load_tile_async<C, E, kThreads>(sm.dO[buf], p.dout.at(cta.b, n0, cta.h), p.dout.stride_n, len, tid);
      cp_async_commit();
    };
    auto body = [&](int buf) {
      // M <- exp(G) M + scale (diag(exp(g)) Q)^T dO, the weights applied to the A fragments in registers.
      update_state<C, D, E>(M, __expf(sm.g[buf][C - 1]), sm.q[buf], warp * (D / 4), sm.dO[buf], 0, lane,
                            FromStartScale{sm.g[buf], p.scale});
    };
    if constexpr (Docs) {
      // A document's last chunk (the first one walked) starts from the gradient of its final
      // state; after its first chunk nothing flows further back (M = 0: the state before a
      // start does not reach it, and the segment's A is 0).
      walk.run_docs(
          sm.g, cta.cursor<C, true>(p), issue,
          [&](const DocChunk& ch) {
            if (!ch.ends) return;
            if (const float* F = doc_row(p.doc_dfinal, ch.doc, p.H, cta.h, D * E)) load_state<MT, NT, E>(M, 0.f, nullptr, F, warp * (D / 4), 0, lane);
            else zero_acc(M);
          },
          [&](const DocChunk& ch, int buf) {
            body(buf);
            if (ch.starts) zero_acc(M);
          });
    } else {
      walk.run(sm.g, issue, [&](index_t, int, int buf) { body(buf); });
    }
    store_state<E>(p.seg_M + cta.seg_index(p) * D * E, M, warp * (D / 4), lane);
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
