#pragma once
// Decay policies (math.md section 1). A decay is a small struct: its Params travel inside the
// argument structs, and its member functions give log a_t, shared by the CUDA kernels, the host
// backend and the reference so that all three compute the same operator.
#include "../config.hpp"
#include "../tensor.hpp"

namespace lasp::decay {

/// a_t = 1 (plain Linear Transformer).
struct None {
  static constexpr const char* kName = "none";
  static constexpr bool kPerToken = false;
  static constexpr bool kHasGradient = false;
  struct Params {};
  LASP_HD static float log_decay(const Params&, index_t, index_t, index_t) { return 0.f; }
};

/// a_t = exp(-s_h): per-head constant slopes (TransNormerLLM, Lightning Attention, RetNet).
/// `slopes` points to H fp32 values in HOST memory for every backend: lasp validates them on the
/// host at each call (no device read, no synchronisation) and passes them to kernels by value.
/// At most kMaxHeads heads. Slopes are fixed buffers: no gradient.
struct PerHead {
  static constexpr const char* kName = "per-head";
  static constexpr bool kPerToken = false;
  static constexpr bool kHasGradient = false;
  static constexpr index_t kMaxHeads = 1024;
  struct Params {
    const float* slopes = nullptr;  // (H) host memory, s_h >= 0
  };
  LASP_HD static float log_decay(const Params& p, index_t, index_t, index_t h) { return -p.slopes[h]; }
};

/// a_t = exp(g_{t,h}): per-token log-gates g <= 0 (Mamba-2, simple GLA, HGRN-style).
/// `g` lives where q/k/v live (device memory for the CUDA backend). Backward gives dg.
struct Gate {
  static constexpr const char* kName = "gate";
  static constexpr bool kPerToken = true;
  static constexpr bool kHasGradient = true;
  struct Params {
    ConstGateTensor g;  // (B,N,H) fp32, g <= 0
  };
  LASP_HD static float log_decay(const Params& p, index_t b, index_t n, index_t h) { return p.g(b, n, h); }
};

}  // namespace lasp::decay
