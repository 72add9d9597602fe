#pragma once
// Tile policies: compile-time constants of the chunked kernels. `Auto` lets each backend pick
// its per-architecture default (see dispatch/tuning.cuh for the CUDA table).
#include "../config.hpp"
LASP_NAMESPACE_BEGIN
namespace tile {

/// Chunk length C, warps per CTA (of the sm_80 family; the sm_90 kernels choose their own), the
/// number of sequence segments each (b,h) is split into per rank on the GPU (0 = chosen from the
/// device's SM count), and the kernel family: 0 = per kernel the one measured fastest on the
/// device (backend/cuda/table.cuh), 80 = the sm_80 family everywhere (mma.sync), 90 = every
/// sm_90a (wgmma) kernel that exists on an H100/H200 built with sm_90a, sm_80 for the rest.
template <int Chunk_, int Warps_ = 4, int Segments_ = 0, int Family_ = 0>
struct Tile {
  static constexpr int kChunk = Chunk_;
  static constexpr int kWarps = Warps_;
  static constexpr int kSegments = Segments_;
  static constexpr int kFamily = Family_;
  static_assert(Family_ == 0 || Family_ == 80 || Family_ == 90, "Family must be 0 (fastest), 80 or 90.");
  static_assert(Chunk_ == 16 || Chunk_ == 32 || Chunk_ == 64 || Chunk_ == 128,
                "The chunk length C must be 16, 32, 64 or 128 tokens.");
  static_assert(Warps_ == 4 || Warps_ == 8, "A CTA must have 4 or 8 warps.");
  static_assert(Segments_ >= 0, "Segments must be >= 0 (0 picks from the SM count).");
};

/// Let the backend choose (host: C = 64; CUDA: tuning table per architecture).
struct Auto {};

}  // namespace tile
LASP_NAMESPACE_END
