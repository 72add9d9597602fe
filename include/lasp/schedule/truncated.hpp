#pragma once
// Decay-aware truncation (math.md section 3, item 3). With per-head constant decay the state
// entering rank r is P_r = L_{r-1} + A_{r-1} P_{r-1}, A_{r-1} = exp(-s_h N). When
// exp(-s_h N) < 2^-24 for every head, the second term is below fp32 resolution: every rank needs
// only its neighbour's summary, one hop for all ranks at once instead of a chain of R-1 (and
// likewise G_r = M_{r+1} in backward). The decay scheme decides (Decay::single_hop, on the host
// at each call); when it says no, Fallback runs.
#include "all_gather.hpp"
#include "common.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

template <class Fallback = AllGather>
struct Truncated {
  static constexpr const char* kName = "truncated";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = Fallback::kGathers;
  using fallback = Fallback;

  template <class Backend, class Comm, class Stream>
  static Status forward(Comm& comm, StateDims d, const float* AL, float* P, const float* init, float* final_state,
                        float* tmp, float* gathered, Stream s) {
    if (!d.single_hop) return Fallback::template forward<Backend>(comm, d, AL, P, init, final_state, tmp, gathered, s);
    const int r = comm.rank(), R = comm.size();
    // P_r = L_{r-1} (+ A_{r-1} P_{r-1}, below fp32 resolution): shift L one rank to the right.
    // Rank 0 sends A_0 S_init + L_0 exactly: S_init may be of any size.
    const float* send = AL + d.bh;
    if (r == 0 && init && R > 1) {
      LASP_RETURN_IF_ERROR(Backend::combine(tmp, AL, init, AL + d.bh, d.bh, d.de, s));
      send = tmp;
    }
    if (R > 1)
      LASP_RETURN_IF_ERROR(shift(comm, send, r < R - 1 ? r + 1 : -1, P, r > 0 ? r - 1 : -1, d.state(), s));
    if (r == 0) LASP_RETURN_IF_ERROR(init ? Backend::copy(P, init, d.state(), s) : Backend::zero(P, d.state(), s));
    if (r == R - 1 && final_state)
      LASP_RETURN_IF_ERROR(Backend::combine(final_state, AL, P, AL + d.bh, d.bh, d.de, s));
    return Status::kSuccess;
  }

  template <class Backend, class Comm, class Stream>
  static Status backward(Comm& comm, StateDims d, const float* AM, float* G, const float* d_final, float* d_init,
                         float* tmp, float* gathered, Stream s) {
    if (!d.single_hop) return Fallback::template backward<Backend>(comm, d, AM, G, d_final, d_init, tmp, gathered, s);
    const int r = comm.rank(), R = comm.size();
    // G_r = M_{r+1} (+ A_{r+1} G_{r+1}, below fp32 resolution): shift M one rank to the left.
    // The last rank sends A dS_final + M exactly.
    const float* send = AM + d.bh;
    if (r == R - 1 && d_final && R > 1) {
      LASP_RETURN_IF_ERROR(Backend::combine(tmp, AM, d_final, AM + d.bh, d.bh, d.de, s));
      send = tmp;
    }
    if (R > 1)
      LASP_RETURN_IF_ERROR(shift(comm, send, r > 0 ? r - 1 : -1, G, r < R - 1 ? r + 1 : -1, d.state(), s));
    if (r == R - 1) LASP_RETURN_IF_ERROR(d_final ? Backend::copy(G, d_final, d.state(), s) : Backend::zero(G, d.state(), s));
    if (r == 0 && d_init) LASP_RETURN_IF_ERROR(Backend::combine(d_init, AM, G, AM + d.bh, d.bh, d.de, s));
    return Status::kSuccess;
  }

  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp, float* gathered,
                           Stream s) {
    return Fallback::template suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
  }
};

/// The default: the single neighbour hop where the decay allows it, else the all-gather (measured
/// at least as fast as the chain on 2 and 4 GPUs, bench/RESULTS.md).
using Auto = Truncated<AllGather>;

}  // namespace schedule
LASP_NAMESPACE_END
