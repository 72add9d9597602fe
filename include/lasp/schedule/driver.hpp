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
//   backward_outputs(bwd args, P, G, S_final_or_null, dc_total, Ctx) -> dq, dk, dv (+ local dg, dc_total)
//   add_dg_suffix   (bwd args, suffix, Ctx)     -> dg[b,:,h] += suffix[b,h]   (gates only)
//   mark_forwarded / check_forwarded (header, shape, Ctx)
#include "../args.hpp"
#include "../detail/validate.hpp"
#include "../workspace.hpp"
#include "scan.hpp"

namespace lasp::sched {

/// What a backend call gets besides the arguments: the workspace regions and the stream.
template <class Stream>
struct Ctx {
  detail::WorkspaceLayout lay;
  Stream stream;
};

template <class Policy, class Backend, class T>
detail::WorkspaceLayout layout(const Shape& s, void* base = nullptr) {
  return detail::WorkspaceLayout(s, std::is_same_v<typename Policy::Schedule, schedule::AllGather>,
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

template <class Policy, class Backend, class T, class Comm>
Status forward(const ForwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
               typename Comm::stream_type stream) {
  LASP_RETURN_IF_ERROR((can_implement_forward<Policy, Backend>(a, comm, ws)));
  Ctx<typename Comm::stream_type> c{layout<Policy, Backend, T>(a.shape, ws.ptr), stream};
  const StateDims d{c.lay.bh, c.lay.de};
  const bool last = comm.rank() == comm.size() - 1;
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
  const StateDims d{c.lay.bh, c.lay.de};
  const int r = comm.rank(), R = comm.size();
  const bool last = r == R - 1;
  using S = Scan<typename Policy::Schedule>;
  // 1. M_r from the forward's incoming state P_r (kept in the reserve) and this rank's q, do.
  LASP_RETURN_IF_ERROR(Backend::copy(c.lay.M, c.lay.A(), std::size_t(d.bh), stream));
  LASP_RETURN_IF_ERROR(Backend::template backward_summary<Policy>(a, c.lay.P, c.lay.M + d.bh, c));
  // 2. Reverse scan: G_r = gradient of the state leaving this rank.
  LASP_RETURN_IF_ERROR((S::template backward<Backend>(comm, d, c.lay.M, c.lay.G, last ? a.d_final_state : nullptr,
                                                      r == 0 ? a.d_initial_state : nullptr, c.lay.tmp,
                                                      c.lay.gathered, stream)));
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
