#pragma once
// forward/backward of one SP rank, written once over (Backend, Comm): rank-local summary first,
// then the scan across ranks (the schedule: the only part that talks to the communicator), then
// the rank-local outputs with the incoming state. See math.md sections 3-4.
//
// A Backend provides, besides the state ops of schedule/common.hpp:
//   using Regions = ...;  carve<Policy, T>(shape, Carver& reserve, Carver& scratch) -> Regions
//   check_memory(args, rank, size): pointers in the memory space the backend needs (first: the
//                      checks after it read host-side parameters such as slopes)
//   check_forward<Policy>(fwd args) / check_backward<Policy>(bwd args): backend-specific checks
//   rank_summary    (fwd args, AL, ctx)         -> A_r, L_r of this rank from a zero state
//   forward_outputs (fwd args, P, ctx)          -> O with incoming state P
//   backward_summary(bwd args, P, M, ctx)       -> M_r = scale sum_t exp(c_t - c_start) q_t do_t^T
//   backward_local  (bwd args, P, ctx)          -> work that needs P_r but not G_r (the CUDA backend's
//                                                 dq); runs while the reverse scan is in flight
//   backward_outputs(bwd args, P, G, S_final_or_null, dc_total, ctx) -> the rest of dq, dk, dv, dg
//   add_dg_suffix   (bwd args, suffix, ctx)     -> dg[b,:,h] += suffix[b,h]   (decays with a gradient)
//   unmark_forwarded / mark_forwarded / check_forwarded (ctx): pairing of forward and backward
#include <type_traits>
#include <utility>
#include "../args.hpp"
#include "../schedule/common.hpp"
#include "layout.hpp"
#include "validate.hpp"

LASP_NAMESPACE_BEGIN
namespace driver {

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

/// What a backend call gets besides the arguments: the workspace layout (carved once per call)
/// and the stream.
template <class Stream, class Regions>
struct Ctx {
  Layout<Regions> lay;
  Stream stream;
};

template <class Policy, class Backend, class T, class Comm>
Status can_implement_forward(const ForwardArgs<T, typename Policy::Decay>& a, const Comm& comm, const Workspace& ws) {
  LASP_RETURN_IF_ERROR(Backend::check_memory(a, ws, comm.rank(), comm.size()));
  LASP_RETURN_IF_ERROR(check_forward(a, comm.size(), comm.rank(), ws));
  LASP_RETURN_IF_ERROR(Backend::template check_forward<Policy>(a));
  return check_workspace<Policy, Backend, T>(a.shape, ws);
}

template <class Policy, class Backend, class T, class Comm>
Status can_implement_backward(const BackwardArgs<T, typename Policy::Decay>& a, const Comm& comm,
                              const Workspace& ws) {
  LASP_RETURN_IF_ERROR(Backend::check_memory(a, ws, comm.rank(), comm.size()));
  LASP_RETURN_IF_ERROR(check_backward(a, comm.size(), comm.rank(), ws));
  LASP_RETURN_IF_ERROR(Backend::template check_backward<Policy>(a));
  return check_workspace<Policy, Backend, T>(a.shape, ws);
}

template <class Policy, class Backend, class T, class Comm>
Status forward(const ForwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
               typename Comm::stream_type stream) {
  LASP_RETURN_IF_ERROR((can_implement_forward<Policy, Backend>(a, comm, ws)));
  using Schedule = typename Policy::Schedule;
  Ctx<typename Comm::stream_type, typename Backend::Regions> c{bind<Policy, Backend, T>(a.shape, ws), stream};
  const schedule::StateDims d{c.lay.bh, c.lay.de, Policy::Decay::single_hop(a.decay, a.shape)};
  const bool last = comm.rank() == comm.size() - 1;
  // The reserve is about to be overwritten: a forward that fails midway must not leave the
  // previous forward's mark on it.
  LASP_RETURN_IF_ERROR(Backend::unmark_forwarded(c));
  LASP_RETURN_IF_ERROR(Backend::template rank_summary<Policy>(a, c.lay.AL, c));
  LASP_RETURN_IF_ERROR((Schedule::template forward<Backend>(
      comm, d, c.lay.AL, c.lay.P, comm.rank() == 0 ? a.initial_state : nullptr, last ? a.final_state : nullptr,
      c.lay.tmp, c.lay.gathered, stream)));
  LASP_RETURN_IF_ERROR(Backend::template forward_outputs<Policy>(a, c.lay.P, c));
  return Backend::mark_forwarded(a.shape, c);
}

template <class Policy, class Backend, class T, class Comm>
Status backward(const BackwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
                typename Comm::stream_type stream) {
  LASP_RETURN_IF_ERROR((can_implement_backward<Policy, Backend>(a, comm, ws)));
  using Schedule = typename Policy::Schedule;
  Ctx<typename Comm::stream_type, typename Backend::Regions> c{bind<Policy, Backend, T>(a.shape, ws), stream};
  LASP_RETURN_IF_ERROR(Backend::check_forwarded(a.shape, c));
  const schedule::StateDims d{c.lay.bh, c.lay.de, Policy::Decay::single_hop(a.decay, a.shape)};
  const int r = comm.rank(), R = comm.size();
  const bool last = r == R - 1;
  // 1. M_r from the forward's incoming state P_r (kept in the reserve) and this rank's q, do.
  LASP_RETURN_IF_ERROR(Backend::copy(c.lay.M, c.lay.A(), std::size_t(d.bh), stream));
  LASP_RETURN_IF_ERROR(Backend::template backward_summary<Policy>(a, c.lay.P, c.lay.M + d.bh, c));
  // 2. Reverse scan: G_r = gradient of the state leaving this rank. With an overlapped schedule
  //    and a communicator that has a side stream, the scan runs there while the rank-local work
  //    that needs only P_r runs on `stream`.
  constexpr bool kSide = Schedule::kOverlapBackward && has_side_stream<Comm>::value;
  typename Comm::stream_type side = stream;
  if constexpr (kSide) LASP_RETURN_IF_ERROR(comm.fork(stream, &side));
  LASP_RETURN_IF_ERROR((Schedule::template backward<Backend>(comm, d, c.lay.M, c.lay.G,
                                                             last ? a.d_final_state : nullptr,
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
  // 4. Decay gradients are reverse cumulative sums over the whole sequence: add the later ranks' totals.
  if constexpr (Policy::Decay::kHasGradient) {
    if (R > 1) {
      float* suffix = c.lay.dc + d.bh;
      LASP_RETURN_IF_ERROR(
          (Schedule::template suffix_sum<Backend>(comm, d.bh, c.lay.dc, suffix, c.lay.tmp, c.lay.dc_gathered, stream)));
      if (!last) LASP_RETURN_IF_ERROR(Backend::template add_dg_suffix<Policy>(a, suffix, c));
    }
  }
  return Status::kSuccess;
}

}  // namespace driver
LASP_NAMESPACE_END
