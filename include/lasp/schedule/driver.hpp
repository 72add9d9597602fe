#pragma once
// forward/backward of one SP rank, written once over (Backend, Comm): rank-local summary first,
// then the scan across ranks (the only part that talks to the communicator), then the rank-local
// outputs with the incoming state. See math.md sections 3-4.
//
// A Backend provides, besides the state ops of scan.hpp:
//   template <class Policy, class T> static std::size_t reserve_bytes(const Shape&);
//   template <class Policy, class T> static std::size_t scratch_bytes(const Shape&);
//   template <class Policy, class T> static Status check_forward(const ForwardArgs<T,Decay>&);   // backend-specific
//   template <class Policy, class T> static Status check_backward(const BackwardArgs<T,Decay>&);
//   rank_summary    (fwd args, AL, Ctx)         -> A_r, L_r of this rank from a zero state
//   forward_outputs (fwd args, P, Ctx)          -> O with incoming state P
//   backward_summary(bwd args, P, M, Ctx)       -> M_r = scale sum_t exp(c_t - c_start) q_t do_t^T
//   backward_local  (bwd args, P, Ctx)          -> work that needs P_r but not G_r (the CUDA backend's
//                                                 dq); runs while the reverse scan is in flight
//   backward_outputs(bwd args, P, G, S_final_or_null, dc_total, Ctx) -> the rest of dq, dk, dv, dg
//   add_dg_suffix   (bwd args, suffix, Ctx)     -> dg[b,:,h] += suffix[b,h]   (gates only)
//   unmark_forwarded / mark_forwarded / check_forwarded (Ctx): pairing of forward and backward
#include "../args.hpp"
#include "../detail/validate.hpp"
#include "../workspace.hpp"
#include <type_traits>
#include <utility>
#include "scan.hpp"

namespace lasp::sched {

/// Communicators may offer a side stream for their traffic: `Status fork(stream, stream*)` gives
/// a stream ordered after the work queued on `stream` so far; `Status join(stream)` makes `stream`
/// wait for what was queued on the side stream. Without them the scan runs on the caller's stream.
template <class C, class = void>
struct has_side_stream : std::false_type {};
template <class C>
struct has_side_stream<C, std::void_t<decltype(std::declval<C&>().fork(std::declval<typename C::stream_type>(),
                                                                        std::declval<typename C::stream_type*>())),
                                      decltype(std::declval<C&>().join(std::declval<typename C::stream_type>()))>>
    : std::true_type {};

/// What a backend call gets besides the arguments: the workspace regions and the stream.
template <class Stream>
struct Ctx {
  detail::WorkspaceLayout lay;
  Stream stream;
};

template <class Policy, class Backend, class T>
detail::WorkspaceLayout layout(const Shape& s, void* base = nullptr) {
  return detail::WorkspaceLayout(s, Policy::Schedule::kGathers,
                                 Backend::template reserve_bytes<Policy, T>(s),
                                 Backend::template scratch_bytes<Policy, T>(s), base);
}

template <class Policy, class Backend, class T>
std::size_t workspace_size(const Shape& s) {
  return layout<Policy, Backend, T>(s).bytes;
}

template <class Policy, class Backend, class T, class Comm>
Status can_implement_forward(const ForwardArgs<T, typename Policy::Decay>& a, const Comm& comm, const Workspace& ws) {
  LASP_RETURN_IF_ERROR(detail::check_forward(a, comm.size(), comm.rank(), ws));
  LASP_RETURN_IF_ERROR(Backend::template check_forward<Policy>(a));
  if (ws.bytes < workspace_size<Policy, Backend, T>(a.shape)) return Status::kWorkspaceTooSmall;
  return Status::kSuccess;
}

template <class Policy, class Backend, class T, class Comm>
Status can_implement_backward(const BackwardArgs<T, typename Policy::Decay>& a, const Comm& comm,
                              const Workspace& ws) {
  LASP_RETURN_IF_ERROR(detail::check_backward(a, comm.size(), comm.rank(), ws));
  LASP_RETURN_IF_ERROR(Backend::template check_backward<Policy>(a));
  if (ws.bytes < workspace_size<Policy, Backend, T>(a.shape)) return Status::kWorkspaceTooSmall;
  return Status::kSuccess;
}

/// schedule::Truncated: is every head's decay over one rank below fp32 resolution?
/// exp(-s_h N) < 2^-24  <=>  s_h N > 24 ln 2 = 16.64. Only per-head slopes (host memory) qualify.
template <class Policy, class Args>
bool single_hop(const Args& a) {
  if constexpr (std::is_same_v<typename Policy::Decay, decay::PerHead>) {
    for (index_t h = 0; h < a.shape.H; ++h)
      if (!(double(a.decay.slopes[h]) * double(a.shape.N) > 16.64)) return false;
    return true;
  } else {
    return false;
  }
}

template <class Policy, class Backend, class T, class Comm>
Status forward(const ForwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
               typename Comm::stream_type stream) {
  LASP_RETURN_IF_ERROR((can_implement_forward<Policy, Backend>(a, comm, ws)));
  Ctx<typename Comm::stream_type> c{layout<Policy, Backend, T>(a.shape, ws.ptr), stream};
  const StateDims d{c.lay.bh, c.lay.de, single_hop<Policy>(a)};
  const bool last = comm.rank() == comm.size() - 1;
  // The reserve is about to be overwritten: a forward that fails midway must not leave the
  // previous forward's mark on it.
  LASP_RETURN_IF_ERROR(Backend::unmark_forwarded(c));
  LASP_RETURN_IF_ERROR(Backend::template rank_summary<Policy>(a, c.lay.AL, c));
  LASP_RETURN_IF_ERROR((Scan<typename Policy::Schedule>::template forward<Backend>(
      comm, d, c.lay.AL, c.lay.P, comm.rank() == 0 ? a.initial_state : nullptr, last ? a.final_state : nullptr,
      c.lay.tmp, c.lay.gathered, stream)));
  LASP_RETURN_IF_ERROR(Backend::template forward_outputs<Policy>(a, c.lay.P, c));
  return Backend::mark_forwarded(a.shape, c);
}

template <class Policy, class Backend, class T, class Comm>
Status backward(const BackwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
                typename Comm::stream_type stream) {
  LASP_RETURN_IF_ERROR((can_implement_backward<Policy, Backend>(a, comm, ws)));
  Ctx<typename Comm::stream_type> c{layout<Policy, Backend, T>(a.shape, ws.ptr), stream};
  LASP_RETURN_IF_ERROR(Backend::check_forwarded(a.shape, c));
  const StateDims d{c.lay.bh, c.lay.de, single_hop<Policy>(a)};
  const int r = comm.rank(), R = comm.size();
  const bool last = r == R - 1;
  using S = Scan<typename Policy::Schedule>;
  // 1. M_r from the forward's incoming state P_r (kept in the reserve) and this rank's q, do.
  LASP_RETURN_IF_ERROR(Backend::copy(c.lay.M, c.lay.A(), std::size_t(d.bh), stream));
  LASP_RETURN_IF_ERROR(Backend::template backward_summary<Policy>(a, c.lay.P, c.lay.M + d.bh, c));
  // 2. Reverse scan: G_r = gradient of the state leaving this rank. With an overlapped schedule
  //    and a communicator that has a side stream, the scan runs there while the rank-local work
  //    that needs only P_r runs on `stream`.
  constexpr bool kSide = Policy::Schedule::kOverlapBackward && has_side_stream<Comm>::value;
  typename Comm::stream_type side = stream;
  if constexpr (kSide) LASP_RETURN_IF_ERROR(comm.fork(stream, &side));
  LASP_RETURN_IF_ERROR((S::template backward<Backend>(comm, d, c.lay.M, c.lay.G, last ? a.d_final_state : nullptr,
                                                      r == 0 ? a.d_initial_state : nullptr, c.lay.tmp,
                                                      c.lay.gathered, side)));
  LASP_RETURN_IF_ERROR(Backend::template backward_local<Policy>(a, c.lay.P, c));
  if constexpr (kSide) LASP_RETURN_IF_ERROR(comm.join(stream));
  // 3. Rank-local gradients. The final-state term of dg needs S_final = A P + L on the last rank.
  const float* s_final = nullptr;
  if constexpr (Policy::Decay::kHasGradient) {
    if (last && a.d_final_state) {
      LASP_RETURN_IF_ERROR(Backend::combine(c.lay.tmp, c.lay.A(), c.lay.P, c.lay.L(), d.bh, d.de, stream));
      s_final = c.lay.tmp;
    }
  }
  LASP_RETURN_IF_ERROR(Backend::template backward_outputs<Policy>(a, c.lay.P, c.lay.G, s_final, c.lay.dc, c));
  // 4. Gates: dg is a reverse cumulative sum over the whole sequence: add the later ranks' totals.
  if constexpr (Policy::Decay::kHasGradient) {
    if (R > 1) {
      float* suffix = c.lay.dc + d.bh;
      LASP_RETURN_IF_ERROR(
          (S::template suffix_sum<Backend>(comm, d.bh, c.lay.dc, suffix, c.lay.tmp, c.lay.dc_gathered, stream)));
      if (!last) LASP_RETURN_IF_ERROR(Backend::template add_dg_suffix<Policy>(a, suffix, c));
    }
  }
  return Status::kSuccess;
}

}  // namespace lasp::sched
