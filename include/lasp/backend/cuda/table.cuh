#pragma once
// The kernel table: (architecture, D, E, element type) -> the kernel classes that run a call.
// The element type and the policies are compile-time; the architecture (from the device's
// compute capability) and D, E are chosen at run time here, and nowhere else. A new family
// (e.g. sm_90 with TMA and wgmma) is one more struct of the same shape and one more branch.
#include "../../kernel/sm80/bwd_dkdv.cuh"
#include "../../kernel/sm80/bwd_dq.cuh"
#include "../../kernel/sm80/bwd_summary.cuh"
#include "../../kernel/sm80/fwd_output.cuh"
#include "../../kernel/sm80/fwd_summary.cuh"
#include "../../status.hpp"
#include "device.cuh"
#include "tuning.cuh"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

/// The sm_80 family (mma.sync, ldmatrix, cp.async): every sm_80+ GPU.
template <class Policy, class Op, int D, int E>
struct Sm80Kernels {
  using Decay = typename Policy::Decay;
  static constexpr int C = 64;  // the one chunk length the family is written for (4 warps x 16 rows)
  using Params = kernel::sm80::ChunkParams<Op, Decay>;
  using FwdSummary = kernel::sm80::FwdSummary<Op, Decay, D, E, C>;
  using FwdOutput = kernel::sm80::FwdOutput<Op, Decay, D, E, C>;
  using BwdSummary = kernel::sm80::BwdSummary<Op, Decay, D, E, C>;
  using BwdDq = kernel::sm80::BwdDq<Op, Decay, D, E, C>;
  using BwdDkDv = kernel::sm80::BwdDkDv<Op, Decay, D, E, C>;
};

template <class Policy, class Op, class F>
Status with_sm80_kernels(const DeviceInfo& dev, index_t D, index_t E, F& f) {
  if (dev.major < 8) return Status::kUnsupportedDevice;
  if (D == 64 && E == 64) return f(Sm80Kernels<Policy, Op, 64, 64>{});
  if (D == 64 && E == 128) return f(Sm80Kernels<Policy, Op, 64, 128>{});
  if (D == 128 && E == 64) return f(Sm80Kernels<Policy, Op, 128, 64>{});
  if (D == 128 && E == 128) return f(Sm80Kernels<Policy, Op, 128, 128>{});
  return Status::kUnsupportedHeadDim;
}

/// Calls f(Kernels{}) with the kernel family for `dev` and the runtime head dims, and returns its
/// status: kUnsupportedTile for a tile policy no family is built for (nothing instantiated),
/// kUnsupportedDevice below sm_80, kUnsupportedHeadDim for (D, E) not instantiated.
template <class Policy, class Op, class F>
Status with_kernels(const DeviceInfo& dev, index_t D, index_t E, F&& f) {
  using R = resolve_tile<typename Policy::Tile>;
  if constexpr (R::kChunk != 64 || R::kWarps != 4) {
    return Status::kUnsupportedTile;
  } else {
    return with_sm80_kernels<Policy, Op>(dev, D, E, f);
  }
}

}  // namespace backend::cuda
LASP_NAMESPACE_END
