#pragma once
// The chunks of a walk over packed documents (docs/packed-cuda.md section 2): a CTA walks the
// local rows [begin, end) of its segment in chunks of at most C rows that never cross a document
// start, so a chunk body needs no document masks; the walk resets the state where a document
// starts and hands over per-document states where one ends.
//
//   forward walks (FwdSummary, FwdOutput, BwdDq): chunks start at `begin` and at every document
//     start, then every C rows: [begin, +C), ..., [doc start, +C), ...;
//   reverse walks (BwdSummary, BwdDkDv): the mirror image, chunks end at `end` and at every
//     document end, processed from the last one down.
// Any partition into document-pure pieces is exact; mirroring keeps the reverse walk's first
// chunk (the one that receives the incoming gradient) full.
//
// Host and device code (LASP_HD): the CUDA kernels step one DocCursor per CTA (every thread the
// same, reading the offsets through the cache), the CPU tests check it against brute force, and
// the host finds each segment's first document (DocOffsets::doc_at) for the kernel parameters.
#include <cstdint>
#include "../config.hpp"
#include "../tensor.hpp"

LASP_NAMESPACE_BEGIN
namespace kernel {

/// Global document offsets (cu_seqlens): docs + 1 non-decreasing positions, int32 or int64.
struct DocOffsets {
  const void* p = nullptr;
  int bits = 32;
  index_t docs = 0;
  LASP_HD index_t at(index_t i) const {
    return bits == 64 ? index_t(static_cast<const std::int64_t*>(p)[i]) : index_t(static_cast<const std::int32_t*>(p)[i]);
  }
  /// The document holding global position t (0 <= t < at(docs)): the last i with at(i) <= t,
  /// which skips the empty documents sitting at t. A binary search (host: per segment).
  LASP_HD index_t doc_at(index_t t) const {
    index_t lo = 0, hi = docs;  // at(lo) <= t < at(hi)
    while (hi - lo > 1) {
      const index_t mid = lo + (hi - lo) / 2;
      if (at(mid) <= t) lo = mid;
      else hi = mid;
    }
    return lo;
  }
};

/// One chunk of a document-aware walk: local rows [n0, n0 + len) of document `doc`. `starts`:
/// the chunk begins the document (the state is reset before it); `ends`: it finishes the
/// document (its final state is the state after it).
struct DocChunk {
  index_t n0 = 0;
  int len = 0;
  index_t doc = 0;
  bool starts = false, ends = false;
};

/// Steps through the chunks of local rows [begin, end) whose local row 0 sits at global position
/// g0. `doc` must be the document holding the first row visited (forward: g0 + begin; reverse:
/// g0 + end - 1), e.g. from DocOffsets::doc_at on the host.
template <int C, bool Reverse>
struct DocCursor {
  DocOffsets off;
  index_t g0 = 0, begin = 0, end = 0;
  index_t pos = 0;  // forward: the next chunk's first row; reverse: one past its last row
  index_t doc = 0;
  index_t lo = 0, hi = 0;  // the current document's global extent [lo, hi)

  LASP_HD DocCursor(const DocOffsets& o, index_t g0_, index_t begin_, index_t end_, index_t doc_)
      : off(o), g0(g0_), begin(begin_), end(end_), pos(Reverse ? end_ : begin_), doc(doc_) {
    lo = off.at(doc);
    hi = off.at(doc + 1);
  }
  LASP_HD bool more() const { return Reverse ? pos > begin : pos < end; }

  /// The next chunk; then moves past it (to the neighbouring document when it ends this one).
  LASP_HD DocChunk next() {
    DocChunk c;
    c.doc = doc;
    if (!Reverse) {
      const index_t stop = (hi - g0) < end ? (hi - g0) : end;  // local end of this document's rows here
      const index_t n1 = pos + C < stop ? pos + C : stop;
      c.n0 = pos;
      c.len = int(n1 - pos);
      c.starts = g0 + pos == lo;
      c.ends = g0 + n1 == hi;
      pos = n1;
      if (c.ends && pos < end) {  // the document holding the next row: skip empty documents at hi
        index_t d = doc + 1;
        while (off.at(d + 1) <= g0 + pos) ++d;
        doc = d;
        lo = off.at(d);
        hi = off.at(d + 1);
      }
    } else {
      const index_t start = (lo - g0) > begin ? (lo - g0) : begin;
      const index_t n0 = pos - C > start ? pos - C : start;
      c.n0 = n0;
      c.len = int(pos - n0);
      c.starts = g0 + n0 == lo;
      c.ends = g0 + pos == hi;
      pos = n0;
      if (c.starts && pos > begin) {  // the document holding the row before: skip empty ones at lo
        index_t d = doc - 1;
        while (off.at(d) >= g0 + pos) --d;
        doc = d;
        lo = off.at(d);
        hi = off.at(d + 1);
      }
    }
    return c;
  }
};

}  // namespace kernel
LASP_NAMESPACE_END
