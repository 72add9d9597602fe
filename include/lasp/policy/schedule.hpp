#pragma once
// Schedule policies: how the exclusive scan of rank summaries (math.md section 3) is computed.
namespace lasp::schedule {

/// LASP ring/chain: rank r receives P_r from r-1 and sends P_{r+1} = A_r P_r + L_r to r+1.
/// Rank-local work (the summary) is done before the chain; only the D x E combine sits on it.
struct Chain {
  static constexpr const char* kName = "chain";
  static constexpr bool kOverlapBackward = false;
};

/// LASP-2: one all-gather of every rank's (A_r, L_r); each rank folds its prefix locally.
struct AllGather {
  static constexpr const char* kName = "all-gather";
  static constexpr bool kOverlapBackward = false;
};

/// Chain / AllGather with backward's reverse scan on the communicator's side stream (comm::Nccl
/// has one), overlapping the rank-local dq kernel. Measured on 4 x H100 (bench/RESULTS.md): the
/// NCCL kernels then take SMs from the dq grid, which is sized to fill the GPU exactly, and the
/// tail wave costs more than the hops it hides; so it is not the default.
struct ChainOverlap : Chain {
  static constexpr const char* kName = "chain+overlap";
  static constexpr bool kOverlapBackward = true;
};
struct AllGatherOverlap : AllGather {
  static constexpr const char* kName = "all-gather+overlap";
  static constexpr bool kOverlapBackward = true;
};

}  // namespace lasp::schedule
