#pragma once
// The scans across SP ranks (math.md section 3), written once over any Backend (where the fp32
// state buffers live and how they are combined) and any communicator. The host backend runs this
// code with thread ranks, the CUDA backend with NCCL: same code, stream-ordered.
//
// Backend state ops used here:
//   zero(p, n, stream), copy(dst, src, n, stream),
//   combine(out, A, P, L, bh, de, stream): out[i,:] = A[i] * P[i,:] + L[i,:] (A null = 1, P null = 0;
//   out may alias P or L).
#include "../comm/concept.hpp"
#include "../config.hpp"
#include "../policy/schedule.hpp"
#include <type_traits>
#include <utility>

namespace lasp::sched {

/// Sizes of one rank summary: bh (B*H) scalars A followed by bh states of de (D*E) floats.
struct StateDims {
  index_t bh, de;
  bool single_hop = false;  // schedule::Truncated: every head's decay over a rank is below fp32 resolution
  std::size_t state() const { return std::size_t(bh * de); }
  std::size_t summary() const { return std::size_t(bh * (1 + de)); }
};

template <class Schedule>
struct Scan;

/// Chain: receive, combine, send. Rank-local work is done before this is called, so only the
/// D x E combine and the hops sit on the chain.
template <>
struct Scan<schedule::Chain> {
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
      LASP_RETURN_IF_ERROR(Backend::combine(final_state, A, P, L, d.bh, d.de, s));
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
      LASP_RETURN_IF_ERROR(Backend::combine(d_init, A, G, M, d.bh, d.de, s));
    }
    return Status::kSuccess;
  }

  /// Reverse exclusive sum of per-(b,h) scalars (gates' dg): suffix = sum over later ranks of
  /// total. Defined after Scan<AllGather>: B*H floats are cheaper to all-gather in one collective
  /// than to pass along R-1 dependent hops at the end of backward.
  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp, float* gathered,
                           Stream s);
};

/// All-gather (LASP-2): every rank gathers all summaries and folds its own prefix (suffix in
/// backward). S_init (rank 0) and dS_final (last rank) are folded into their owner's summary
/// before the gather, so every rank sees them without another message.
template <>
struct Scan<schedule::AllGather> {
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
      LASP_RETURN_IF_ERROR(Backend::combine(final_state, AL, P, AL + d.bh, d.bh, d.de, s));
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
    if (r == 0 && d_init) LASP_RETURN_IF_ERROR(Backend::combine(d_init, AM, G, AM + d.bh, d.bh, d.de, s));
    return Status::kSuccess;
  }

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

template <class Backend, class Comm, class Stream>
Status Scan<schedule::Chain>::suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp,
                                         float* gathered, Stream s) {
  return Scan<schedule::AllGather>::suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
}

template <class C, class = void>
struct has_sendrecv : std::false_type {};
template <class C>
struct has_sendrecv<C, std::void_t<decltype(std::declval<C&>().sendrecv(
                           std::declval<const float*>(), 0, std::declval<float*>(), 0, std::size_t{},
                           std::declval<typename C::stream_type>()))>> : std::true_type {};

/// Send n floats to dst and receive n from src (either may be -1): one grouped call where the
/// communicator has sendrecv (so that every rank can shift at once), else send then recv (host
/// communicators: send does not block).
template <class Comm, class Stream>
Status shift(Comm& comm, const float* sbuf, int dst, float* rbuf, int src, std::size_t n, Stream s) {
  if constexpr (has_sendrecv<Comm>::value) {
    return comm.sendrecv(sbuf, dst, rbuf, src, n, s);
  } else {
    if (dst >= 0) LASP_RETURN_IF_ERROR(comm.send(sbuf, n, dst, s));
    if (src >= 0) LASP_RETURN_IF_ERROR(comm.recv(rbuf, n, src, s));
    return Status::kSuccess;
  }
}

/// Truncated: one neighbour shift when the driver found every head's decay below fp32
/// resolution (StateDims::single_hop), else the fallback schedule.
template <class F>
struct Scan<schedule::Truncated<F>> {
  template <class Backend, class Comm, class Stream>
  static Status forward(Comm& comm, StateDims d, const float* AL, float* P, const float* init, float* final_state,
                        float* tmp, float* gathered, Stream s) {
    if (!d.single_hop) return Scan<F>::template forward<Backend>(comm, d, AL, P, init, final_state, tmp, gathered, s);
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
    if (!d.single_hop) return Scan<F>::template backward<Backend>(comm, d, AM, G, d_final, d_init, tmp, gathered, s);
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
    return Scan<F>::template suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
  }
};

/// The overlapped variants scan the same way; only where the driver runs the backward scan differs.
template <>
struct Scan<schedule::ChainOverlap> : Scan<schedule::Chain> {};
template <>
struct Scan<schedule::AllGatherOverlap> : Scan<schedule::AllGather> {};

}  // namespace lasp::sched
