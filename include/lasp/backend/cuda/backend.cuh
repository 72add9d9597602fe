#pragma once
// The CUDA backend: the Backend of driver/driver.hpp over device memory and a stream. It builds
// kernel parameters from the arguments and the workspace regions, picks kernels from the table
// and launches them; nothing here allocates or synchronises.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <type_traits>
#include "../../driver/driver.hpp"
#include "../../element.hpp"
#include "../../kernel/state_ops.cuh"
#include "../../policy/policy.hpp"
#include "../select.hpp"
#include "deferred.cuh"
#include "launch.cuh"
#include "regions.cuh"
#include "table.cuh"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

/// The device element type the kernels are instantiated for; void where there are none.
/// (lasp::bf16 / lasp::fp16 share the layout of __nv_bfloat16 / __half.) fp32 elements are read
/// and written as fp32 and rounded to bf16 for the tensor cores (kernel::sm80::op_for).
template <class T> struct op_of { using type = void; };
template <> struct op_of<__nv_bfloat16> { using type = __nv_bfloat16; };
template <> struct op_of<__half> { using type = __half; };
template <> struct op_of<lasp::bf16> { using type = __nv_bfloat16; };
template <> struct op_of<lasp::fp16> { using type = __half; };
template <> struct op_of<float> { using type = float; };
template <class T> using op_t = typename op_of<std::remove_const_t<T>>::type;

template <class Op, class U>
Tensor<Op> as(const Tensor<U>& t) {
  return {reinterpret_cast<Op*>(t.ptr), t.stride_b, t.stride_n, t.stride_h};
}

struct Backend {
  using stream_type = cudaStream_t;
  using Regions = cuda::Regions;
  using Ctx = driver::Ctx<cudaStream_t, Regions>;
  /// The agreement's verdict stays on the device (reading it would synchronise): it lands in the
  /// reserve header's kDeviceStatus slot, which the kernels check (driver.hpp, deferred.cuh).
  static constexpr bool kSyncVerdict = false;

  // ---- state ops (schedule/common.hpp) ----
  static Status zero(float* p, std::size_t n, cudaStream_t s) {
    LASP_CUDA_TRY(cudaMemsetAsync(p, 0, n * sizeof(float), s));
    return Status::kSuccess;
  }
  static Status copy(float* d, const float* src, std::size_t n, cudaStream_t s) {
    if (d != src) LASP_CUDA_TRY(cudaMemcpyAsync(d, src, n * sizeof(float), cudaMemcpyDeviceToDevice, s));
    return Status::kSuccess;
  }
  /// `skip`: device word; the kernel writes nothing while it is non-zero (user outputs).
  static Status combine(float* out, const float* A, const float* P, const float* L, index_t bh, index_t de,
                        cudaStream_t s, const std::uint32_t* skip = nullptr) {
    return launch<kernel::Combine>({out, A, P, L, bh, de, skip}, s);
  }

  // ---- the agreement (schedule::agree) ----
  /// A rank's status word: every byte = its Status code (one memset, no kernel, capturable).
  static Status put_status(float* word, Status st, cudaStream_t s) {
    LASP_CUDA_TRY(cudaMemsetAsync(word, int(st) & 0xff, schedule::kStatusFloats * sizeof(float), s));
    return Status::kSuccess;
  }
  /// *slot = (first non-zero code of the R words) << 8 on the device: the kernels skip their
  /// output writes while it is non-zero, cuda::deferred_status decodes it. Replaces the reset
  /// of the slot at the start of every call.
  static Status verdict(const float* all, int R, std::uint32_t* slot, cudaStream_t s) {
    return launch<kernel::Verdict>({reinterpret_cast<const std::uint32_t*>(all), R,
                                    unsigned(schedule::kStatusFloats), slot, driver::kVerdictShift},
                                   s);
  }

  // ---- workspace and checks ----
  template <class Policy, class T>
  static Regions carve(const Shape& s, Carver& reserve, Carver& scratch) {
    return cuda::carve<Policy>(s, reserve, scratch);
  }

  /// What the device and the built kernels cannot run is refused before anything is launched.
  template <class Policy, class T>
  static Status check_common(const Shape& s) {
    static_assert(!std::is_void_v<op_t<T>>,
                  "The CUDA backend takes __nv_bfloat16, __half, lasp::bf16, lasp::fp16 or float elements.");
    using R = resolve_tile<typename Policy::Tile>;
    if (R::kChunk != 64 || R::kWarps != 4) return Status::kUnsupportedTile;  // only C=64, 4 warps built
    if ((s.D != 64 && s.D != 128) || (s.E != 64 && s.E != 128)) return Status::kUnsupportedHeadDim;
    return Status::kSuccess;
  }
  template <class Policy, class T>
  static Status check_forward(const ForwardArgs<T, typename Policy::Decay>& a) {
    return check_common<Policy, T>(a.shape);
  }
  template <class Policy, class T>
  static Status check_backward(const BackwardArgs<T, typename Policy::Decay>& a) {
    return check_common<Policy, T>(a.shape);
  }
  // The header lives in device memory: reading it back would synchronise, so forward/backward
  // pairing is the caller's contract on this backend.
  static Status unmark_forwarded(Ctx&) { return Status::kSuccess; }
  static Status mark_forwarded(const Shape&, Ctx&) { return Status::kSuccess; }
  static Status check_forwarded(const Shape&, Ctx&) { return Status::kSuccess; }

  // ---- kernel parameters ----
  template <class Policy, class T, class Args>
  static kernel::sm80::ChunkParams<op_t<T>, typename Policy::Decay> params(const Args& a, const Ctx& c,
                                                                          GateTensor dg = {}) {
    using Op = op_t<T>;
    const Regions& r = c.lay.backend;
    kernel::sm80::ChunkParams<Op, typename Policy::Decay> p;
    const Shape& s = a.shape;
    p.q = as<const Op>(a.q);
    p.k = as<const Op>(a.k);
    p.v = as<const Op>(a.v);
    p.B = s.B; p.N = s.N; p.H = s.H;
    p.scale = a.scale;
    p.decay = Policy::Decay::device_params(a.decay, s, dg);
    p.nseg = r.split.nseg;
    p.seg_len = r.split.seg_len;
    p.seg_A = r.seg_A; p.seg_Apre = r.seg_Apre; p.seg_S = r.seg_S;
    p.seg_M = r.seg_M; p.seg_Apost = r.seg_Apost;
    p.qdq = r.qdq; p.seg_dc = r.seg_dc;
    p.status = c.lay.header + driver::kDeviceStatus;
    return p;
  }
  template <class Policy, class T>
  static auto bwd_params(const BackwardArgs<T, typename Policy::Decay>& a, const Ctx& c) {
    using Op = op_t<T>;
    auto p = params<Policy, T>(a, c, a.dg);
    p.dout = as<const Op>(a.dout);
    p.dq = as<Op>(a.dq);
    p.dk = as<Op>(a.dk);
    p.dv = as<Op>(a.dv);
    return p;
  }

  /// Fold the per-segment summaries (forward: into the rank's [A | L] when AL is non-null;
  /// backward: into M).
  template <bool Reverse, class Params>
  static Status fold(const Params& p, float* rank_A, float* rank_L, index_t de, cudaStream_t s) {
    float* seg_S = Reverse ? p.seg_M : p.seg_S;
    float* seg_X = Reverse ? p.seg_Apost : p.seg_Apre;
    return launch<kernel::FoldSegments<Reverse>>(
        {seg_S, p.seg_A, seg_X, p.nseg, p.B * p.H, de, rank_A, rank_L, p.status}, s);
  }

  // ---- forward ----
  /// The verdict slot was set by the driver's agreement (driver::agree_call) before this runs.
  template <class Policy, class T>
  static Status rank_summary(const ForwardArgs<T, typename Policy::Decay>& a, float* AL, Ctx& c) {
    const auto p = params<Policy, T>(a, c);
    const index_t bh = a.shape.B * a.shape.H, de = a.shape.D * a.shape.E;
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      LASP_RETURN_IF_ERROR(launch<typename K::FwdSummary>(p, c.stream, c.lay.backend.dev));
      return fold<false>(p, AL, AL + bh, de, c.stream);
    });
  }

  template <class Policy, class T>
  static Status forward_outputs(const ForwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    auto p = params<Policy, T>(a, c);
    p.o = as<op_t<T>>(a.o);
    p.rank_state = P;
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      return launch<typename decltype(k)::FwdOutput>(p, c.stream, c.lay.backend.dev);
    });
  }

  // ---- backward ----
  /// M_r (into M); also (re)builds the forward segment states the dq kernel needs.
  template <class Policy, class T>
  static Status backward_summary(const BackwardArgs<T, typename Policy::Decay>& a, const float*, float* M, Ctx& c) {
    const auto p = bwd_params<Policy>(a, c);
    const index_t de = a.shape.D * a.shape.E;
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      if constexpr (!Policy::Caching::kCache) {
        LASP_RETURN_IF_ERROR(launch<typename K::FwdSummary>(p, c.stream, c.lay.backend.dev));
        LASP_RETURN_IF_ERROR(fold<false>(p, nullptr, nullptr, de, c.stream));
      }
      LASP_RETURN_IF_ERROR(launch<typename K::BwdSummary>(p, c.stream, c.lay.backend.dev));
      return fold<true>(p, nullptr, M, de, c.stream);
    });
  }

  /// dq needs only P_r and the forward segment states: it runs while the reverse scan is in flight.
  template <class Policy, class T>
  static Status backward_local(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    auto p = bwd_params<Policy>(a, c);
    p.rank_state = P;
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      return launch<typename decltype(k)::BwdDq>(p, c.stream, c.lay.backend.dev);
    });
  }

  template <class Policy, class T>
  static Status backward_outputs(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, const float* G,
                                 const float* s_final, float* dc_total, Ctx& c) {
    auto p = bwd_params<Policy>(a, c);
    p.rank_state = P;
    p.rank_grad = G;
    LASP_RETURN_IF_ERROR((with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      return launch<typename decltype(k)::BwdDkDv>(p, c.stream, c.lay.backend.dev);
    })));
    if constexpr (Policy::Decay::kHasGradient) {
      const Regions& r = c.lay.backend;
      const index_t bh = a.shape.B * a.shape.H;
      if (s_final) LASP_RETURN_IF_ERROR(launch<kernel::StateDot>({r.extra, G, s_final, bh, a.shape.D * a.shape.E}, c.stream, r.dev));
      LASP_RETURN_IF_ERROR(launch<kernel::GateSegmentFixup>(
          {a.dg, r.seg_dc, s_final ? r.extra : nullptr, dc_total, p.nseg, a.shape.B, a.shape.H, a.shape.N, p.seg_len,
           p.status},
          c.stream));
    }
    return Status::kSuccess;
  }

  template <class Policy, class T>
  static Status add_dg_suffix(const BackwardArgs<T, typename Policy::Decay>& a, const float* suffix, Ctx& c) {
    return launch<kernel::AddSuffix>(
        {a.dg, suffix, a.shape.B, a.shape.H, a.shape.N, c.lay.header + driver::kDeviceStatus}, c.stream);
  }
};

}  // namespace backend::cuda

template <>
struct backend::select<true> {
  using type = backend::cuda::Backend;
};

LASP_NAMESPACE_END
