#pragma once
// The chunk walk every sm_80 chunk kernel shares: a CTA walks the chunks of its segment in order
// (or in reverse), with the loads of the next chunk in flight while this one computes, and the
// decay of each chunk (the in-chunk cumulative log-decay g, math.md section 2) prefetched by
// warp 0 through the scheme's Chunk hook.
//
//   Stages = 2: tiles double-buffered. Chunk i+1's loads are issued before chunk i is computed;
//               the barrier that ends chunk i frees its buffer. Per-head decays are written
//               when issued. Per-token decay values (gates) are loaded with the tiles; with
//               Prefetch they are scanned at the end of the previous chunk (their latency hides
//               behind a long chunk body: the output kernels), without it right away at issue
//               (measured faster for the short bodies of the summary kernels, where a scan
//               before the closing barrier would sit on every warp's critical path).
//   Stages = 1: one buffer; loads, decay, wait, compute (the kernel has no room for two).
//   Stages = 3, 4: Stages - 1 chunks in flight while one computes (the sm_90 kernels, one CTA
//               per SM, need the bytes in flight that two CTAs of the sm_80 kernels give); the
//               decay values are loaded and scanned at issue.
//
// AsyncProxy: the body reads the tiles with wgmma (sm_90), so each thread fences its cp.async
// writes into the async proxy before the barrier.
//
// The kernel gives two callables: issue(n0, len, buf) issues its cp.async tile loads into
// buffer `buf` and commits them (plus anything else it must do before the loads are waited
// for), and body(n0, len, buf) computes a chunk whose tiles and decay g[buf] are in shared
// memory. The walk places the barriers around body.
//
// run_docs: the same walk over the chunks of a kernel::DocCursor (packed documents: chunks never
// cross a document start, docs/packed-cuda.md section 2); body(chunk, buf) gets the DocChunk,
// whose starts / ends flags tell the kernel where to reset or hand over a state; before(chunk)
// runs first (two buffers: after the barrier that lands the chunk; one buffer: before its loads
// are issued, since issue may read the state). Stages 1 and 2 (the sm_80 kernels; packed calls
// always run those).
#include "../doc_chunks.hpp"
#include "mma.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <int C, int Stages, bool Reverse, class Decay, bool Prefetch = true, bool AsyncProxy = false>
struct ChunkWalk {
  static_assert(Stages >= 1 && Stages <= 4, "one to four buffers");
  static constexpr bool kLateScan = Stages == 2 && Prefetch && Decay::kPerToken;  // scan at the end of the previous chunk
  index_t begin, end;                          // token range of the segment
  const typename Decay::DeviceParams& decay;
  index_t b, h;
  unsigned* check;                             // non-null: gate values are checked as they load

  template <class Issue, class Body>
  LASP_DEVICE void run(float (&g)[Stages][C], Issue&& issue, Body&& body) const {
    if (begin >= end) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    typename Decay::template Chunk<C> dec;
    auto len_of = [&](index_t n0) { return int(imin(index_t(C), end - n0)); };
    auto load = [&](index_t n0, int buf) {
      const int len = len_of(n0);
      issue(n0, len, buf);
      if (warp == 0) {
        dec.load(decay, b, n0, h, len, lane, check);
        if constexpr (!kLateScan) dec.finish(g[buf], decay, h, lane);
      }
    };
    const index_t first = Reverse ? begin + (end - 1 - begin) / C * C : begin;
    const index_t step = Reverse ? -C : C;
    auto in_range = [&](index_t n0) { return Reverse ? n0 >= begin : n0 < end; };
    if constexpr (Stages == 2) {
      load(first, 0);
      if constexpr (kLateScan) {
        if (warp == 0) dec.finish(g[0], decay, h, lane);
      }
    } else if constexpr (Stages > 2) {  // chunks 0 .. Stages-2 in flight; one commit group each, empty past the end
      #pragma unroll
      for (int i = 0; i < Stages - 1; ++i) {
        if (in_range(first + i * step)) load(first + i * step, i);
        else cp_async_commit();
      }
    }
    int buf = 0;
    for (index_t n0 = first; Reverse ? n0 >= begin : n0 < end; n0 += Reverse ? -C : C) {
      const int len = len_of(n0);
      const index_t next = Reverse ? n0 - C : n0 + C;
      const bool more = Reverse ? next >= begin : next < end;
      if constexpr (Stages > 2) {
        // Chunk i + Stages - 1 into the buffer the barrier ending chunk i - 1 released; a group is
        // committed even when there is nothing left to load, so waiting for all but the newest
        // Stages - 1 groups always means "chunk i has landed".
        const index_t ahead = n0 + (Stages - 1) * step;
        const int abuf = (buf + Stages - 1) % Stages;
        if (in_range(ahead)) load(ahead, abuf);
        else cp_async_commit();
        cp_async_wait<Stages - 1>();
      } else if constexpr (Stages == 2) {
        if (more) {
          load(next, buf ^ 1);  // the other buffer was released by the barrier ending the last chunk
          cp_async_wait<1>();
        } else {
          cp_async_wait<0>();
        }
      } else {
        load(n0, 0);
        cp_async_wait<0>();
      }
      if constexpr (AsyncProxy) {  // sm_90: the tiles are read by wgmma (the async proxy)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
      }
      __syncthreads();
      body(n0, len, buf);
      if constexpr (kLateScan) {
        if (more && warp == 0) dec.finish(g[buf ^ 1], decay, h, lane);
      }
      __syncthreads();
      if constexpr (Stages == 2) buf ^= 1;
      if constexpr (Stages > 2) buf = buf + 1 == Stages ? 0 : buf + 1;
    }
  }

  template <class Cursor, class Issue, class Before, class Body>
  LASP_DEVICE void run_docs(float (&g)[Stages][C], Cursor cur, Issue&& issue, Before&& before, Body&& body) const {
    static_assert(Stages <= 2, "packed walks: the sm_80 kernels (one or two buffers)");
    if (!cur.more()) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    typename Decay::template Chunk<C> dec;
    auto load = [&](const DocChunk& ch, int buf) {
      issue(ch.n0, ch.len, buf);
      if (warp == 0) {
        dec.load(decay, b, ch.n0, h, ch.len, lane, check);
        if constexpr (!kLateScan) dec.finish(g[buf], decay, h, lane);
      }
    };
    if constexpr (Stages == 2) {
      DocChunk now = cur.next();
      load(now, 0);
      if constexpr (kLateScan) {
        if (warp == 0) dec.finish(g[0], decay, h, lane);
      }
      int buf = 0;
      for (;;) {
        const bool more = cur.more();
        DocChunk nxt;
        if (more) {
          nxt = cur.next();
          load(nxt, buf ^ 1);  // the other buffer was released by the barrier ending the last chunk
          cp_async_wait<1>();
        } else {
          cp_async_wait<0>();
        }
        __syncthreads();
        before(now);
        body(now, buf);
        if constexpr (kLateScan) {
          if (more && warp == 0) dec.finish(g[buf ^ 1], decay, h, lane);
        }
        __syncthreads();
        if (!more) break;
        now = nxt;
        buf ^= 1;
      }
    } else {
      while (cur.more()) {
        const DocChunk ch = cur.next();
        before(ch);  // one buffer: before the loads (issue may read the state, e.g. BwdDkDv)
        load(ch, 0);
        cp_async_wait<0>();
        __syncthreads();
        body(ch, 0);
        __syncthreads();
      }
    }
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
