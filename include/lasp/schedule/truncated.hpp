#pragma once
// Decay-aware truncation (math.md section 3, item 3). With per-head constant decay the state
// entering rank r+1 is P_{r+1} = L_r + A_r P_r, A_r = exp(-s_h N_r). When exp(-s_h N_r) < 2^-24
// for every head, the second term is below fp32 resolution: rank r's message needs nothing
// from the ranks before it (likewise M_r in backward: G_{r-1} = M_r + A_r G_r). The decay
// scheme decides (Decay::single_hop, from rank r's own slopes and N_r). Two cases:
//
//  - Fallback a neighbour chain (Chain, ChainOverlap: kNeighbourChain): each rank decides for
//    itself (StateDims::local_hop). A rank whose decay is strong sends its own L_r first and
//    then receives; the others receive, combine and send, as in the chain. The messages are
//    the chain's (one state per neighbour pair), so ranks that decide differently (uneven N)
//    still match, with or without a Plan; the chain breaks into independent pieces at every
//    strong rank.
//  - Any other fallback (AllGather, the default schedule::Auto): the single hop replaces a
//    collective, so it is taken only when EVERY rank qualifies, a decision that needs every
//    rank's N and slopes: a Plan makes it once, for the group (StateDims::single_hop). Without a
//    plan no rank can know its peers' verdicts (the device verdict cannot be read without
//    synchronising), so the fallback runs; with a plan and all ranks strong, every rank shifts
//    its summary to its neighbour at once (one grouped sendrecv per rank).
#include <type_traits>
#include "all_gather.hpp"
#include "common.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

struct Chain;
struct LogScan;

template <class Fallback = AllGather>
struct Truncated {
  // The fallback is part of the name: describe<Policy>() is what make_plan compares across
  // ranks, and Truncated<Chain> / Truncated<AllGather> send different messages.
  static constexpr const char* kName = std::is_same_v<Fallback, AllGather> ? "truncated(all-gather)"
                                       : std::is_same_v<Fallback, Chain>   ? "truncated(chain)"
                                       : std::is_same_v<Fallback, LogScan> ? "truncated(log-scan)"
                                                                           : "truncated(other)";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = Fallback::kGathers;
  static constexpr bool kNeighbourChain = Fallback::kNeighbourChain;
  using fallback = Fallback;

  /// Does this rank take the single hop?
  static bool hop(const StateDims& d) { return Fallback::kNeighbourChain ? d.local_hop : d.single_hop; }

  template <class Backend, class Comm, class Stream>
  static Status forward(Comm& comm, StateDims d, const float* AL, float* P, const float* init, float* final_state,
                        float* tmp, float* gathered, Stream s) {
    if (!hop(d)) return Fallback::template forward<Backend>(comm, d, AL, P, init, final_state, tmp, gathered, s);
    const int r = comm.rank(), R = comm.size();
    // P_r = L_{r-1} (+ A_{r-1} P_{r-1}, below fp32 resolution): send L_r to the right neighbour
    // before receiving. Rank 0 sends A_0 S_init + L_0 exactly: S_init may be of any size.
    const float* send = AL + d.bh;
    if (r == 0 && init && R > 1) {
      LASP_RETURN_IF_ERROR(Backend::combine(tmp, AL, init, AL + d.bh, d.bh, d.de, s));
      send = tmp;
    }
    if (R > 1)
      LASP_RETURN_IF_ERROR(shift(comm, send, r < R - 1 ? r + 1 : -1, P, r > 0 ? r - 1 : -1, d.state(), s));
    if (r == 0) LASP_RETURN_IF_ERROR(init ? Backend::copy(P, init, d.state(), s) : Backend::zero(P, d.state(), s));
    if (r == R - 1 && final_state)
      LASP_RETURN_IF_ERROR(Backend::combine(final_state, AL, P, AL + d.bh, d.bh, d.de, s, d.skip));
    return Status::kSuccess;
  }

  template <class Backend, class Comm, class Stream>
  static Status backward(Comm& comm, StateDims d, const float* AM, float* G, const float* d_final, float* d_init,
                         float* tmp, float* gathered, Stream s) {
    if (!hop(d)) return Fallback::template backward<Backend>(comm, d, AM, G, d_final, d_init, tmp, gathered, s);
    const int r = comm.rank(), R = comm.size();
    // G_r = M_{r+1} (+ A_{r+1} G_{r+1}, below fp32 resolution): send M_r to the left neighbour
    // before receiving. The last rank sends A dS_final + M exactly.
    const float* send = AM + d.bh;
    if (r == R - 1 && d_final && R > 1) {
      LASP_RETURN_IF_ERROR(Backend::combine(tmp, AM, d_final, AM + d.bh, d.bh, d.de, s));
      send = tmp;
    }
    if (R > 1)
      LASP_RETURN_IF_ERROR(shift(comm, send, r > 0 ? r - 1 : -1, G, r < R - 1 ? r + 1 : -1, d.state(), s));
    if (r == R - 1) LASP_RETURN_IF_ERROR(d_final ? Backend::copy(G, d_final, d.state(), s) : Backend::zero(G, d.state(), s));
    if (r == 0 && d_init) LASP_RETURN_IF_ERROR(Backend::combine(d_init, AM, G, AM + d.bh, d.bh, d.de, s, d.skip));
    return Status::kSuccess;
  }

  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp, float* gathered,
                           Stream s) {
    return Fallback::template suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
  }
};

/// The default: AllGather (measured at least as fast as the chain on 2 and 4 GPUs,
/// bench/RESULTS.md), replaced by the single neighbour hop where a Plan found the decay strong
/// enough on every rank.
using Auto = Truncated<AllGather>;

/// Does Schedule (or the schedule it falls back to) ever take the group's single hop? (make_plan
/// asks the decay scheme only then.)
template <class S>
struct uses_group_hop : std::false_type {};
template <class F>
struct uses_group_hop<Truncated<F>> : std::bool_constant<!F::kNeighbourChain> {};

}  // namespace schedule
LASP_NAMESPACE_END
