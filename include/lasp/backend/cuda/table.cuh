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
#include "../../kernel/sm90/bwd_dq.cuh"
#include "../../kernel/sm90/fwd_output.cuh"
#include <type_traits>
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
  // Packed documents (every family runs these: the walks over documents exist for sm_80 only).
  using DocFwdSummary = kernel::sm80::FwdSummary<Op, Decay, D, E, C, true>;
  using DocFwdOutput = kernel::sm80::FwdOutput<Op, Decay, D, E, C, true>;
  using DocBwdSummary = kernel::sm80::BwdSummary<Op, Decay, D, E, C, true>;
  using DocBwdDq = kernel::sm80::BwdDq<Op, Decay, D, E, C, true>;
  using DocBwdDkDv = kernel::sm80::BwdDkDv<Op, Decay, D, E, C, true>;
};

/// The sm_90a family: the sm_80 kernels with the wgmma ones where they exist (bf16 operands;
/// FwdOutput for E = 128, BwdDq for D = 128). Chosen on a compute-capability 9.0 device when the
/// program was built with sm_90a code and says so (LASP_SM90A=1: lasp's CMake targets define it
/// when CMAKE_CUDA_ARCHITECTURES has 90a; a header cannot see the device architectures a program
/// was compiled for). Force = tile::Tile<..., 90>: every wgmma kernel that exists; otherwise
/// (tile::Auto) only those measured faster than their sm_80 counterparts (bench/RESULTS.md):
/// kSm90Default below.
struct Sm90Default {
  // NVIDIA H200, S32K, same run (bench/RESULTS.md "Fewer instructions per chunk"): since the
  // sm_80 kernels lost their per-access address arithmetic they are faster with every decay:
  // FwdOutput with gates forward 0.391 (sm_80) vs 0.417 ms (sm_90a FwdOutput), per-head 0.347
  // vs 0.379 ms (every sm_90a kernel); BwdDq slower too. (Before that round the sm_90a FwdOutput
  // won with gates, 0.509 -> 0.465 ms.) The wgmma kernels stay for Tile<..., 90> and the tests.
  template <class Decay> static constexpr bool kFwdOutput = false;
  template <class Decay> static constexpr bool kBwdDq = false;
};
template <class Policy, class Op, int D, int E, bool Force>
struct Sm90Kernels : Sm80Kernels<Policy, Op, D, E> {
  using Base = Sm80Kernels<Policy, Op, D, E>;
  static constexpr bool kBf16 = std::is_same_v<Op, __nv_bfloat16>;
  static constexpr bool kHasFwdOutput =
      kBf16 && E == 128 && (Force || Sm90Default::template kFwdOutput<typename Base::Decay>);
  using FwdOutput = std::conditional_t<kHasFwdOutput, kernel::sm90::FwdOutput<Op, typename Base::Decay, D, E, Base::C>,
                                       typename Base::FwdOutput>;
  static constexpr bool kHasBwdDq = kBf16 && D == 128 && (Force || Sm90Default::template kBwdDq<typename Base::Decay>);
  using BwdDq = std::conditional_t<kHasBwdDq, kernel::sm90::BwdDq<Op, typename Base::Decay, D, E, Base::C>,
                                   typename Base::BwdDq>;
};

#if defined(LASP_SM90A) && LASP_SM90A
inline constexpr bool kBuiltWithSm90a = true;
#else
inline constexpr bool kBuiltWithSm90a = false;
#endif

template <class Policy, class Op, class F>
Status with_sm80_kernels(const DeviceInfo& dev, index_t D, index_t E, F& f) {
  if (dev.major < 8) return Status::kUnsupportedDevice;
  if (D == 64 && E == 64) return f(Sm80Kernels<Policy, Op, 64, 64>{});
  if (D == 64 && E == 128) return f(Sm80Kernels<Policy, Op, 64, 128>{});
  if (D == 128 && E == 64) return f(Sm80Kernels<Policy, Op, 128, 64>{});
  if (D == 128 && E == 128) return f(Sm80Kernels<Policy, Op, 128, 128>{});
  return Status::kUnsupportedHeadDim;
}

template <class Policy, class Op, bool Force, class F>
Status with_sm90_kernels(index_t D, index_t E, F& f) {
  if (D == 64 && E == 64) return f(Sm90Kernels<Policy, Op, 64, 64, Force>{});
  if (D == 64 && E == 128) return f(Sm90Kernels<Policy, Op, 64, 128, Force>{});
  if (D == 128 && E == 64) return f(Sm90Kernels<Policy, Op, 128, 64, Force>{});
  if (D == 128 && E == 128) return f(Sm90Kernels<Policy, Op, 128, 128, Force>{});
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
    if constexpr (kBuiltWithSm90a && R::kFamily != 80) {
      if (dev.major == 9 && dev.minor == 0) return with_sm90_kernels<Policy, Op, R::kFamily == 90>(D, E, f);
    }
    return with_sm80_kernels<Policy, Op>(dev, D, E, f);
  }
}

}  // namespace backend::cuda
LASP_NAMESPACE_END
