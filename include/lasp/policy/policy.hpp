#pragma once
// The policy bundle that parameterises forward/backward.
#include "../config.hpp"
#include <string>
#include "caching.hpp"
#include "../decay/decay.hpp"
#include "../schedule/schedule.hpp"
#include "tile.hpp"

LASP_NAMESPACE_BEGIN

/// Compile-time choices for one linear-attention layer:
///   Decay_    decay::None | decay::PerHead | decay::Gate
///   Schedule_ schedule::Auto (default: Truncated<AllGather>) | Chain | AllGather | Truncated<F> |
///             LogScan | Hierarchical<Inner, Outer> | ChainOverlap | AllGatherOverlap
///   Caching_  caching::Recompute | caching::Cache
///   Tile_     tile::Auto | tile::Tile<C, Warps, Segments>
template <class Decay_, class Schedule_ = schedule::Auto, class Caching_ = caching::Recompute,
          class Tile_ = tile::Auto>
struct Policy {
  using Decay = Decay_;
  using Schedule = Schedule_;
  using Caching = Caching_;
  using Tile = Tile_;
};

namespace detail {
template <class T> struct tile_name { static std::string get() { return "auto"; } };
template <int C, int W, int S> struct tile_name<tile::Tile<C, W, S>> {
  static std::string get() {
    return "C" + std::to_string(C) + "_W" + std::to_string(W) + "_S" + (S ? std::to_string(S) : std::string("auto"));
  }
};
}  // namespace detail

/// Printable description, so benchmarks and logs say what ran.
template <class P>
std::string describe() {
  return std::string("decay=") + P::Decay::kName + " schedule=" + P::Schedule::kName +
         " caching=" + P::Caching::kName + " tile=" + detail::tile_name<typename P::Tile>::get();
}

LASP_NAMESPACE_END
