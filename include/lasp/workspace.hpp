#pragma once
// Layout of the workspace: a reserve that lives from forward to backward, then scratch.
// All regions are fp32 and 256-byte aligned.
#include <cstddef>
#include <cstdint>
#include "args.hpp"

namespace lasp::detail {

constexpr std::size_t align_up(std::size_t x, std::size_t a = 256) { return (x + a - 1) / a * a; }

/// Carves the workspace. `extra_reserve` / `extra_scratch` are backend-specific byte counts
/// (e.g. the CUDA backend's per-segment summaries).
struct WorkspaceLayout {
  // Reserve (kept between forward and backward).
  std::uint32_t* header = nullptr;  // [0] forward-done tag (host backend), [1] deferred device status
  float* P = nullptr;               // (B,H,D,E) state entering this rank
  float* AL = nullptr;              // [A (B*H) | L (B*H*D*E)] this rank's summary
  void* backend_reserve = nullptr;
  // Scratch (reused by every call).
  float* tmp = nullptr;       // (B*H) + (B*H*D*E): outgoing state / reverse-scan temporaries
  float* gathered = nullptr;  // R x [A | L] for the all-gather schedule (else empty)
  float* M = nullptr;         // [A | M] backward summary (B*H + B*H*D*E)
  float* G = nullptr;         // (B,H,D,E) gradient of the state leaving this rank
  float* dc = nullptr;        // (B*H) gates: this rank's total dLoss/dc; then (B*H) suffix from later ranks
  float* dc_gathered = nullptr;  // R x (B*H): gates' dc totals of every rank
  void* backend_scratch = nullptr;
  std::size_t bytes = 0;

  index_t bh = 0, de = 0;
  const float* A() const { return AL; }
  const float* L() const { return AL + bh; }

  WorkspaceLayout(const Shape& s, bool gather, std::size_t extra_reserve, std::size_t extra_scratch,
                  void* base = nullptr) {
    bh = s.B * s.H;
    de = s.D * s.E;
    const std::size_t state = std::size_t(bh * de) * sizeof(float);
    const std::size_t summary = std::size_t(bh * (1 + de)) * sizeof(float);
    auto* p = static_cast<char*>(base);
    std::size_t off = 0;
    auto take = [&](std::size_t n) {
      char* r = p ? p + off : nullptr;
      off += align_up(n);
      return r;
    };
    header = reinterpret_cast<std::uint32_t*>(take(256));
    P = reinterpret_cast<float*>(take(state));
    AL = reinterpret_cast<float*>(take(summary));
    backend_reserve = take(extra_reserve);
    tmp = reinterpret_cast<float*>(take(summary));
    gathered = reinterpret_cast<float*>(take(gather ? summary * std::size_t(s.R) : 0));
    M = reinterpret_cast<float*>(take(summary));
    G = reinterpret_cast<float*>(take(state));
    dc = reinterpret_cast<float*>(take(std::size_t(2 * bh) * sizeof(float)));
    dc_gathered = reinterpret_cast<float*>(take(std::size_t(bh) * s.R * sizeof(float)));
    backend_scratch = take(extra_scratch);
    bytes = off;
  }
};

}  // namespace lasp::detail
