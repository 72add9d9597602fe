#pragma once
// decay::None: a_t = 1 (plain Linear Transformer).
//
// A decay scheme is one self-contained struct (this file, per_head.hpp and gate.hpp are the
// three shipped; a new scheme is one new file of the same shape). What the rest of lasp asks
// of a scheme, and nothing else names a scheme:
//   kName, kPerToken (values per token, not per head), kHasGradient (backward writes dg);
//   Params            what the user passes in ForwardArgs/BackwardArgs::decay;
//   DeviceParams      what kernels get by value; device_params(Params, Shape, dg) builds it;
//   check(Params, Shape)          host checks that read no device memory (every backend);
//   check_values(Params, Shape)   checks of the values themselves where they are host memory
//                                 (the host backend; the CUDA backend checks on the device);
//   input_gates(Params)           a per-token input tensor, for the overlap checks ({} if none);
//   host_memory(Params)           a pointer lasp reads on the host (must not be device memory), or null;
//   single_hop(Params, Shape)     schedule::Truncated: is the decay over one rank below fp32
//                                 resolution on every head, so one neighbour hop is exact?
//   log_decay(Params, b, n, h)    log a_t (host backend, reference-style code);
//   Chunk<C>                      the kernels' per-chunk hook: load(...) issues the loads of a
//                                 chunk's values (and checks them when given a status word),
//                                 finish(sg, ...) writes the in-chunk cumulative log-decay
//                                 g_i = sum_{j<=i} log a_j for i in [0, C) (math.md section 2).
#include "../config.hpp"
#include "../status.hpp"
#include "../tensor.hpp"

LASP_NAMESPACE_BEGIN
namespace decay {

struct None {
  static constexpr const char* kName = "none";
  static constexpr bool kPerToken = false;
  static constexpr bool kHasGradient = false;
  struct Params {};
  struct DeviceParams {};

  static Status check(const Params&, const Shape&) { return Status::kSuccess; }
  static Status check_values(const Params&, const Shape&) { return Status::kSuccess; }
  static ConstGateTensor input_gates(const Params&) { return {}; }
  static const void* host_memory(const Params&) { return nullptr; }
  static bool single_hop(const Params&, const Shape&) { return false; }
  static DeviceParams device_params(const Params&, const Shape&, GateTensor = {}) { return {}; }
  LASP_HD static float log_decay(const Params&, index_t, index_t, index_t) { return 0.f; }

#if defined(__CUDACC__)
  template <int C>
  struct Chunk {
    LASP_DEVICE void load(const DeviceParams&, index_t, index_t, index_t, int, int, unsigned* = nullptr) {}
    LASP_DEVICE void finish(float* sg, const DeviceParams&, index_t, int lane) const {
      for (int i = lane; i < C; i += 32) sg[i] = 0.f;
    }
  };
#endif
};

}  // namespace decay
LASP_NAMESPACE_END
