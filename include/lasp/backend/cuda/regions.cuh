#pragma once
// The CUDA backend's part of the workspace (driver/layout.hpp carves it once per call): the
// per-segment summaries of the segment split, and the decay-gradient buffers.
//
// Zigzag (Sharding::kZigzag): a rank's two halves are launched together, one CTA row per segment
// of either half (backend.cuh), and their segments share the per-segment arrays: the front
// half's segments first, then the back half's. The arrays hold as many entries as the larger of
// the two splits of N (plain and zigzag), so the workspace depends on the shape only. The zigzag
// split needs at most one entry more than the plain one (checked over every even N < 40000 and
// budget 2..299): always when the budget is below two CTA rows (B*H > the SM count: one plain
// segment, one per half), where a plain call's workspace then holds one more segment's states
// (seg_S, seg_M: 2 B*H*D*E*4 bytes); rarely otherwise (a few percent of shapes, rounding).
#include <algorithm>
#include <cstddef>
#include "../../args.hpp"
#include "../../workspace.hpp"
#include "device.cuh"
#include "tuning.cuh"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

/// How a rank's N tokens split into segments (one CTA walks one segment of one (b,h)).
struct Split {
  int nseg = 1;
  index_t seg_len = 0;
};
template <class Tile>
Split split(const Shape& s, int sm_count) {
  using R = resolve_tile<Tile>;
  const index_t chunks = (s.N + R::kChunk - 1) / R::kChunk;
  // Floor, not ceil: B*H*nseg must not exceed the resident CTAs, or a second, nearly empty wave
  // doubles the time.
  index_t nseg = R::kSegments ? R::kSegments : index_t(kCtasPerSm) * sm_count / (s.B * s.H);
  nseg = std::max<index_t>(1, std::min(nseg, chunks));
  const index_t seg_chunks = (chunks + nseg - 1) / nseg;
  return {int((chunks + seg_chunks - 1) / seg_chunks), seg_chunks * R::kChunk};
}

/// The zigzag split: each half of N / 2 rows gets `nseg` segments of `seg_len` (the halves sit
/// apart in the global sequence, so no segment spans both). The two halves share the CTA budget
/// of the plain split (floor(budget / 2) each), which gives the shortest segments whose CTAs fit
/// in one wave: 2 ceil(h / L) <= budget for h chunks per half and segments of L chunks. (The
/// plain split's seg_len can need one CTA row too many: a budget of 3 rows and N of 6 chunks
/// gives 3 segments of 2 chunks, and the halves of 3 chunks would need 2 + 2 of them, a second
/// wave that doubles the time; here they get 1 + 1 segments of 3 chunks.) A budget below 2 (very
/// many heads) still gives each half one segment: twice the CTAs, each over half the rows.
/// nseg = 0: N odd (zigzag needs two halves of N / 2: refused by the driver's checks).
template <class Tile>
Split zigzag_split(const Shape& s, int sm_count) {
  using R = resolve_tile<Tile>;
  if (s.N < 2 || s.N % 2 != 0) return {0, R::kChunk};
  const index_t chunks = (s.N / 2 + R::kChunk - 1) / R::kChunk;  // per half
  const index_t budget = R::kSegments ? R::kSegments : index_t(kCtasPerSm) * sm_count / (s.B * s.H);
  const index_t per = std::max<index_t>(1, std::min(budget / 2, chunks));
  const index_t seg_chunks = (chunks + per - 1) / per;
  return {int((chunks + seg_chunks - 1) / seg_chunks), seg_chunks * R::kChunk};
}

struct Regions {
  DeviceInfo dev;
  Split split;
  Split zz;  // zigzag calls: per half (zigzag_split)
  float *seg_A = nullptr, *seg_Apre = nullptr, *seg_S = nullptr;  // forward set (reserve under caching::Cache)
  float *seg_M = nullptr, *seg_Apost = nullptr;                   // backward set
  float *qdq = nullptr, *seg_dc = nullptr, *extra = nullptr;      // decays with a gradient (extra: 2 B*H)
};

/// The current device decides the split (its SM count); without a device the figures of a
/// 132-SM GPU size the workspace (a launch then fails with kCudaError anyway).
template <class Policy>
Regions carve(const Shape& s, Carver& reserve, Carver& scratch) {
  Regions r{};
  if (current_device(&r.dev) != Status::kSuccess) r.dev = DeviceInfo{};
  r.split = split<typename Policy::Tile>(s, r.dev.sm_count);
  r.zz = zigzag_split<typename Policy::Tile>(s, r.dev.sm_count);
  const std::size_t bh = std::size_t(s.B * s.H), de = std::size_t(s.D * s.E);
  const std::size_t ns = std::size_t(std::max(r.split.nseg, 2 * r.zz.nseg));
  Carver& fwd = Policy::Caching::kCache ? reserve : scratch;
  r.seg_A = fwd.take<float>(ns * bh);
  r.seg_Apre = fwd.take<float>(ns * bh);
  r.seg_S = fwd.take<float>(ns * bh * de);
  r.seg_M = scratch.take<float>(ns * bh * de);
  r.seg_Apost = scratch.take<float>(ns * bh);
  if constexpr (Policy::Decay::kHasGradient) {
    r.qdq = scratch.take<float>(bh * std::size_t(s.N));
    r.seg_dc = scratch.take<float>(ns * bh);
    r.extra = scratch.take<float>(2 * bh);  // one per half of a zigzag call
  }
  return r;
}

}  // namespace backend::cuda
LASP_NAMESPACE_END
