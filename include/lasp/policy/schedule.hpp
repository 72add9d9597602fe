#pragma once
// Schedule policies: how the exclusive scan of rank summaries (math.md section 3) is computed.
namespace lasp::schedule {

/// LASP ring/chain: rank r receives P_r from r-1 and sends P_{r+1} = A_r P_r + L_r to r+1.
/// Rank-local work (the summary) is done before the chain; only the D x E combine sits on it.
struct Chain {
  static constexpr const char* kName = "chain";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = false;  // needs R summaries of workspace
};

/// LASP-2: one all-gather of every rank's (A_r, L_r); each rank folds its prefix locally.
struct AllGather {
  static constexpr const char* kName = "all-gather";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = true;
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

/// Decay-aware truncation (math.md section 3, item 3). With per-head constant decay the state
/// entering rank r is P_r = L_{r-1} + A_{r-1} P_{r-1}, A_{r-1} = exp(-s_h N). When
/// exp(-s_h N) < 2^-24 for every head, the second term is below fp32 resolution: every rank needs
/// only its neighbour's summary, one hop for all ranks at once instead of a chain of R-1 (and
/// likewise G_r = M_{r+1} in backward). The check runs on the host at each call (slopes are host
/// memory); when a head does not qualify, or the decay is not decay::PerHead, Fallback runs.
template <class Fallback = AllGather>
struct Truncated {
  static constexpr const char* kName = "truncated";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = Fallback::kGathers;
  using fallback = Fallback;
};

/// The default: the single neighbour hop where the decay allows it, else the all-gather (measured
/// at least as fast as the chain on 2 and 4 GPUs, bench/RESULTS.md).
using Auto = Truncated<AllGather>;

}  // namespace lasp::schedule
