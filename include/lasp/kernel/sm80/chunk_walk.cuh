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
//
// The kernel gives two callables: issue(n0, len, buf) issues its cp.async tile loads into
// buffer `buf` and commits them (plus anything else it must do before the loads are waited
// for), and body(n0, len, buf) computes a chunk whose tiles and decay g[buf] are in shared
// memory. The walk places the barriers around body.
#include "mma.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <int C, int Stages, bool Reverse, class Decay, bool Prefetch = true>
struct ChunkWalk {
  static_assert(Stages == 1 || Stages == 2, "one or two buffers");
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
    if constexpr (Stages == 2) {
      load(first, 0);
      if constexpr (kLateScan) {
        if (warp == 0) dec.finish(g[0], decay, h, lane);
      }
    }
    int buf = 0;
    for (index_t n0 = first; Reverse ? n0 >= begin : n0 < end; n0 += Reverse ? -C : C) {
      const int len = len_of(n0);
      const index_t next = Reverse ? n0 - C : n0 + C;
      const bool more = Reverse ? next >= begin : next < end;
      if constexpr (Stages == 2) {
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
      __syncthreads();
      body(n0, len, buf);
      if constexpr (kLateScan) {
        if (more && warp == 0) dec.finish(g[buf ^ 1], decay, h, lane);
      }
      __syncthreads();
      if constexpr (Stages == 2) buf ^= 1;
    }
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
