#pragma once
// Per-architecture defaults of the tile policy (tile::Auto) and the segment split.
#include "../policy/tile.hpp"

namespace lasp::cuda {

/// Resolved tile constants. The kernels are written for C = 64 and 4 warps (one 16-row slice of
/// the chunk per warp); `Auto` maps to that on sm_80 and sm_90.
template <class Tile> struct resolve_tile {
  static constexpr int kChunk = Tile::kChunk, kWarps = Tile::kWarps, kSegments = Tile::kSegments;
};
template <> struct resolve_tile<tile::Auto> {
  static constexpr int kChunk = 64, kWarps = 4, kSegments = 0;
};

/// CTAs the segment split aims for when the tile policy leaves it to us: two per SM of an H100
/// (132 SMs), about what the kernels' shared memory allows to be resident.
inline constexpr int kTargetCtas = 264;

}  // namespace lasp::cuda
