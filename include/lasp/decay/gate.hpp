#pragma once
// decay::Gate: a_t = exp(g_{t,h}), per-token log-gates g <= 0 (Mamba-2, simple GLA,
// HGRN-style). The interface every scheme provides is described in none.hpp.
//
// `g` lives where q/k/v live (device memory for the CUDA backend, which checks the values on
// the device: see cuda::deferred_status). Backward writes dg (BackwardArgs::dg).
#include <cmath>
#include <cstdint>
#include "../config.hpp"
#include "../status.hpp"
#include "../tensor.hpp"

LASP_NAMESPACE_BEGIN
namespace decay {

struct Gate {
  static constexpr const char* kName = "gate";
  static constexpr bool kPerToken = true;
  static constexpr bool kHasGradient = true;
  struct Params {
    ConstGateTensor g;  // (B,N,H) fp32, g <= 0
  };
  struct DeviceParams {
    ConstGateTensor g;
    GateTensor dg;  // backward only
  };

  static Status check(const Params& p, const Shape& s) {
    if (!p.g.ptr) return s.N == 0 ? Status::kSuccess : Status::kNullPointer;  // N = 0: nothing read
    if (p.g.stride_b < 0 || p.g.stride_n < 0 || p.g.stride_h < 0) return Status::kInvalidShape;
    if (reinterpret_cast<std::uintptr_t>(p.g.ptr) % alignof(float)) return Status::kMisaligned;
    return Status::kSuccess;
  }
  /// Reads every value: only where the gates are host memory.
  static Status check_values(const Params& p, const Shape& s) {
    for (index_t b = 0; b < s.B; ++b)
      for (index_t n = 0; n < s.N; ++n)
        for (index_t h = 0; h < s.H; ++h) {
          const float g = p.g(b, n, h);
          if (!(g <= 0.f) || !std::isfinite(g)) return Status::kInvalidDecay;
        }
    return Status::kSuccess;
  }
  static ConstGateTensor input_gates(const Params& p) { return p.g; }
  static const void* host_memory(const Params&) { return nullptr; }
  static bool single_hop(const Params&, const Shape&) { return false; }  // values are not host-readable
  static DeviceParams device_params(const Params& p, const Shape&, GateTensor dg = {}) { return {p.g, dg}; }
  LASP_HD static float log_decay(const Params& p, index_t b, index_t n, index_t h) { return p.g(b, n, h); }

#if defined(__CUDACC__)
  /// Warp 0 calls both: load issues the global loads into registers (they complete in the
  /// background), finish scans them later, when the values are needed (so a kernel can prefetch).
  template <int C>
  struct Chunk {
    static constexpr int kPer = (C + 31) / 32;
    float v[kPer];
    /// `status` non-null: gate values > 0 or not finite set bit 0 of *status.
    LASP_DEVICE void load(const DeviceParams& d, index_t b, index_t n0, index_t h, int len, int lane,
                          unsigned* status = nullptr) {
      bool bad = false;
      #pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int i = lane * kPer + e;
        v[e] = (i < len && i < C) ? d.g(b, n0 + i, h) : 0.f;
        bad |= !(v[e] <= 0.f && isfinite(v[e]));
      }
      if (status && bad) atomicOr(status, 1u);
    }
    LASP_DEVICE void finish(float* sg, const DeviceParams&, index_t, int lane) const {
      float run = 0.f, w[kPer];
      #pragma unroll
      for (int e = 0; e < kPer; ++e) { run += v[e]; w[e] = run; }
      float tot = run;
      #pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float y = __shfl_up_sync(0xffffffffu, tot, o);
        if (lane >= o) tot += y;
      }
      const float before = tot - run;
      #pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int i = lane * kPer + e;
        if (i < C) sg[i] = before + w[e];
      }
    }
  };
#endif
};

}  // namespace decay
LASP_NAMESPACE_END
