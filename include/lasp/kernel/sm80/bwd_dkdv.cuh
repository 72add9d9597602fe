#pragma once
// bwd_dkdv (sm_80): a reverse walk with the state gradient dS:
//   dv = scale ((K Q^T) .* M^T) dO + diag(exp(G - g)) K dS
//   dk = scale ((V dO^T) .* M^T) Q + diag(exp(G - g)) V dS^T
//   dS <- exp(G) dS + scale (diag(exp(g)) Q)^T dO                         (reads Q, K, V, dO)
// Decays with a gradient: dc_t = q.dq - k.dk, reverse-summed within the segment into dg.
//
// Each warp owns 16 key rows of the chunk (all columns of dk and dv) and D/4 rows of dS, shared
// with the other warps through shared memory. One buffer: four tiles plus dS fill the shared
// memory a CTA can have on sm_80.
#include "chunk_walk.cuh"
#include "params.cuh"
#include "state.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <class T, class Decay, int D, int E, int C, bool Docs = false>
struct BwdDkDv {
  using Params = ChunkParams<T, Decay>;
  using Op = op_for_t<T>;
  static constexpr int kThreads = 128;
  struct SharedStorage {
    alignas(128) Op q[C * D];
    alignas(128) Op k[C * D];
    alignas(128) Op v[C * E];
    alignas(128) Op dO[C * E];
    alignas(128) Op s[D * E];
    alignas(128) Op p[C * C];
    float g[1][C];
    float kdk[C];
    float smax[4];  // fp16: each warp's largest |dS|
  };
  static dim3 grid(const Params& p) { return chunk_grid(p); }

  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    constexpr int MT = D / 64, NT = E / 8;
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    if (p.status && *p.status) return;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2;
    const CtaCoords cta = CtaCoords::of(p);
    const index_t b = cta.b, h = cta.h, bh = cta.bh;
    const index_t sidx = cta.seg_index(p);
    float dS[MT][NT][4];
    load_state<MT, NT, E>(dS, p.seg_Apost[sidx], cta.rank_grad(p) + bh * D * E, p.seg_M + sidx * D * E, warp * (D / 4), 0, lane);
    const int m0 = warp * 16;
    const float* g = sm.g[0];
    float carry = 0.f;  // decays with a gradient: sum of dc over the later chunks of this segment
    // fp16: dS may exceed fp16's range. It is stored to shared memory times a power of two chosen
    // from the CTA's largest |dS| (one more barrier per chunk), and the products are scaled back.
    constexpr bool kRange = std::is_same_v<Op, __half>;
    Fp16Range range;
    const ChunkWalk<C, 1, true, Decay> walk{cta.n_begin, cta.n_end, p.decay, b, h, nullptr};
    auto issue = [&](index_t n0, int len, int) {
          load_tile_async<C, D, kThreads>(sm.q, p.q.at(b, n0, h), p.q.stride_n, len, tid);
          load_tile_async<C, D, kThreads>(sm.k, p.k.at(b, n0, h), p.k.stride_n, len, tid);
          load_tile_async<C, E, kThreads>(sm.v, p.v.at(b, n0, h), p.v.stride_n, len, tid);
          load_tile_async<C, E, kThreads>(sm.dO, p.dout.at(b, n0, h), p.dout.stride_n, len, tid);
          cp_async_commit();
          if constexpr (kRange) {
            const float m = warp_abs_max(dS);
            if (lane == 0) sm.smax[warp] = m;
            __syncthreads();
            range = Fp16Range::for_max(fmaxf(fmaxf(sm.smax[0], sm.smax[1]), fmaxf(sm.smax[2], sm.smax[3])));
            store_acc<MT, NT, E>(sm.s, dS, warp * (D / 4), 0, lane, [&](int) { return range.down; });
          } else {
            store_acc<MT, NT, E>(sm.s, dS, warp * (D / 4), 0, lane, NoScale{});
          }
        };
    auto body = [&](index_t n0, int len, int) {
          const float G = g[C - 1];
          float w0 = __expf(G - g[m0 + gid]), w1 = __expf(G - g[m0 + gid + 8]);
          if constexpr (kRange) { w0 *= range.up; w1 *= range.up; }
          {  // dv = scale ((K Q^T) .* M^T) dO + diag(exp(G - g)) K dS
            float A[1][C / 8][4];
            zero_acc(A);
            mma_abt<1, C / 8, D, D, D>(A, sm.k, m0, sm.q, 0, lane);  // K Q^T
            store_masked<C, true>(sm.p, A, g, p.scale, m0, lane);
            __syncwarp();
            float dV[1][NT][4];
            zero_acc(dV);
            mma_ab<1, NT, D, D, E>(dV, sm.k, m0, sm.s, 0, lane);  // K dS
            #pragma unroll
            for (int j = 0; j < NT; ++j) { dV[0][j][0] *= w0; dV[0][j][1] *= w0; dV[0][j][2] *= w1; dV[0][j][3] *= w1; }
            mma_ab<1, NT, C, C, E>(dV, sm.p, m0, sm.dO, 0, lane);  // + P^T dO
            store_rows<1, NT>(p.dv.at(b, n0 + m0, h), p.dv.stride_n, dV, lane, len - m0);
          }
          __syncwarp();
          {  // dk = scale ((V dO^T) .* M^T) Q + diag(exp(G - g)) V dS^T
            float A[1][C / 8][4];
            zero_acc(A);
            mma_abt<1, C / 8, E, E, E>(A, sm.v, m0, sm.dO, 0, lane);  // V dO^T
            store_masked<C, true>(sm.p, A, g, p.scale, m0, lane);
            __syncwarp();
            float dK[1][D / 8][4];
            zero_acc(dK);
            mma_abt<1, D / 8, E, E, E>(dK, sm.v, m0, sm.s, 0, lane);  // V dS^T
            #pragma unroll
            for (int j = 0; j < D / 8; ++j) { dK[0][j][0] *= w0; dK[0][j][1] *= w0; dK[0][j][2] *= w1; dK[0][j][3] *= w1; }
            mma_ab<1, D / 8, C, C, D>(dK, sm.p, m0, sm.q, 0, lane);  // + P^T Q
            store_rows<1, D / 8>(p.dk.at(b, n0 + m0, h), p.dk.stride_n, dK, lane, len - m0);
            if constexpr (Decay::kHasGradient) {
              float d0, d1;
              row_dots<D / 8, D>(dK, sm.k, m0, lane, d0, d1);
              if ((lane & 3) == 0) { sm.kdk[m0 + gid] = d0; sm.kdk[m0 + gid + 8] = d1; }
            }
          }
          if constexpr (Decay::kHasGradient) {
            __syncthreads();  // every warp's k.dk rows are in sm.kdk
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
          // dS <- exp(G) dS + scale (diag(exp(g)) Q)^T dO, the weights applied to the A fragments
          // in registers (the same bf16 roundings as scaling the tile in shared memory, without a
          // pass over it and two barriers). Nothing here reads another warp's results: sm.p rows
          // are per warp, sm.q and sm.dO are read-only until the walk's closing barrier.
          update_state<C, D, E>(dS, __expf(G), sm.q, warp * (D / 4), sm.dO, 0, lane, FromStartScale{g, p.scale});
        };
    if constexpr (Docs) {
      // A document's last chunk starts from the gradient of its final state (before its loads:
      // issue stores dS to shared memory); after its first chunk dS is the gradient of its
      // initial state.
      walk.run_docs(
          sm.g, cta.cursor<C, true>(p), issue,
          [&](const DocChunk& ch) {
            if (!ch.ends) return;
            if (const float* F = doc_row(p.doc_dfinal, ch.doc, p.H, h, D * E)) load_state<MT, NT, E>(dS, 0.f, nullptr, F, warp * (D / 4), 0, lane);
            else zero_acc(dS);
          },
          [&](const DocChunk& ch, int buf) {
            body(ch.n0, ch.len, buf);
            if (ch.starts) {
              if (p.doc_dinit) store_state<E>(doc_row(p.doc_dinit, ch.doc, p.H, h, D * E), dS, warp * (D / 4), lane);
              // dg: the reverse sum stops at a document start; what is left at the end of the walk
              // (seg_dc) is the dc of the rows before the segment's first start (GateSegmentFixup).
              if constexpr (Decay::kHasGradient) carry = 0.f;
            }
          });
    } else {
      walk.run(sm.g, issue, body);
    }
    if constexpr (Decay::kHasGradient) {
      if (tid == 0) p.seg_dc[sidx] = carry;
    }
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
