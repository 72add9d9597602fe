#pragma once
// Parameters of the sm_80 chunk kernels. One struct for the five kernels keeps the launch table
// simple; each kernel reads only its fields. Most of its size is the per-head slopes of
// decay::PerHead (passed by value: host memory, no device read).
#include <cuda_runtime.h>
#include "../../args.hpp"
#include "../doc_chunks.hpp"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

template <class T, class Decay>
struct ChunkParams {
  Tensor<const T> q, k, v, dout;
  Tensor<T> o, dq, dk, dv;
  index_t B = 0, N = 0, H = 0;
  float scale = 1.f;
  typename Decay::DeviceParams decay{};
  int nseg = 1;        // segments per (b,h) on this rank
  index_t seg_len = 0; // tokens per segment (a multiple of the chunk)
  // Per-segment summaries, [nseg][B*H] scalars and [nseg][B*H][D*E] states (fp32).
  float* seg_A = nullptr;
  float* seg_S = nullptr;
  float* seg_Apre = nullptr;   // product of A over earlier segments (forward set)
  float* seg_M = nullptr;      // backward set: [nseg][B*H][D*E] M_seg, then Y_seg (suffix from zero)
  float* seg_Apost = nullptr;  // product of A over later segments
  const float* rank_grad = nullptr;  // G_r (backward)
  const float* rank_state = nullptr;  // P_r, (B*H, D*E)
  float* qdq = nullptr;        // gates backward: q.dq per token, [B*H][N]
  float* seg_dc = nullptr;     // gates backward: per-segment dc totals, [nseg][B*H]
  unsigned* status = nullptr;  // deferred device status (bit 0: invalid gate value, bit 1: wrong reserve)
  // The forward's fingerprint in the reserve: FwdOutput writes tag_value (when nothing failed),
  // BwdSummary compares it and sets status bit 1 on a mismatch (backward then writes nothing).
  unsigned* tag = nullptr;
  unsigned tag_value = 0;
  // The rows this call covers, [row0, row1) (a zigzag call covers one half at a time), split
  // into nseg segments of seg_len from row0.
  index_t row0 = 0, row1 = 0;
  // Packed documents (docs/packed-cuda.md; the kernels' Docs = true variants): the offsets in
  // device memory, the global position of local row 0, and the per-document states, (pool or
  // docs, H, D, E) fp32 (B = 1). A null slot array: document i uses slot i; a slot of -1 or a
  // null pool: zero.
  DocOffsets docs{};
  index_t g0 = 0;
  const float* doc_init = nullptr;
  const std::int32_t* doc_slot = nullptr;
  index_t pool = 0;
  float* doc_final = nullptr;
  const float* doc_dfinal = nullptr;
  float* doc_dinit = nullptr;
};

/// Document d's initial state of head h (null: zero), its final-state row, its gradient rows.
template <class P>
LASP_DEVICE const float* doc_initial(const P& p, index_t d, index_t h, index_t de) {
  if (!p.doc_init) return nullptr;
  const index_t slot = p.doc_slot ? index_t(p.doc_slot[d]) : d;
  return slot < 0 || slot >= p.pool ? nullptr : p.doc_init + (slot * p.H + h) * de;  // (DocCheck reports bad slots)
}
template <class F>
LASP_DEVICE F* doc_row(F* base, index_t d, index_t H, index_t h, index_t de) {
  return base ? base + (d * H + h) * de : nullptr;
}

/// Grid of every chunk kernel: one CTA per (b*h, segment); b*h on x (up to 2^31 - 1), the
/// segments (a few hundred at most) on y.
template <class T, class Decay>
dim3 chunk_grid(const ChunkParams<T, Decay>& p) {
  return dim3(unsigned(p.B * p.H), unsigned(p.nseg));
}

/// Where a CTA's work lies: its (b, h), its segment and the segment's token range.
struct CtaCoords {
  int seg;
  index_t bh, b, h, n_begin, n_end;
  template <class P>
  LASP_DEVICE static CtaCoords of(const P& p) {
    CtaCoords c;
    c.seg = blockIdx.y;
    c.bh = blockIdx.x;
    c.b = c.bh / p.H;
    c.h = c.bh % p.H;
    c.n_begin = p.row0 + c.seg * p.seg_len;
    c.n_end = p.row1 < c.n_begin + p.seg_len ? p.row1 : c.n_begin + p.seg_len;
    return c;
  }
  /// Index of this CTA's per-segment summary.
  template <class P>
  LASP_DEVICE index_t seg_index(const P& p) const { return index_t(seg) * p.B * p.H + bh; }
  /// The walk of this CTA over its rows in packed documents (forward or reverse).
  template <int C, bool Reverse, class P>
  LASP_DEVICE DocCursor<C, Reverse> cursor(const P& p) const {
    const index_t first = p.g0 + (Reverse ? n_end - 1 : n_begin);
    return DocCursor<C, Reverse>(p.docs, p.g0, n_begin, n_end, p.docs.doc_at(first));
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
