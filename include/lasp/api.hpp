#pragma once
// Public entry points. The backend follows from the communicator: host communicators run the
// host backend (this header), device communicators the CUDA backend (<lasp/lasp.cuh>).
//
//   using P = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
//   lasp::ForwardArgs<lasp::bf16, lasp::decay::PerHead> fa{shape, q, k, v, o, scale, {slopes}};
//   std::vector<std::byte> ws(lasp::workspace_size<P, lasp::bf16>(shape, comm));
//   lasp::Status st = lasp::forward<P>(fa, comm, {ws.data(), ws.size()});
#include <type_traits>
#include "comm/concept.hpp"
#include "schedule/driver.hpp"

namespace lasp {

/// Selects the backend of a communicator: specialised by host/backend.hpp (false) and by the
/// CUDA backend (true).
template <bool DeviceMemory>
struct backend_select;
template <class Comm>
using backend_for = typename backend_select<Comm::kDeviceMemory>::type;

/// Bytes of workspace for forward+backward of `shape` under Policy with element type T.
template <class Policy, class T, class Comm>
[[nodiscard]] std::size_t workspace_size(const Shape& shape, const Comm&) {
  return sched::workspace_size<Policy, backend_for<Comm>, std::remove_const_t<T>>(shape);
}

/// Would forward accept these arguments? kSuccess, or the status forward would return.
template <class Policy, class T, class Comm>
[[nodiscard]] Status can_implement(const ForwardArgs<T, typename Policy::Decay>& args, const Comm& comm,
                                   const Workspace& ws) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return sched::can_implement_forward<Policy, backend_for<Comm>>(args, comm, ws);
}
template <class Policy, class T, class Comm>
[[nodiscard]] Status can_implement(const BackwardArgs<T, typename Policy::Decay>& args, const Comm& comm,
                                   const Workspace& ws) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return sched::can_implement_backward<Policy, backend_for<Comm>>(args, comm, ws);
}

/// Forward of this SP rank's segment. Never allocates, never synchronises the device, never
/// owns the communicator. Outputs are untouched unless kSuccess is returned (for the CUDA backend
/// see also cuda::deferred_status for device-side checks of gate values).
template <class Policy, class T, class Comm>
[[nodiscard]] Status forward(const ForwardArgs<T, typename Policy::Decay>& args, Comm& comm, Workspace ws,
                             typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return sched::forward<Policy, backend_for<Comm>>(args, comm, ws, stream);
}

/// Backward of this SP rank's segment; `ws` must be the workspace of the matching forward.
template <class Policy, class T, class Comm>
[[nodiscard]] Status backward(const BackwardArgs<T, typename Policy::Decay>& args, Comm& comm, Workspace ws,
                              typename Comm::stream_type stream = {}) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  return sched::backward<Policy, backend_for<Comm>>(args, comm, ws, stream);
}

}  // namespace lasp
