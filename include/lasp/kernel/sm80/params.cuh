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
  int nseg = 1;        // segments per (b,h) on this rank (zigzag: of both halves)
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
  // The rows this call covers, [row0, row1), split into nseg segments of seg_len from row0.
  index_t row0 = 0, row1 = 0;
  // Zigzag (Sharding::kZigzag): both halves of the rank in one launch, so that the grid keeps
  // the CTAs of one plain launch instead of two launches of half of them each. nseg_front > 0:
  // segments [0, nseg_front) cover the front half, rows [row0, row1) at global position g0 +
  // row; segments [nseg_front, nseg) the back half, rows [row0b, row1b) at g0b + row, whose
  // incoming state and gradient are rank_state + back_state and rank_grad + back_grad (offsets
  // in floats, within the reserve and the scratch: CtaCoords). 0: one row range (every plain
  // and packed call; the fields below are then never read).
  // (Offsets rather than pointers: a select between two pointer parameters made ptxas keep
  // both loads of the incoming state, +40 registers and new spills in FwdOutput and BwdDq of
  // plain calls; with offsets the plain kernels' registers and spills stay within a few of
  // before, sm_90a, ptxas -v.)
  int nseg_front = 0;
  index_t row0b = 0, row1b = 0, g0b = 0;
  index_t back_state = 0, back_grad = 0;
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

/// Where a CTA's work lies: its (b, h), its segment and the segment's token range; with zigzag,
/// which half the segment is in (ChunkParams::nseg_front), that half's global position and its
/// incoming state / gradient.
struct CtaCoords {
  int seg;    // the segment's index in the per-segment arrays (both halves: blockIdx.y)
  bool back;  // zigzag: a segment of the back half
  index_t bh, b, h, n_begin, n_end;
  index_t g0;  // packed documents: global position of local row 0 in this segment's half
  template <class P>
  LASP_DEVICE static CtaCoords of(const P& p) {
    CtaCoords c;
    c.seg = blockIdx.y;
    c.bh = blockIdx.x;
    c.b = c.bh / p.H;
    c.h = c.bh % p.H;
    c.back = p.nseg_front > 0 && c.seg >= p.nseg_front;
    const index_t row0 = c.back ? p.row0b : p.row0, row1 = c.back ? p.row1b : p.row1;
    c.g0 = c.back ? p.g0b : p.g0;
    c.n_begin = row0 + index_t(c.back ? c.seg - p.nseg_front : c.seg) * p.seg_len;
    c.n_end = row1 < c.n_begin + p.seg_len ? row1 : c.n_begin + p.seg_len;
    return c;
  }
  /// Index of this CTA's per-segment summary.
  template <class P>
  LASP_DEVICE index_t seg_index(const P& p) const { return index_t(seg) * p.B * p.H + bh; }
  /// The state entering this CTA's half (P_r), and the gradient of the state leaving it (G_r).
  template <class P>
  LASP_DEVICE const float* rank_state(const P& p) const { return p.rank_state + (back ? p.back_state : 0); }
  template <class P>
  LASP_DEVICE const float* rank_grad(const P& p) const { return p.rank_grad + (back ? p.back_grad : 0); }
  /// The walk of this CTA over its rows in packed documents (forward or reverse).
  template <int C, bool Reverse, class P>
  LASP_DEVICE DocCursor<C, Reverse> cursor(const P& p) const {
    const index_t first = g0 + (Reverse ? n_end - 1 : n_begin);
    return DocCursor<C, Reverse>(p.docs, g0, n_begin, n_end, p.docs.doc_at(first));
  }
};

}  // namespace kernel::sm80
LASP_NAMESPACE_END
