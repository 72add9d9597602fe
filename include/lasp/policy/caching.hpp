#pragma once
// State-caching policies (math.md section 4). P_r (the state entering the rank) is always kept
// for backward; these choose what else forward keeps.
namespace lasp::caching {

/// Backward recomputes the chunk states it needs from K, V and P_r (memory-light; default).
struct Recompute { static constexpr const char* kName = "recompute"; static constexpr bool kCache = false; };

/// Forward keeps the states at segment starts in the workspace so backward skips recomputing them.
struct Cache { static constexpr const char* kName = "cache"; static constexpr bool kCache = true; };

}  // namespace lasp::caching
