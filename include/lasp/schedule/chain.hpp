#pragma once
// LASP chain: rank r receives P_r from r-1 and sends P_{r+1} = A_r P_r + L_r to r+1. Rank-local
// work (the summary) is done before the chain, so only the D x E combine and the hops sit on it.
#include "all_gather.hpp"
#include "common.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

struct Chain {
  static constexpr const char* kName = "chain";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = false;  // true: needs R summaries of scratch
  static constexpr bool kNeighbourChain = true;

  /// Forward: P = state entering this rank; final_state (last rank) = state leaving the group.
  template <class Backend, class Comm, class Stream>
  static Status forward(Comm& comm, StateDims d, const float* AL, float* P, const float* init, float* final_state,
                        float* tmp, float* /*gathered*/, Stream s) {
    const int r = comm.rank(), R = comm.size();
    const float* A = AL;
    const float* L = AL + d.bh;
    if (r == 0) {
      LASP_RETURN_IF_ERROR(init ? Backend::copy(P, init, d.state(), s) : Backend::zero(P, d.state(), s));
    } else {
      LASP_RETURN_IF_ERROR(comm.recv(P, d.state(), r - 1, s));
    }
    if (r < R - 1) {
      LASP_RETURN_IF_ERROR(Backend::combine(tmp, A, P, L, d.bh, d.de, s));
      LASP_RETURN_IF_ERROR(comm.send(tmp, d.state(), r + 1, s));
    } else if (final_state) {
      LASP_RETURN_IF_ERROR(Backend::combine(final_state, A, P, L, d.bh, d.de, s, d.skip));
    }
    return Status::kSuccess;
  }

  /// Backward: G = gradient of the state leaving this rank; d_init (rank 0) = gradient of S_init.
  /// AM = [A | M] of this rank.
  template <class Backend, class Comm, class Stream>
  static Status backward(Comm& comm, StateDims d, const float* AM, float* G, const float* d_final, float* d_init,
                         float* tmp, float* /*gathered*/, Stream s) {
    const int r = comm.rank(), R = comm.size();
    const float* A = AM;
    const float* M = AM + d.bh;
    if (r == R - 1) {
      LASP_RETURN_IF_ERROR(d_final ? Backend::copy(G, d_final, d.state(), s) : Backend::zero(G, d.state(), s));
    } else {
      LASP_RETURN_IF_ERROR(comm.recv(G, d.state(), r + 1, s));
    }
    if (r > 0) {
      LASP_RETURN_IF_ERROR(Backend::combine(tmp, A, G, M, d.bh, d.de, s));
      LASP_RETURN_IF_ERROR(comm.send(tmp, d.state(), r - 1, s));
    } else if (d_init) {
      LASP_RETURN_IF_ERROR(Backend::combine(d_init, A, G, M, d.bh, d.de, s, d.skip));
    }
    return Status::kSuccess;
  }

  /// Reverse exclusive sum of per-(b,h) scalars (gates' dg): B*H floats are cheaper to all-gather
  /// in one collective than to pass along R-1 dependent hops at the end of backward.
  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp, float* gathered,
                           Stream s) {
    return AllGather::suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
  }
};

}  // namespace schedule
LASP_NAMESPACE_END
