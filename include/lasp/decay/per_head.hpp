#pragma once
// decay::PerHead: a_t = exp(-s_h), per-head constant slopes (TransNormerLLM, Lightning
// Attention, RetNet). The interface every scheme provides is described in none.hpp.
//
// `slopes` points to H fp32 values in HOST memory for every backend: lasp validates them on the
// host at each call (no device read, no synchronisation) and passes them to kernels by value,
// so at most kMaxHeads heads. Slopes are fixed buffers: no gradient.
#include <cmath>
#include "../config.hpp"
#include "../status.hpp"
#include "../tensor.hpp"

LASP_NAMESPACE_BEGIN
namespace decay {

struct PerHead {
  static constexpr const char* kName = "per-head";
  static constexpr bool kPerToken = false;
  static constexpr bool kHasGradient = false;
  static constexpr index_t kMaxHeads = 1024;
  struct Params {
    const float* slopes = nullptr;  // (H) host memory, s_h >= 0
  };
  struct DeviceParams {
    float slopes[kMaxHeads];
  };

  static Status check(const Params& p, const Shape& s) {
    if (!p.slopes) return Status::kNullPointer;
    if (s.H > kMaxHeads) return Status::kInvalidShape;
    for (index_t h = 0; h < s.H; ++h)
      if (!(p.slopes[h] >= 0.f) || !std::isfinite(p.slopes[h])) return Status::kInvalidDecay;
    return Status::kSuccess;
  }
  static Status check_values(const Params&, const Shape&) { return Status::kSuccess; }  // done by check()
  static ConstGateTensor input_gates(const Params&) { return {}; }
  static const void* host_memory(const Params& p) { return p.slopes; }

  /// exp(-s_h N) < 2^-24  <=>  s_h N > 24 ln 2 = 16.64 on every head (math.md section 3.3).
  static bool single_hop(const Params& p, const Shape& s) {
    for (index_t h = 0; h < s.H; ++h)
      if (!(double(p.slopes[h]) * double(s.N) > 16.64)) return false;
    return true;
  }
  static DeviceParams device_params(const Params& p, const Shape& s, GateTensor = {}) {
    DeviceParams d{};
    for (index_t h = 0; h < s.H; ++h) d.slopes[h] = p.slopes[h];
    return d;
  }
  LASP_HD static float log_decay(const Params& p, index_t, index_t, index_t h) { return -p.slopes[h]; }

#if defined(__CUDACC__)
  template <int C>
  struct Chunk {
    int len = 0;
    LASP_DEVICE void load(const DeviceParams&, index_t, index_t, index_t, int len_, int, unsigned* = nullptr) {
      len = len_;
    }
    LASP_DEVICE void finish(float* sg, const DeviceParams& d, index_t h, int lane) const {
      const float s = d.slopes[h];
      for (int i = lane; i < C; i += 32) sg[i] = -s * float(min(i + 1, len));
    }
  };
#endif
};

}  // namespace decay
LASP_NAMESPACE_END
