#pragma once
// State-caching policies (math.md section 4). P_r (the state entering the rank) is always kept
// for backward; these choose what else forward keeps.
#include "../config.hpp"
LASP_NAMESPACE_BEGIN
namespace caching {

/// Backward recomputes the chunk states it needs from K, V and P_r (memory-light; default).
struct Recompute { static constexpr const char* kName = "recompute"; static constexpr bool kCache = false; };

/// Forward keeps the states at segment starts in the workspace so backward skips recomputing them.
struct Cache { static constexpr const char* kName = "cache"; static constexpr bool kCache = true; };

}  // namespace caching
LASP_NAMESPACE_END
