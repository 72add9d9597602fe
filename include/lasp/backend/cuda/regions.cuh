#pragma once
// The CUDA backend's part of the workspace (driver/layout.hpp carves it once per call): the
// per-segment summaries of the segment split, and the decay-gradient buffers.
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

struct Regions {
  DeviceInfo dev;
  Split split;
  float *seg_A = nullptr, *seg_Apre = nullptr, *seg_S = nullptr;  // forward set (reserve under caching::Cache)
  float *seg_M = nullptr, *seg_Apost = nullptr;                   // backward set
  float *qdq = nullptr, *seg_dc = nullptr, *extra = nullptr;      // decays with a gradient
};

/// The current device decides the split (its SM count); without a device the figures of a
/// 132-SM GPU size the workspace (a launch then fails with kCudaError anyway).
template <class Policy>
Regions carve(const Shape& s, Carver& reserve, Carver& scratch) {
  Regions r{};
  if (current_device(&r.dev) != Status::kSuccess) r.dev = DeviceInfo{};
  r.split = split<typename Policy::Tile>(s, r.dev.sm_count);
  const std::size_t bh = std::size_t(s.B * s.H), de = std::size_t(s.D * s.E), ns = std::size_t(r.split.nseg);
  Carver& fwd = Policy::Caching::kCache ? reserve : scratch;
  r.seg_A = fwd.take<float>(ns * bh);
  r.seg_Apre = fwd.take<float>(ns * bh);
  r.seg_S = fwd.take<float>(ns * bh * de);
  r.seg_M = scratch.take<float>(ns * bh * de);
  r.seg_Apost = scratch.take<float>(ns * bh);
  if constexpr (Policy::Decay::kHasGradient) {
    r.qdq = scratch.take<float>(bh * std::size_t(s.N));
    r.seg_dc = scratch.take<float>(ns * bh);
    r.extra = scratch.take<float>(bh);
  }
  return r;
}

}  // namespace backend::cuda
LASP_NAMESPACE_END
