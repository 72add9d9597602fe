#pragma once
// forward/backward of one SP rank, written once over (Backend, Comm): rank-local summary first,
// then the scan across ranks (the schedule: the only part that talks to the communicator), then
// the rank-local outputs with the incoming state. See math.md sections 3-4.
//
// Agreement. Every check of a call runs on the host of each rank alone (check_*_call: nothing
// written, nothing sent). Then, in every call of a group of R > 1 ranks, the ranks agree
// before anything is written: each rank's status is all-gathered (schedule::agree, 16 bytes per
// rank). So a call refused on one rank is refused on all of them, and no rank is left waiting
// for a peer or receiving a stale message in a later call:
//  - backends whose memory the host reads (host backend, Backend::kSyncVerdict): every rank
//    reads the verdict at once and returns it (the status of the lowest rank that refused)
//    before touching anything; no other message of the call is sent.
//  - device backends (CUDA): reading the verdict would synchronise, so it stays on the device
//    (the reserve header's kDeviceStatus slot). The ranks that passed their checks run the
//    whole call; every kernel that writes a user buffer skips its work on a non-zero verdict
//    and cuda::deferred_status reports it. A rank that refused runs the same messages of the
//    call (the schedule's scan, and the gates' suffix sum) from its own workspace, with null
//    user buffers, and returns its status (refuse() below). It needs a usable workspace for
//    that: without one it returns at once and its peers wait (README "Limits").
//
// A Backend provides, besides the state ops of schedule/common.hpp:
//   kSyncVerdict      the host reads the agreement's verdict at once (host memory)
//   put_status(word, status, stream) / verdict(all, R, slot, stream): the agreement (common.hpp)
//   using Regions = ...;  carve<Policy, T>(shape, Carver& reserve, Carver& scratch) -> Regions
//   check_memory(args, ws, rank, size): pointers in the memory space the backend needs (first:
//                      the checks after it read host-side parameters such as slopes)
//   check_common<Policy, T>(shape): what the backend cannot run (make_plan uses it too)
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
#include <vector>
#include "../args.hpp"
#include "../plan.hpp"
#include "../schedule/common.hpp"
#include "layout.hpp"
#include "packed.hpp"
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
  /// Packed documents / zigzag (packed.hpp; backends with kPackedSequences only): where this
  /// rank's tokens sit, and which of its segments a call is about. Null: one segment, all rows.
  const Geometry* geo = nullptr;
  int seg = 0;
  /// The call's layout tag (packed.hpp layout_tag): pairs a backward with its forward's layout.
  std::uint32_t tag = 0;
};

/// The segment a backend call is about (all of this rank's rows without a geometry).
template <class C>
Segment segment_of(const Shape& s, const C& c) {
  return c.geo ? c.geo->seg[c.seg] : Segment{0, s.N, 0};
}
/// The documents of a packed call, or null.
template <class C>
const Docs* docs_of(const C& c) {
  return c.geo && c.geo->packed ? &c.geo->docs : nullptr;
}

template <class T, class D>
std::vector<Extent> user_extents(const ForwardArgs<T, D>& a, const Shape& s);
template <class T, class D>
std::vector<Extent> user_extents(const BackwardArgs<T, D>& a, const Shape& s);

template <class Policy, class T>
using PlanPtr = const Plan<Policy, std::remove_const_t<T>>*;

// ---- checks on this rank alone (can_implement) ----------------------------------------------

template <class Policy, class Backend, class T, class Comm>
Status check_forward_call(PlanPtr<Policy, T> plan, const ForwardArgs<T, typename Policy::Decay>& a, const Comm& comm,
                          const Workspace& ws) {
  LASP_RETURN_IF_ERROR(Backend::check_memory(a, ws, comm.rank(), comm.size()));
  if (plan) LASP_RETURN_IF_ERROR(plan->check_call(a.shape, comm.rank(), comm.size()));
  LASP_RETURN_IF_ERROR(check_forward(a, comm.size(), comm.rank(), ws));
  if (a.shape.N == 0 && !supports_empty<Backend>::value) return Status::kUnsupportedFeature;
  LASP_RETURN_IF_ERROR(Backend::template check_forward<Policy>(a));
  LASP_RETURN_IF_ERROR((check_workspace<Policy, Backend, std::remove_const_t<T>>(a.shape, ws)));
  if (layout_mode(a)) {
    const Shape& s = a.shape;
    LASP_RETURN_IF_ERROR(check_layout(a, supports_packed<Backend>::value, plan ? plan->total_tokens() : -1,
                                      {extent(a.o, s, s.E), workspace_extent(ws), scratch_extent(ws)},
                                      {extent(a.q, s, s.D), extent(a.k, s, s.D), extent(a.v, s, s.E),
                                       gate_extent(Policy::Decay::input_gates(a.decay), s)},
                                      true, !device_state_index<Backend>::value));
  }
  if (plan) LASP_RETURN_IF_ERROR(plan->check_decay(a.decay, a.shape));
  return Status::kSuccess;
}

/// Backward's checks include the pairing with a forward where the backend can see it (host).
template <class Policy, class Backend, class T, class Comm>
Status check_backward_call(PlanPtr<Policy, T> plan, const BackwardArgs<T, typename Policy::Decay>& a,
                           const Comm& comm, const Workspace& ws) {
  using U = std::remove_const_t<T>;
  LASP_RETURN_IF_ERROR(Backend::check_memory(a, ws, comm.rank(), comm.size()));
  if (plan) LASP_RETURN_IF_ERROR(plan->check_call(a.shape, comm.rank(), comm.size()));
  LASP_RETURN_IF_ERROR(check_backward(a, comm.size(), comm.rank(), ws));
  if (a.shape.N == 0 && !supports_empty<Backend>::value) return Status::kUnsupportedFeature;
  LASP_RETURN_IF_ERROR(Backend::template check_backward<Policy>(a));
  LASP_RETURN_IF_ERROR((check_workspace<Policy, Backend, U>(a.shape, ws)));
  if (layout_mode(a)) {
    const Shape& s = a.shape;
    std::vector<Extent> outs = {extent(a.dq, s, s.D), extent(a.dk, s, s.D), extent(a.dv, s, s.E),
                                workspace_extent(ws), scratch_extent(ws)};
    if constexpr (Policy::Decay::kHasGradient) outs.push_back(gate_extent(a.dg, s));
    LASP_RETURN_IF_ERROR(check_layout(a, supports_packed<Backend>::value, plan ? plan->total_tokens() : -1, outs,
                                      {extent(a.q, s, s.D), extent(a.k, s, s.D), extent(a.v, s, s.E),
                                       extent(a.dout, s, s.E), gate_extent(Policy::Decay::input_gates(a.decay), s)},
                                      false, !device_state_index<Backend>::value));
  }
  if (plan) LASP_RETURN_IF_ERROR(plan->check_decay(a.decay, a.shape));
  Ctx<typename Comm::stream_type, typename Backend::Regions> c{bind<Policy, Backend, U>(a.shape, ws), {}};
  c.tag = layout_tag(a);
  return Backend::check_forwarded(a.shape, c);
}

template <class Policy, class Backend, class T, class Comm>
Status can_implement_forward(const ForwardArgs<T, typename Policy::Decay>& a, const Comm& comm, const Workspace& ws,
                             PlanPtr<Policy, T> plan = nullptr) {
  return check_forward_call<Policy, Backend>(plan, a, comm, ws);
}
template <class Policy, class Backend, class T, class Comm>
Status can_implement_backward(const BackwardArgs<T, typename Policy::Decay>& a, const Comm& comm,
                              const Workspace& ws, PlanPtr<Policy, T> plan = nullptr) {
  return check_backward_call<Policy, Backend>(plan, a, comm, ws);
}

// ---- the agreement ----------------------------------------------------------------------------

/// The agreement of a call whose rank status is `local` (schedule::agree). `lay`: this rank's
/// workspace layout (null when it has none it can use). R = 1: nothing to agree on; device
/// backends reset the verdict slot.
template <class Backend, class Comm, class Stream, class Regions>
Status agree_call(Comm& comm, Status local, Layout<Regions>* lay, Stream s, int mode = 0) {
  constexpr std::size_t W = schedule::kStatusFloats;
  if (comm.size() < 2) {
    if (local != Status::kSuccess) return local;
    if constexpr (!Backend::kSyncVerdict)
      return Backend::zero(reinterpret_cast<float*>(lay->header + kDeviceStatus), 1, s);
    return Status::kSuccess;
  }
  if constexpr (Backend::kSyncVerdict) {
    // Host memory: no workspace needed. Word 1 carries the call's layout mode (packed.hpp):
    // ranks that disagree on it (one packed, one not) get kPeerMismatch, all of them.
    const int R = comm.size();
    std::vector<float> w(W * (1 + std::size_t(R)), 0.f);
    LASP_RETURN_IF_ERROR(Backend::put_status(w.data(), local, s));
    w[1] = float(mode);
    LASP_RETURN_IF_ERROR(comm.all_gather(w.data(), w.data() + W, W, s));
    const Status v = Backend::verdict(w.data() + W, R, nullptr, s);
    if (v != Status::kSuccess) return v;
    if (local != Status::kSuccess) return local;
    for (int j = 0; j < R; ++j)
      if (w[W * std::size_t(1 + j) + 1] != float(mode)) return Status::kPeerMismatch;
    return Status::kSuccess;
  } else {
    if (!lay) return local;
    return schedule::agree<Backend>(comm, local, lay->words, lay->words + W, lay->header + kDeviceStatus, s, mode);
  }
}

/// What the ranks must share to exchange the same messages: from the plan, else the arguments.
template <class Backend, class Regions>
schedule::StateDims group_dims(const Shape& s, bool single_hop, bool local_hop, const Layout<Regions>& lay) {
  schedule::StateDims d{s.B * s.H, s.D * s.E, single_hop, local_hop, nullptr};
  if constexpr (!Backend::kSyncVerdict) d.skip = lay.header + kDeviceStatus;
  return d;
}

inline bool shape_positive(const Shape& s) { return s.B >= 1 && s.N >= 1 && s.H >= 1 && s.D >= 1 && s.E >= 1; }

/// Byte ranges of every user buffer of a call (for the workspace of a refusing rank).
template <class T, class D>
std::vector<Extent> user_extents(const ForwardArgs<T, D>& a, const Shape& s) {
  return {extent(a.q, s, s.D), extent(a.k, s, s.D), extent(a.v, s, s.E), extent(a.o, s, s.E),
          state_extent(a.initial_state, s), state_extent(a.final_state, s), gate_extent(D::input_gates(a.decay), s)};
}
template <class T, class D>
std::vector<Extent> user_extents(const BackwardArgs<T, D>& a, const Shape& s) {
  return {extent(a.q, s, s.D),     extent(a.k, s, s.D),      extent(a.v, s, s.E),
          extent(a.dout, s, s.E),  extent(a.dq, s, s.D),     extent(a.dk, s, s.D),
          extent(a.dv, s, s.E),    gate_extent(a.dg, s),     gate_extent(D::input_gates(a.decay), s),
          state_extent(a.d_final_state, s), state_extent(a.d_initial_state, s)};
}

/// The messages of a call whose agreed verdict is a refusal (device backends: every rank keeps
/// the collectives matched): the plain call's scan (and the gates' suffix sum) from this rank's
/// workspace, touching no user buffer. Packed and zigzag calls fall back to these too, so a
/// group whose ranks disagree on the layout stays in step (kPeerMismatch).
template <bool Forward, class Policy, class Backend, class Comm, class Regions>
Status refused_messages(bool plan_hop, Comm& comm, Layout<Regions>& lay, const Shape& s,
                        typename Comm::stream_type stream) {
  using Schedule = typename Policy::Schedule;
  const schedule::StateDims d = group_dims<Backend>(s, plan_hop, false, lay);
  if constexpr (Forward) {
    return Schedule::template forward<Backend>(comm, d, lay.AL, lay.P, nullptr, nullptr, lay.tmp, lay.gathered, stream);
  } else {
    LASP_RETURN_IF_ERROR(
        (Schedule::template backward<Backend>(comm, d, lay.M, lay.G, nullptr, nullptr, lay.tmp, lay.gathered, stream)));
    if constexpr (Policy::Decay::kHasGradient)
      LASP_RETURN_IF_ERROR((Schedule::template suffix_sum<Backend>(comm, d.bh, lay.dc, lay.dc + d.bh, lay.tmp,
                                                                   lay.dc_gathered, stream)));
    return Status::kSuccess;
  }
}

/// A rank that refused the call (`local`) takes part in what its peers do, touching no user
/// buffer (see the file comment), and returns `local`, or the agreed status where the backend
/// reads it at once. `a` only locates the user buffers its workspace must not overlap.
template <bool Forward, class Policy, class Backend, class T, class Comm, class Args>
Status refuse(PlanPtr<Policy, T> plan, const Args& a, Comm& comm, const Workspace& ws,
              typename Comm::stream_type stream, Status local) {
  using U = std::remove_const_t<T>;
  using Lay = Layout<typename Backend::Regions>;
  if (comm.size() < 2) return local;
  if constexpr (Backend::kSyncVerdict) {
    return agree_call<Backend>(comm, local, static_cast<Lay*>(nullptr), stream, layout_mode(a));
  } else {
    // The messages are sized by B, H, D, E of the group (the plan's, else this rank's
    // arguments') and by the communicator's R; the driver's regions, which are all this rank
    // touches, do not depend on N (they come first in the layout).
    Shape s = plan && plan->valid() ? plan->shape() : a.shape;
    s.R = comm.size();
    if (s.N < 1) s.N = 1;
    bool usable = shape_positive(s) && ws.ptr && aligned16(ws.ptr) && aligned16(ws.scratch) &&
                  check_workspace<Policy, Backend, U>(s, ws) == Status::kSuccess;
    if (usable) {
      const Shape& xs = shape_positive(a.shape) ? a.shape : s;
      const WorkspaceSizes z = sizes<Policy, Backend, U>(s);
      const Extent mine[] = {ws.scratch ? byte_extent(ws.ptr, z.reserve) : byte_extent(ws.ptr, z.single()),
                             byte_extent(ws.scratch, z.scratch)};
      for (const Extent& u : user_extents(a, xs))
        for (const Extent& m : mine) usable = usable && !overlaps(u, m);
    }
    if (!usable) return local;  // cannot take part: its peers will wait (README "Limits")
    Ctx<typename Comm::stream_type, typename Backend::Regions> c{bind<Policy, Backend, U>(s, ws), stream};
    if constexpr (Forward) LASP_RETURN_IF_ERROR(Backend::unmark_forwarded(c));
    const Status agreed = agree_call<Backend>(comm, local, &c.lay, stream, layout_mode(a));
    if (agreed == Status::kCommError || agreed == Status::kCudaError) return agreed;
    LASP_RETURN_IF_ERROR((refused_messages<Forward, Policy, Backend>(plan && plan->single_hop(), comm, c.lay, s, stream)));
    return local;
  }
}

// ---- packed documents and the zigzag layout (backends with kPackedSequences) ----------------

/// StateDims of a packed / zigzag call: zigzag segments hold N / 2 tokens, so a plan's single
/// hop (decided over N) is not taken; Truncated<Chain> decides rank by rank over N / 2.
template <class Policy, class Backend, class Args, class Regions>
schedule::StateDims segment_dims(bool plan_hop, const Args& a, const Layout<Regions>& lay) {
  const bool zz = a.sharding == Sharding::kZigzag;
  Shape seg = a.shape;
  if (zz) seg.N = a.shape.N / 2;
  return group_dims<Backend>(a.shape, !zz && plan_hop, Policy::Decay::single_hop(a.decay, seg), lay);
}

/// The geometry of a packed / zigzag call (after the agreement: exchange_geometry).
template <class Backend, class Args, class Comm, class C>
Status open_segments(const Args& a, Comm& comm, C& c, typename Comm::stream_type stream, Geometry* geo) {
  LASP_RETURN_IF_ERROR(exchange_geometry<Backend>(comm, a, Status::kSuccess, c.lay.geo, stream, geo));
  c.geo = geo;
  return Status::kSuccess;
}

/// Packed / zigzag calls on device backends with R > 1 read the agreement's verdict on the host
/// before the geometry exchange (they synchronise for it anyway): when a rank refused, or the
/// ranks' layouts differ, every rank runs the plain call's messages (refused_messages) and
/// returns the verdict, like the host backend.
template <bool Forward, class Policy, class Backend, class T, class Comm, class C>
Status packed_verdict(PlanPtr<Policy, T> plan, const Shape& s, Comm& comm, C& c, typename Comm::stream_type stream) {
  if constexpr (!Backend::kSyncVerdict) {
    if (comm.size() > 1) {
      const Status v = Backend::read_verdict(c.lay.header, stream);
      if (v != Status::kSuccess) {
        LASP_RETURN_IF_ERROR((refused_messages<Forward, Policy, Backend>(plan && plan->single_hop(), comm, c.lay, s, stream)));
        return v;
      }
    }
  }
  return Status::kSuccess;
}

/// Forward of a packed and/or zigzag call (after the agreement): the geometry, each segment's
/// summary, the scan (zigzag: fronts in rank order, then backs in reverse rank order fed with
/// the state leaving segment R-1), each segment's outputs.
template <class Policy, class Backend, class T, class Comm, class C>
Status forward_segments(PlanPtr<Policy, T> plan, const ForwardArgs<T, typename Policy::Decay>& a, Comm& comm, C& c,
                        typename Comm::stream_type stream) {
  using Schedule = typename Policy::Schedule;
  Geometry geo;
  LASP_RETURN_IF_ERROR(open_segments<Backend>(a, comm, c, stream, &geo));
  c.tag = layout_tag(a);
  const schedule::StateDims d = segment_dims<Policy, Backend>(plan && plan->single_hop(), a, c.lay);
  const int r = comm.rank(), R = comm.size();
  float* AL[2] = {c.lay.AL, c.lay.AL2};
  float* P[2] = {c.lay.P, c.lay.P2};
  for (int k = 0; k < geo.segments; ++k) {
    c.seg = k;
    LASP_RETURN_IF_ERROR(Backend::template rank_summary<Policy>(a, AL[k], c));
  }
  if (geo.segments == 1) {
    LASP_RETURN_IF_ERROR((Schedule::template forward<Backend>(comm, d, AL[0], P[0], r == 0 ? a.initial_state : nullptr,
                                                              r == R - 1 ? a.final_state : nullptr, c.lay.tmp,
                                                              c.lay.gathered, stream)));
  } else {
    // Fronts: segments 0..R-1; rank R-1 gets X, the state leaving segment R-1.
    LASP_RETURN_IF_ERROR((Schedule::template forward<Backend>(comm, d, AL[0], P[0], r == 0 ? a.initial_state : nullptr,
                                                              r == R - 1 ? c.lay.X : nullptr, c.lay.tmp,
                                                              c.lay.gathered, stream)));
    // Backs: segments R..2R-1 are ranks R-1..0, the order of the reverse scan, entered with X;
    // the state leaving segment 2R-1 (rank 0) is the final state.
    LASP_RETURN_IF_ERROR((Schedule::template backward<Backend>(comm, d, AL[1], P[1], r == R - 1 ? c.lay.X : nullptr,
                                                               r == 0 ? a.final_state : nullptr, c.lay.tmp,
                                                               c.lay.gathered, stream)));
  }
  for (int k = 0; k < geo.segments; ++k) {
    c.seg = k;
    LASP_RETURN_IF_ERROR(Backend::template forward_outputs<Policy>(a, P[k], c));
  }
  c.geo = nullptr;
  return Backend::mark_forwarded(a.shape, c);
}

/// Backward of a packed and/or zigzag call: the reverse of forward_segments. The backend's
/// rank-local gradients are complete (kPackedSequences backends compute dg from the full states
/// entering and leaving each chunk), so no suffix sum follows.
template <class Policy, class Backend, class T, class Comm, class C>
Status backward_segments(PlanPtr<Policy, T> plan, const BackwardArgs<T, typename Policy::Decay>& a, Comm& comm, C& c,
                         typename Comm::stream_type stream) {
  using Schedule = typename Policy::Schedule;
  Geometry geo;
  LASP_RETURN_IF_ERROR(open_segments<Backend>(a, comm, c, stream, &geo));
  c.tag = layout_tag(a);
  const schedule::StateDims d = segment_dims<Policy, Backend>(plan && plan->single_hop(), a, c.lay);
  const int r = comm.rank(), R = comm.size();
  float* AL[2] = {c.lay.AL, c.lay.AL2};
  float* P[2] = {c.lay.P, c.lay.P2};
  float* M[2] = {c.lay.M, c.lay.M2};
  float* G[2] = {c.lay.G, c.lay.G2};
  for (int k = 0; k < geo.segments; ++k) {
    c.seg = k;
    LASP_RETURN_IF_ERROR(Backend::copy(M[k], AL[k], std::size_t(d.bh), stream));
    LASP_RETURN_IF_ERROR(Backend::template backward_summary<Policy>(a, P[k], M[k] + d.bh, c));
  }
  if (geo.segments == 1) {
    LASP_RETURN_IF_ERROR((Schedule::template backward<Backend>(comm, d, M[0], G[0],
                                                               r == R - 1 ? a.d_final_state : nullptr,
                                                               r == 0 ? a.d_initial_state : nullptr, c.lay.tmp,
                                                               c.lay.gathered, stream)));
  } else {
    // Backs in reverse virtual order (2R-1 .. R = ranks 0 .. R-1): the rank-ordered scan,
    // entered with dS_final on rank 0; rank R-1 gets X, the gradient leaving segment R-1.
    LASP_RETURN_IF_ERROR((Schedule::template forward<Backend>(comm, d, M[1], G[1], r == 0 ? a.d_final_state : nullptr,
                                                              r == R - 1 ? c.lay.X : nullptr, c.lay.tmp,
                                                              c.lay.gathered, stream)));
    // Fronts (R-1 .. 0): the reverse scan entered with X; rank 0 gets dS_init.
    LASP_RETURN_IF_ERROR((Schedule::template backward<Backend>(comm, d, M[0], G[0], r == R - 1 ? c.lay.X : nullptr,
                                                               r == 0 ? a.d_initial_state : nullptr, c.lay.tmp,
                                                               c.lay.gathered, stream)));
  }
  for (int k = 0; k < geo.segments; ++k) {
    c.seg = k;
    LASP_RETURN_IF_ERROR(Backend::template backward_local<Policy>(a, P[k], c));
    LASP_RETURN_IF_ERROR(Backend::template backward_outputs<Policy>(a, P[k], G[k], nullptr, c.lay.dc, c));
  }
  c.geo = nullptr;
  return Status::kSuccess;
}

// ---- forward and backward ---------------------------------------------------------------------

template <class Policy, class Backend, class T, class Comm>
Status forward(PlanPtr<Policy, T> plan, const ForwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
               typename Comm::stream_type stream) {
  using U = std::remove_const_t<T>;
  using Schedule = typename Policy::Schedule;
  const Status local = check_forward_call<Policy, Backend>(plan, a, comm, ws);
  if (local != Status::kSuccess) return refuse<true, Policy, Backend, T>(plan, a, comm, ws, stream, local);
  Ctx<typename Comm::stream_type, typename Backend::Regions> c{bind<Policy, Backend, U>(a.shape, ws), stream};
  // The reserve is about to be overwritten: a forward that does not complete must not leave the
  // previous forward's mark on it.
  LASP_RETURN_IF_ERROR(Backend::unmark_forwarded(c));
  LASP_RETURN_IF_ERROR(agree_call<Backend>(comm, Status::kSuccess, &c.lay, stream, layout_mode(a)));
  if constexpr (supports_packed<Backend>::value) {
    if (layout_mode(a)) {
      LASP_RETURN_IF_ERROR((packed_verdict<true, Policy, Backend, T>(plan, a.shape, comm, c, stream)));
      return forward_segments<Policy, Backend>(plan, a, comm, c, stream);
    }
  }
  const schedule::StateDims d = group_dims<Backend>(a.shape, plan && plan->single_hop(),
                                                    Policy::Decay::single_hop(a.decay, a.shape), c.lay);
  const bool last = comm.rank() == comm.size() - 1;
  LASP_RETURN_IF_ERROR(Backend::template rank_summary<Policy>(a, c.lay.AL, c));
  LASP_RETURN_IF_ERROR((Schedule::template forward<Backend>(
      comm, d, c.lay.AL, c.lay.P, comm.rank() == 0 ? a.initial_state : nullptr, last ? a.final_state : nullptr,
      c.lay.tmp, c.lay.gathered, stream)));
  LASP_RETURN_IF_ERROR(Backend::template forward_outputs<Policy>(a, c.lay.P, c));
  return Backend::mark_forwarded(a.shape, c);
}

template <class Policy, class Backend, class T, class Comm>
Status backward(PlanPtr<Policy, T> plan, const BackwardArgs<T, typename Policy::Decay>& a, Comm& comm, Workspace ws,
                typename Comm::stream_type stream) {
  using U = std::remove_const_t<T>;
  using Schedule = typename Policy::Schedule;
  const Status local = check_backward_call<Policy, Backend>(plan, a, comm, ws);
  if (local != Status::kSuccess) return refuse<false, Policy, Backend, T>(plan, a, comm, ws, stream, local);
  Ctx<typename Comm::stream_type, typename Backend::Regions> c{bind<Policy, Backend, U>(a.shape, ws), stream};
  LASP_RETURN_IF_ERROR(agree_call<Backend>(comm, Status::kSuccess, &c.lay, stream, layout_mode(a)));
  if constexpr (supports_packed<Backend>::value) {
    if (layout_mode(a)) {
      LASP_RETURN_IF_ERROR((packed_verdict<false, Policy, Backend, T>(plan, a.shape, comm, c, stream)));
      return backward_segments<Policy, Backend>(plan, a, comm, c, stream);
    }
  }
  const schedule::StateDims d = group_dims<Backend>(a.shape, plan && plan->single_hop(),
                                                    Policy::Decay::single_hop(a.decay, a.shape), c.lay);
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
