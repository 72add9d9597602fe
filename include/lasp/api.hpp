#pragma once
// Public entry points. The backend follows from the communicator (backend/select.hpp): host
// communicators run the host backend (always available from this header), device communicators
// the CUDA backend (<lasp/lasp.cuh>).
//
//   using P = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
//   lasp::ForwardArgs<lasp::bf16, lasp::decay::PerHead> fa{shape, q, k, v, o, scale, {slopes}};
//   std::vector<std::byte> ws(lasp::workspace_size<P, lasp::bf16>(shape, comm));
//   lasp::Status st = lasp::forward<P>(fa, comm, {ws.data(), ws.size()});
//
// With a Plan (plan.hpp; made once per layer shape by every rank together) the group agrees on
// its shape and on the schedule once (ranks may then hold different N), and every call checks
// against it:
//   lasp::Plan<P, lasp::bf16> plan;
//   lasp::Status st = lasp::make_plan<P, lasp::bf16>(shape, {slopes}, comm, &plan);
//   std::vector<std::byte> ws(plan.workspace_size());
//   st = lasp::forward(plan, fa, comm, {ws.data(), ws.size()});
//
// Every forward/backward of a group of R > 1 ranks is collective: a call refused on one rank
// (any check) is refused on every rank (driver/driver.hpp, "Agreement").
#include <type_traits>
#include <vector>
#include "args.hpp"
#include "backend/host/backend.hpp"
#include "backend/select.hpp"
#include "comm/concept.hpp"
#include "driver/driver.hpp"
#include "plan.hpp"
#include "workspace.hpp"

LASP_NAMESPACE_BEGIN

/// Bytes of the reserve (kept by a layer from forward to backward) and of the scratch (shareable
/// across layers and calls) for `shape` under Policy with element type T. The CUDA backend's
/// figures depend on the current device's SM count (the segment split).
template <class Policy, class T, class Comm>
[[nodiscard]] WorkspaceSizes workspace_sizes(const Shape& shape, const Comm&) {
  return driver::sizes<Policy, backend::for_comm<Comm>, std::remove_const_t<T>>(shape);
}

/// Bytes of one buffer holding the reserve followed by the scratch: Workspace{ptr, bytes}.
template <class Policy, class T, class Comm>
[[nodiscard]] std::size_t workspace_size(const Shape& shape, const Comm& comm) {
  return workspace_sizes<Policy, T>(shape, comm).single();
}

/// Makes the plan of one layer shape on this rank; collective: every rank of the SP group calls
/// it, with its own shape (B, H, D, E, R the same everywhere; N its own) and the layer's decay
/// parameters (decay::PerHead: the slopes, needed for schedule::Truncated's single hop; {} for
/// decay::None and decay::Gate). Host communicators; device communicators use the overload of
/// <lasp/lasp.cuh> (plan.cuh), which stages through a small device buffer. Returns the same
/// status on every rank: kSuccess (then *plan is valid); the status of the lowest rank whose
/// shape or backend refuses (kInvalidShape, kSpSizeMismatch, kInvalidRank, kUnsupportedHeadDim,
/// kNullPointer for a null `plan`, ...); kPeerMismatch when ranks differ in B, H, D, E, R,
/// element type, policies or lasp version; kCommError if the exchange fails. *plan is written
/// only on success. Call it at set-up, not per step: it all-gathers about 200 bytes per rank.
template <class Policy, class T, class Comm>
[[nodiscard]] Status make_plan(const Shape& shape, const typename Policy::Decay::Params& decay, Comm& comm,
                               Plan<Policy, T>* plan) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  static_assert(!Comm::kDeviceMemory,
                "Device communicators: use make_plan(shape, decay, comm, d_staging, stream, plan) of <lasp/lasp.cuh>.");
  using Backend = backend::for_comm<Comm>;
  using A = detail::PlanAccess;
  const int R = comm.size();
  if (R < 1) return Status::kCommError;
  const Status local = A::local_status<Policy, Backend, T>(shape, comm.rank(), R, plan);
  const std::vector<float> mine = A::record<Policy>(shape, R, lasp::comm::detail::elem_code<T>::value, sizeof(T), local,
                                                    A::local_hop<Policy>(shape, decay, local),
                                                    schedule::plan_node_size<typename Policy::Schedule>(comm));
  std::vector<float> all(detail::kPlanRecordFloats * std::size_t(R), 0.f);
  LASP_RETURN_IF_ERROR(comm.all_gather(mine.data(), all.data(), detail::kPlanRecordFloats, typename Comm::stream_type{}));
  const WorkspaceSizes z =
      local == Status::kSuccess ? driver::sizes<Policy, Backend, T>(shape) : WorkspaceSizes{};
  return A::finish(all.data(), R, comm.rank(), shape, z, plan);
}

/// Would forward accept these arguments ON THIS RANK? kSuccess, or the status this rank refuses
/// the call with (no communication, nothing written). forward itself also agrees with the other
/// ranks: it returns the status of the lowest rank that refused, so it may refuse a call that
/// can_implement accepts here.
template <class Policy, class T, class Comm>
[[nodiscard]] Status can_implement(const ForwardArgs<T, typename Policy::Decay>& args, const Comm& comm,
                                   const Workspace& ws) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::can_implement_forward<Policy, backend::for_comm<Comm>>(args, comm, ws);
}
template <class Policy, class T, class Comm>
[[nodiscard]] Status can_implement(const BackwardArgs<T, typename Policy::Decay>& args, const Comm& comm,
                                   const Workspace& ws) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::can_implement_backward<Policy, backend::for_comm<Comm>>(args, comm, ws);
}

/// The same checks against a plan: the call must match plan.shape() and the plan's rank and size
/// (else kPlanMismatch).
template <class Policy, class T, class Comm>
[[nodiscard]] Status can_implement(const Plan<Policy, T>& plan, const ForwardArgs<T, typename Policy::Decay>& args,
                                   const Comm& comm, const Workspace& ws) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::can_implement_forward<Policy, backend::for_comm<Comm>>(args, comm, ws, &plan);
}
template <class Policy, class T, class Comm>
[[nodiscard]] Status can_implement(const Plan<Policy, T>& plan, const BackwardArgs<T, typename Policy::Decay>& args,
                                   const Comm& comm, const Workspace& ws) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::can_implement_backward<Policy, backend::for_comm<Comm>>(args, comm, ws, &plan);
}

/// Forward of this SP rank's segment. Never allocates device memory, never synchronises the
/// device, never owns the communicator. Collective over the SP group (R > 1): every rank calls
/// it, and a call refused on any rank is refused on every rank with the same status (the lowest
/// refusing rank's), no rank left waiting. Outputs are untouched unless kSuccess is returned.
/// For the CUDA backend a refusal elsewhere in the group, like a device-side check of gate
/// values, is known only on the device: this rank returns kSuccess, writes no output, and
/// cuda::deferred_status gives the verdict.
/// Without a plan, schedule::Truncated<AllGather> (the default, Auto) never takes the single
/// hop (no rank can know its peers' N): use the plan overload below for it.
template <class Policy, class T, class Comm>
[[nodiscard]] Status forward(const ForwardArgs<T, typename Policy::Decay>& args, Comm& comm, Workspace ws,
                             typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::forward<Policy, backend::for_comm<Comm>>(driver::PlanPtr<Policy, T>{}, args, comm, ws, stream);
}
/// Forward with the layer's plan: args.shape must be plan.shape() (kPlanMismatch otherwise).
/// Policy and T follow from the plan: lasp::forward(plan, args, comm, ws, stream).
template <class Policy, class T, class Comm>
[[nodiscard]] Status forward(const Plan<Policy, T>& plan, const ForwardArgs<T, typename Policy::Decay>& args,
                             Comm& comm, Workspace ws, typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::forward<Policy, backend::for_comm<Comm>>(&plan, args, comm, ws, stream);
}

/// Backward of this SP rank's segment; `ws` must hold the reserve of the matching forward (the
/// scratch may be any region of the right size).
template <class Policy, class T, class Comm>
[[nodiscard]] Status backward(const BackwardArgs<T, typename Policy::Decay>& args, Comm& comm, Workspace ws,
                              typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::backward<Policy, backend::for_comm<Comm>>(driver::PlanPtr<Policy, T>{}, args, comm, ws, stream);
}
/// Backward with the layer's plan (the one its forward ran with).
template <class Policy, class T, class Comm>
[[nodiscard]] Status backward(const Plan<Policy, T>& plan, const BackwardArgs<T, typename Policy::Decay>& args,
                              Comm& comm, Workspace ws, typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::backward<Policy, backend::for_comm<Comm>>(&plan, args, comm, ws, stream);
}

LASP_NAMESPACE_END
