#pragma once
// Schedule policies: how the exclusive scan of rank summaries (math.md section 3) is computed.
namespace lasp::schedule {

/// LASP ring/chain: rank r receives P_r from r-1 and sends P_{r+1} = A_r P_r + L_r to r+1.
/// Rank-local work (the summary) is done before the chain; only the D x E combine sits on it.
struct Chain { static constexpr const char* kName = "chain"; };

/// LASP-2: one all-gather of every rank's (A_r, L_r); each rank folds its prefix locally.
struct AllGather { static constexpr const char* kName = "all-gather"; };

}  // namespace lasp::schedule
