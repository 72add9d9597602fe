#pragma once
// LASP-2 all-gather: one all-gather of every rank's (A_r, L_r); each rank folds its own prefix
// (suffix in backward). S_init (rank 0) and dS_final (last rank) are folded into their owner's
// summary before the gather, so every rank sees them without another message.
#include "common.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

struct AllGather {
  static constexpr const char* kName = "all-gather";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = true;
  static constexpr bool kNeighbourChain = false;

  template <class Backend, class Comm, class Stream>
  static Status forward(Comm& comm, StateDims d, const float* AL, float* P, const float* init, float* final_state,
                        float* tmp, float* gathered, Stream s) {
    const int r = comm.rank(), R = comm.size();
    const float* send = AL;
    if (r == 0 && init && R > 1) {  // L'_0 = A_0 S_init + L_0
      LASP_RETURN_IF_ERROR(Backend::copy(tmp, AL, std::size_t(d.bh), s));
      LASP_RETURN_IF_ERROR(Backend::combine(tmp + d.bh, AL, init, AL + d.bh, d.bh, d.de, s));
      send = tmp;
    }
    if (R > 1) LASP_RETURN_IF_ERROR(comm.all_gather(send, gathered, d.summary(), s));
    if (r == 0) {
      LASP_RETURN_IF_ERROR(init ? Backend::copy(P, init, d.state(), s) : Backend::zero(P, d.state(), s));
    } else {
      for (int j = 0; j < r; ++j) {
        const float* Aj = gathered + std::size_t(j) * d.summary();
        LASP_RETURN_IF_ERROR(Backend::combine(P, Aj, j == 0 ? nullptr : P, Aj + d.bh, d.bh, d.de, s));
      }
    }
    if (r == R - 1 && final_state)
      LASP_RETURN_IF_ERROR(Backend::combine(final_state, AL, P, AL + d.bh, d.bh, d.de, s, d.skip));
    return Status::kSuccess;
  }

  template <class Backend, class Comm, class Stream>
  static Status backward(Comm& comm, StateDims d, const float* AM, float* G, const float* d_final, float* d_init,
                         float* tmp, float* gathered, Stream s) {
    const int r = comm.rank(), R = comm.size();
    const float* send = AM;
    if (r == R - 1 && d_final && R > 1) {  // M'_{R-1} = A_{R-1} dS_final + M_{R-1}
      LASP_RETURN_IF_ERROR(Backend::copy(tmp, AM, std::size_t(d.bh), s));
      LASP_RETURN_IF_ERROR(Backend::combine(tmp + d.bh, AM, d_final, AM + d.bh, d.bh, d.de, s));
      send = tmp;
    }
    if (R > 1) LASP_RETURN_IF_ERROR(comm.all_gather(send, gathered, d.summary(), s));
    if (r == R - 1) {
      LASP_RETURN_IF_ERROR(d_final ? Backend::copy(G, d_final, d.state(), s) : Backend::zero(G, d.state(), s));
    } else {
      for (int j = R - 1; j > r; --j) {
        const float* Aj = gathered + std::size_t(j) * d.summary();
        LASP_RETURN_IF_ERROR(Backend::combine(G, Aj, j == R - 1 ? nullptr : G, Aj + d.bh, d.bh, d.de, s));
      }
    }
    if (r == 0 && d_init) LASP_RETURN_IF_ERROR(Backend::combine(d_init, AM, G, AM + d.bh, d.bh, d.de, s, d.skip));
    return Status::kSuccess;
  }

  /// Reverse exclusive sum of per-(b,h) scalars (gates' dg): suffix = sum over later ranks of total.
  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* /*tmp*/,
                           float* gathered, Stream s) {
    const int r = comm.rank(), R = comm.size();
    if (R > 1) LASP_RETURN_IF_ERROR(comm.all_gather(total, gathered, std::size_t(bh), s));
    LASP_RETURN_IF_ERROR(Backend::zero(suffix, std::size_t(bh), s));
    for (int j = r + 1; j < R; ++j)
      LASP_RETURN_IF_ERROR(Backend::combine(suffix, nullptr, suffix, gathered + std::size_t(j) * bh, bh, 1, s));
    return Status::kSuccess;
  }
};

}  // namespace schedule
LASP_NAMESPACE_END
