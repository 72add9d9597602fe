#pragma once
// Per-architecture defaults of the tile policy (tile::Auto) and the segment split.
#include "../../policy/tile.hpp"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

/// Resolved tile constants. The sm_80 kernels are written for C = 64 and 4 warps (one 16-row
/// slice of the chunk per warp); `Auto` maps to that on sm_80 and sm_90.
template <class Tile> struct resolve_tile {
  static constexpr int kChunk = Tile::kChunk, kWarps = Tile::kWarps, kSegments = Tile::kSegments,
                       kFamily = Tile::kFamily;
};
template <> struct resolve_tile<tile::Auto> {
  static constexpr int kChunk = 64, kWarps = 4, kSegments = 0, kFamily = 0;
};

/// CTAs per SM the segment split aims for when the tile policy leaves it to us: two, about what
/// the chunk kernels' shared memory allows to be resident (264 on a 132-SM H100 or H200).
inline constexpr int kCtasPerSm = 2;

}  // namespace backend::cuda
LASP_NAMESPACE_END
