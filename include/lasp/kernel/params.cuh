#pragma once
// Kernel parameters shared by the chunk kernels, and the device side of the decay policies:
// each kernel asks for the in-chunk cumulative log-decay g_i (math.md section 2).
#include <cuda_runtime.h>
#include <type_traits>
#include "../args.hpp"
#include "../policy/decay.hpp"

namespace lasp::kernel {

/// Device parameters of a decay policy (passed by value in the kernel parameters).
template <class Decay> struct DecayDev;
template <> struct DecayDev<decay::None> {};
template <> struct DecayDev<decay::PerHead> { float slopes[decay::PerHead::kMaxHeads]; };
template <> struct DecayDev<decay::Gate> { ConstGateTensor g; GateTensor dg; };

/// Everything a chunk kernel may need. One struct for all kernels keeps dispatch simple; each
/// kernel reads only its fields.
template <class T, class Decay>
struct ChunkParams {
  Tensor<const T> q, k, v, dout;
  Tensor<T> o, dq, dk, dv;
  index_t B = 0, N = 0, H = 0;
  float scale = 1.f;
  DecayDev<Decay> decay{};
  int nseg = 1;        // segments per (b,h) on this rank
  index_t seg_len = 0; // tokens per segment (a multiple of the chunk)
  // Per-segment summaries, [nseg][B*H] scalars and [nseg][B*H][D*E] states (fp32).
  float* seg_A = nullptr;
  float* seg_S = nullptr;
  float* seg_Apre = nullptr;   // product of A over earlier segments (forward set)
  float* seg_M = nullptr;      // backward set: [nseg][B*H][D*E] M_seg, then Y_seg (suffix from zero)
  float* seg_Apost = nullptr;  // product of A over later segments
  const float* rank_grad = nullptr;  // G_r (backward)
  const float* rank_state = nullptr;  // P_r, (B*H, D*E)
  float* qdq = nullptr;        // gates backward: q.dq per token, [B*H][N]
  float* seg_dc = nullptr;     // gates backward: per-segment dc totals, [nseg][B*H]
  unsigned* status = nullptr;  // deferred device status (bit 0: invalid gate value)
};

/// The decay split in two so that a kernel can prefetch: `load` issues the global loads of a
/// chunk's per-token values into registers (gates only; the loads complete in the background),
/// `finish` scans them into sg[0..C) later, when the values are needed. Warp 0 calls both.
template <int C, class Decay>
struct ChunkDecay {
  static constexpr int kPer = (C + 31) / 32;
  float v[kPer];
  int len = 0;
  index_t n0 = 0;
  /// `status` non-null: gate values > 0 or not finite set bit 0 of *status (the passes that
  /// read the gates first check them; the output passes run after and skip on it).
  LASP_DEVICE void load(const DecayDev<Decay>& d, index_t b, index_t n0_, index_t h, int len_, int lane,
                        unsigned* status = nullptr) {
    len = len_;
    n0 = n0_;
    if constexpr (Decay::kPerToken) {
      bool bad = false;
      #pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int i = lane * kPer + e;
        v[e] = (i < len && i < C) ? d.g(b, n0 + i, h) : 0.f;
        bad |= !(v[e] <= 0.f && isfinite(v[e]));
      }
      if (status && bad) atomicOr(status, 1u);
    }
  }
  LASP_DEVICE void finish(float* sg, const DecayDev<Decay>& d, index_t h, int lane) const {
    if constexpr (std::is_same_v<Decay, decay::None>) {
      for (int i = lane; i < C; i += 32) sg[i] = 0.f;
    } else if constexpr (std::is_same_v<Decay, decay::PerHead>) {
      const float s = d.slopes[h];
      for (int i = lane; i < C; i += 32) sg[i] = -s * float(min(i + 1, len));
    } else {
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
  }
};

/// The whole decay of a chunk at once (loads, optional gate check, scan into sg); warp 0 calls it
/// and the caller synchronises.
template <int C, class Decay>
LASP_DEVICE void chunk_log_decay(float* sg, const DecayDev<Decay>& d, index_t b, index_t n0, index_t h, int len,
                                 int lane, unsigned* status, bool check) {
  ChunkDecay<C, Decay> cd;
  cd.load(d, b, n0, h, len, lane, check ? status : nullptr);
  cd.finish(sg, d, h, lane);
}

}  // namespace lasp::kernel
