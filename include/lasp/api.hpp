#pragma once
// Public entry points. The backend follows from the communicator (backend/select.hpp): host
// communicators run the host backend (always available from this header), device communicators
// the CUDA backend (<lasp/lasp.cuh>).
//
//   using P = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
//   lasp::ForwardArgs<lasp::bf16, lasp::decay::PerHead> fa{shape, q, k, v, o, scale, {slopes}};
//   std::vector<std::byte> ws(lasp::workspace_size<P, lasp::bf16>(shape, comm));
//   lasp::Status st = lasp::forward<P>(fa, comm, {ws.data(), ws.size()});
#include <type_traits>
#include "args.hpp"
#include "backend/host/backend.hpp"
#include "backend/select.hpp"
#include "comm/concept.hpp"
#include "driver/driver.hpp"
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

/// Would forward accept these arguments? kSuccess, or the status forward would return.
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

/// Forward of this SP rank's segment. Never allocates, never synchronises the device, never
/// owns the communicator. Outputs are untouched unless kSuccess is returned (for the CUDA backend
/// see also cuda::deferred_status for device-side checks of gate values).
template <class Policy, class T, class Comm>
[[nodiscard]] Status forward(const ForwardArgs<T, typename Policy::Decay>& args, Comm& comm, Workspace ws,
                             typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::forward<Policy, backend::for_comm<Comm>>(args, comm, ws, stream);
}

/// Backward of this SP rank's segment; `ws` must hold the reserve of the matching forward (the
/// scratch may be any region of the right size).
template <class Policy, class T, class Comm>
[[nodiscard]] Status backward(const BackwardArgs<T, typename Policy::Decay>& args, Comm& comm, Workspace ws,
                              typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return driver::backward<Policy, backend::for_comm<Comm>>(args, comm, ws, stream);
}

LASP_NAMESPACE_END
