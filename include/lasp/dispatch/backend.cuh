#pragma once
// The CUDA backend: the Backend concept of schedule/driver.hpp over device memory and a stream.
// Only this layer launches kernels. Nothing here allocates or synchronises.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <atomic>
#include <cstring>
#include <type_traits>
#include "../api.hpp"
#include "../element.hpp"
#include "../kernel/chunk_backward.cuh"
#include "../kernel/chunk_forward.cuh"
#include "../kernel/state_ops.cuh"
#include "../policy/policy.hpp"
#include "../schedule/driver.hpp"
#include "tuning.cuh"

// Define LASP_DEBUG_SYNC to synchronise and check after every launch (like CUB_DEBUG_SYNC).
#ifdef LASP_DEBUG_SYNC
#define LASP_LAUNCH_CHECK(stream)                                                        \
  do {                                                                                   \
    if (cudaGetLastError() != cudaSuccess || cudaStreamSynchronize(stream) != cudaSuccess) \
      return ::lasp::Status::kCudaError;                                                 \
  } while (0)
#else
#define LASP_LAUNCH_CHECK(stream)                                            \
  do {                                                                       \
    if (cudaGetLastError() != cudaSuccess) return ::lasp::Status::kCudaError; \
  } while (0)
#endif
#define LASP_CUDA_TRY(expr)                                      \
  do {                                                           \
    if ((expr) != cudaSuccess) return ::lasp::Status::kCudaError; \
  } while (0)

namespace lasp::cuda {

/// The device element type the kernels are instantiated for; void where there are none.
/// (lasp::bf16 / lasp::fp16 share the layout of __nv_bfloat16 / __half.) fp32 elements are read
/// and written as fp32 and rounded to bf16 for the tensor cores (kernel::op_for).
template <class T> struct op_of { using type = void; };
template <> struct op_of<__nv_bfloat16> { using type = __nv_bfloat16; };
template <> struct op_of<__half> { using type = __half; };
template <> struct op_of<lasp::bf16> { using type = __nv_bfloat16; };
template <> struct op_of<lasp::fp16> { using type = __half; };
template <> struct op_of<float> { using type = float; };
template <class T> using op_t = typename op_of<std::remove_const_t<T>>::type;

/// How a rank's N tokens split into segments (one CTA walks one segment of one (b,h)).
struct Split {
  int nseg;
  index_t seg_len;
};
template <class Tile>
Split split(const Shape& s) {
  using R = resolve_tile<Tile>;
  const index_t chunks = (s.N + R::kChunk - 1) / R::kChunk;
  // Floor, not ceil: B*H*nseg must not exceed the resident CTAs, or a second, nearly empty wave
  // doubles the time.
  index_t nseg = R::kSegments ? R::kSegments : kTargetCtas / (s.B * s.H);
  nseg = std::max<index_t>(1, std::min(nseg, chunks));
  const index_t seg_chunks = (chunks + nseg - 1) / nseg;
  return {int((chunks + seg_chunks - 1) / seg_chunks), seg_chunks * R::kChunk};
}

/// Backend-private regions inside the workspace.
struct Regions {
  float *seg_A, *seg_Apre, *seg_S;  // forward set (reserve under caching::Cache)
  float *seg_M, *seg_Apost;         // backward set
  float *qdq, *seg_dc, *extra;      // gates
  std::size_t reserve, scratch;
};
template <class Policy>
Regions regions(const Shape& s, void* reserve = nullptr, void* scratch = nullptr) {
  const Split sp = split<typename Policy::Tile>(s);
  const std::size_t bh = std::size_t(s.B * s.H), de = std::size_t(s.D * s.E), ns = std::size_t(sp.nseg);
  Regions r{};
  char* rp = static_cast<char*>(reserve);
  char* sp_ = static_cast<char*>(scratch);
  std::size_t ro = 0, so = 0;
  auto take = [](char* base, std::size_t& off, std::size_t floats) {
    float* p = base ? reinterpret_cast<float*>(base + off) : nullptr;
    off += detail::align_up(floats * sizeof(float));
    return p;
  };
  constexpr bool kCache = Policy::Caching::kCache;
  char* fb = kCache ? rp : sp_;
  std::size_t& fo = kCache ? ro : so;
  r.seg_A = take(fb, fo, ns * bh);
  r.seg_Apre = take(fb, fo, ns * bh);
  r.seg_S = take(fb, fo, ns * bh * de);
  r.seg_M = take(sp_, so, ns * bh * de);
  r.seg_Apost = take(sp_, so, ns * bh);
  if constexpr (Policy::Decay::kHasGradient) {
    r.qdq = take(sp_, so, bh * std::size_t(s.N));
    r.seg_dc = take(sp_, so, ns * bh);
    r.extra = take(sp_, so, bh);
  }
  r.reserve = ro;
  r.scratch = so;
  return r;
}

/// Raise a kernel's dynamic shared-memory limit (needed above 48 KB). Done once per kernel and
/// device: the flag lives in a function-local static of the kernel's own instantiation.
template <auto Kernel>
Status set_smem(std::size_t bytes) {
  int dev = 0;
  LASP_CUDA_TRY(cudaGetDevice(&dev));
  static std::atomic<bool> done[64] = {};
  if (dev < 64 && done[dev].load(std::memory_order_acquire)) return Status::kSuccess;
  LASP_CUDA_TRY(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  if (dev < 64) done[dev].store(true, std::memory_order_release);
  return Status::kSuccess;
}

struct Backend {
  using stream_type = cudaStream_t;
  using Ctx = sched::Ctx<cudaStream_t>;

  // ---- state ops ----
  static Status zero(float* p, std::size_t n, cudaStream_t s) {
    LASP_CUDA_TRY(cudaMemsetAsync(p, 0, n * sizeof(float), s));
    return Status::kSuccess;
  }
  static Status copy(float* d, const float* src, std::size_t n, cudaStream_t s) {
    if (d != src) LASP_CUDA_TRY(cudaMemcpyAsync(d, src, n * sizeof(float), cudaMemcpyDeviceToDevice, s));
    return Status::kSuccess;
  }
  static Status combine(float* out, const float* A, const float* P, const float* L, index_t bh, index_t de,
                        cudaStream_t s) {
    const index_t n = bh * de;
    const int blocks = int(std::min<index_t>((n + 255) / 256, 1024));
    kernel::combine_states<<<blocks, 256, 0, s>>>(out, A, P, L, bh, de);
    LASP_LAUNCH_CHECK(s);
    return Status::kSuccess;
  }

  // ---- sizes and checks ----
  template <class Policy, class T> static std::size_t reserve_bytes(const Shape& s) { return regions<Policy>(s).reserve; }
  template <class Policy, class T> static std::size_t scratch_bytes(const Shape& s) { return regions<Policy>(s).scratch; }

  template <class Policy>
  static Status check_common(const Shape& s) {
    using R = resolve_tile<typename Policy::Tile>;
    if (R::kChunk != 64 || R::kWarps != 4) return Status::kUnsupportedTile;  // only C=64, 4 warps built
    if ((s.D != 64 && s.D != 128) || (s.E != 64 && s.E != 128)) return Status::kUnsupportedHeadDim;
    return Status::kSuccess;
  }
  template <class Policy, class T>
  static Status check_forward(const ForwardArgs<T, typename Policy::Decay>& a) {
    static_assert(!std::is_void_v<op_t<T>>,
                  "The CUDA backend takes __nv_bfloat16, __half, lasp::bf16, lasp::fp16 or float elements.");
    return check_common<Policy>(a.shape);
  }
  template <class Policy, class T>
  static Status check_backward(const BackwardArgs<T, typename Policy::Decay>& a) {
    static_assert(!std::is_void_v<op_t<T>>,
                  "The CUDA backend takes __nv_bfloat16, __half, lasp::bf16, lasp::fp16 or float elements.");
    return check_common<Policy>(a.shape);
  }
  // The header lives in device memory: reading it back would synchronise, so forward/backward
  // pairing is the caller's contract on this backend.
  static Status unmark_forwarded(Ctx&) { return Status::kSuccess; }
  static Status mark_forwarded(const Shape&, Ctx&) { return Status::kSuccess; }
  static Status check_forwarded(const Shape&, Ctx&) { return Status::kSuccess; }

  // ---- parameter set-up ----
  template <class Policy, class Op, class Args>
  static kernel::ChunkParams<Op, typename Policy::Decay> base_params(const Args& a, Ctx& c, const Regions& r) {
    using Decay = typename Policy::Decay;
    kernel::ChunkParams<Op, Decay> p;
    const Shape& s = a.shape;
    p.q = {reinterpret_cast<const Op*>(a.q.ptr), a.q.stride_b, a.q.stride_n, a.q.stride_h};
    p.k = {reinterpret_cast<const Op*>(a.k.ptr), a.k.stride_b, a.k.stride_n, a.k.stride_h};
    p.v = {reinterpret_cast<const Op*>(a.v.ptr), a.v.stride_b, a.v.stride_n, a.v.stride_h};
    p.B = s.B; p.N = s.N; p.H = s.H;
    p.scale = a.scale;
    if constexpr (std::is_same_v<Decay, decay::PerHead>) {
      for (index_t h = 0; h < s.H; ++h) p.decay.slopes[h] = a.decay.slopes[h];
    } else if constexpr (std::is_same_v<Decay, decay::Gate>) {
      p.decay.g = a.decay.g;
    }
    const Split sp = split<typename Policy::Tile>(s);
    p.nseg = sp.nseg;
    p.seg_len = sp.seg_len;
    p.seg_A = r.seg_A; p.seg_Apre = r.seg_Apre; p.seg_S = r.seg_S;
    p.seg_M = r.seg_M; p.seg_Apost = r.seg_Apost;
    p.qdq = r.qdq; p.seg_dc = r.seg_dc;
    p.status = c.lay.header + 1;
    return p;
  }

  template <auto Kernel, class Params>
  static Status launch(std::size_t smem, const Params& p, cudaStream_t s) {
    LASP_RETURN_IF_ERROR(set_smem<Kernel>(smem));
    Kernel<<<dim3(unsigned(p.nseg), unsigned(p.B * p.H)), kernel::kThreads, smem, s>>>(p);
    LASP_LAUNCH_CHECK(s);
    return Status::kSuccess;
  }

  /// Runs fwd_summary and the forward fold; (A_r, L_r) into AL when non-null.
  template <class Policy, class Op, int D, int E, class Params>
  static Status summary_and_fold(const Params& p, float* AL, index_t bh, cudaStream_t s) {
    using Decay = typename Policy::Decay;
    constexpr int C = 64;
    LASP_RETURN_IF_ERROR((launch<kernel::fwd_summary<Op, Decay, D, E, C>>(sizeof(kernel::SumSmem<kernel::op_for_t<Op>, D, E, C>), p, s)));
    const dim3 grid(unsigned(bh), unsigned((D * E + 255) / 256));
    kernel::fold_segments<false><<<grid, 256, 0, s>>>(p.seg_S, p.seg_A, p.seg_Apre, p.nseg, bh, D * E, AL,
                                                      AL ? AL + bh : nullptr, p.status);
    LASP_LAUNCH_CHECK(s);
    return Status::kSuccess;
  }

  /// Calls Fn<D, E>::run(args...) for the runtime (D, E): the instantiated head dims.
  template <template <int, int> class Fn, class... A>
  static Status by_dims(index_t D, index_t E, const A&... a) {
    if (D == 64 && E == 64) return Fn<64, 64>::run(a...);
    if (D == 64 && E == 128) return Fn<64, 128>::run(a...);
    if (D == 128 && E == 64) return Fn<128, 64>::run(a...);
    if (D == 128 && E == 128) return Fn<128, 128>::run(a...);
    return Status::kUnsupportedHeadDim;
  }

  template <class Policy, class Op>
  struct SummaryFn {
    template <int D, int E>
    struct type {
      template <class Params>
      static Status run(const Params& p, float* const& AL, const index_t& bh, const cudaStream_t& s) {
        return summary_and_fold<Policy, Op, D, E>(p, AL, bh, s);
      }
    };
  };
  template <class Policy, class Op>
  struct OutputFn {
    template <int D, int E>
    struct type {
      template <class Params>
      static Status run(const Params& p, const cudaStream_t& s) {
        return launch<kernel::fwd_output<Op, typename Policy::Decay, D, E, 64>>(sizeof(kernel::FwdSmem<kernel::op_for_t<Op>, D, E, 64>), p, s);
      }
    };
  };
  template <class Policy, class Op>
  struct BwdSummaryFn {
    template <int D, int E>
    struct type {
      template <class Params>
      static Status run(const Params& p, float* const& M, const index_t& bh, const cudaStream_t& s) {
        if constexpr (!Policy::Caching::kCache) LASP_RETURN_IF_ERROR((summary_and_fold<Policy, Op, D, E>(p, nullptr, bh, s)));
        LASP_RETURN_IF_ERROR((launch<kernel::bwd_summary<Op, typename Policy::Decay, D, E, 64>>(
            sizeof(kernel::SumSmem<kernel::op_for_t<Op>, D, E, 64>), p, s)));
        const dim3 grid(unsigned(bh), unsigned((D * E + 255) / 256));
        kernel::fold_segments<true><<<grid, 256, 0, s>>>(p.seg_M, p.seg_A, p.seg_Apost, p.nseg, bh, D * E, nullptr, M,
                                                         p.status);
        LASP_LAUNCH_CHECK(s);
        return Status::kSuccess;
      }
    };
  };
  template <class Policy, class Op>
  struct BwdDqFn {
    template <int D, int E>
    struct type {
      template <class Params>
      static Status run(const Params& p, const cudaStream_t& s) {
        return launch<kernel::bwd_dq<Op, typename Policy::Decay, D, E, 64>>(sizeof(kernel::DqSmem<kernel::op_for_t<Op>, D, E, 64>), p, s);
      }
    };
  };
  template <class Policy, class Op>
  struct BwdDkDvFn {
    template <int D, int E>
    struct type {
      template <class Params>
      static Status run(const Params& p, const cudaStream_t& s) {
        return launch<kernel::bwd_dkdv<Op, typename Policy::Decay, D, E, 64>>(sizeof(kernel::BwdSmem<kernel::op_for_t<Op>, D, E, 64>), p, s);
      }
    };
  };

  // ---- forward ----
  template <class Policy, class T>
  static Status rank_summary(const ForwardArgs<T, typename Policy::Decay>& a, float* AL, Ctx& c) {
    using Op = op_t<T>;
    LASP_CUDA_TRY(cudaMemsetAsync(c.lay.header + 1, 0, sizeof(unsigned), c.stream));
    const Regions r = regions<Policy>(a.shape, c.lay.backend_reserve, c.lay.backend_scratch);
    const auto p = base_params<Policy, Op>(a, c, r);
    return by_dims<SummaryFn<Policy, Op>::template type>(a.shape.D, a.shape.E, p, AL, a.shape.B * a.shape.H, c.stream);
  }

  template <class Policy, class T>
  static Status forward_outputs(const ForwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    using Op = op_t<T>;
    using Decay = typename Policy::Decay;
    const Regions r = regions<Policy>(a.shape, c.lay.backend_reserve, c.lay.backend_scratch);
    auto p = base_params<Policy, Op>(a, c, r);
    p.o = {reinterpret_cast<Op*>(a.o.ptr), a.o.stride_b, a.o.stride_n, a.o.stride_h};
    p.rank_state = P;
    return by_dims<OutputFn<Policy, Op>::template type>(a.shape.D, a.shape.E, p, c.stream);
  }

  // ---- backward ----
  template <class Policy, class T>
  static kernel::ChunkParams<op_t<T>, typename Policy::Decay> bwd_params(const BackwardArgs<T, typename Policy::Decay>& a,
                                                                         Ctx& c, const Regions& r) {
    using Op = op_t<T>;
    auto p = base_params<Policy, Op>(a, c, r);
    p.dout = {reinterpret_cast<const Op*>(a.dout.ptr), a.dout.stride_b, a.dout.stride_n, a.dout.stride_h};
    p.dq = {reinterpret_cast<Op*>(a.dq.ptr), a.dq.stride_b, a.dq.stride_n, a.dq.stride_h};
    p.dk = {reinterpret_cast<Op*>(a.dk.ptr), a.dk.stride_b, a.dk.stride_n, a.dk.stride_h};
    p.dv = {reinterpret_cast<Op*>(a.dv.ptr), a.dv.stride_b, a.dv.stride_n, a.dv.stride_h};
    if constexpr (Policy::Decay::kHasGradient) p.decay.dg = a.dg;
    return p;
  }

  /// M_r (into M); also (re)builds the forward segment states the dq kernel needs.
  template <class Policy, class T>
  static Status backward_summary(const BackwardArgs<T, typename Policy::Decay>& a, const float*, float* M, Ctx& c) {
    using Op = op_t<T>;
    using Decay = typename Policy::Decay;
    LASP_CUDA_TRY(cudaMemsetAsync(c.lay.header + 1, 0, sizeof(unsigned), c.stream));
    const Regions r = regions<Policy>(a.shape, c.lay.backend_reserve, c.lay.backend_scratch);
    const auto p = bwd_params<Policy>(a, c, r);
    const index_t bh = a.shape.B * a.shape.H;
    return by_dims<BwdSummaryFn<Policy, Op>::template type>(a.shape.D, a.shape.E, p, M, bh, c.stream);
  }

  /// dq needs only P_r and the forward segment states: it runs while the reverse scan is in flight.
  template <class Policy, class T>
  static Status backward_local(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    const Regions r = regions<Policy>(a.shape, c.lay.backend_reserve, c.lay.backend_scratch);
    auto p = bwd_params<Policy>(a, c, r);
    p.rank_state = P;
    return by_dims<BwdDqFn<Policy, op_t<T>>::template type>(a.shape.D, a.shape.E, p, c.stream);
  }

  template <class Policy, class T>
  static Status backward_outputs(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, const float* G,
                                 const float* s_final, float* dc_total, Ctx& c) {
    using Op = op_t<T>;
    using Decay = typename Policy::Decay;
    const Regions r = regions<Policy>(a.shape, c.lay.backend_reserve, c.lay.backend_scratch);
    auto p = bwd_params<Policy>(a, c, r);
    p.rank_state = P;
    p.rank_grad = G;
    const index_t bh = a.shape.B * a.shape.H;
    LASP_RETURN_IF_ERROR((by_dims<BwdDkDvFn<Policy, Op>::template type>(a.shape.D, a.shape.E, p, c.stream)));
    if constexpr (Decay::kHasGradient) {
      if (s_final) {
        kernel::state_dot<<<unsigned(bh), 256, 0, c.stream>>>(r.extra, G, s_final, a.shape.D * a.shape.E);
        LASP_LAUNCH_CHECK(c.stream);
      }
      kernel::gate_segment_fixup<<<dim3(unsigned(p.nseg), unsigned(bh)), 256, 0, c.stream>>>(
          a.dg, r.seg_dc, s_final ? r.extra : nullptr, dc_total, p.nseg, a.shape.H, a.shape.N, p.seg_len, p.status);
      LASP_LAUNCH_CHECK(c.stream);
    }
    return Status::kSuccess;
  }

  template <class Policy, class T>
  static Status add_dg_suffix(const BackwardArgs<T, typename Policy::Decay>& a, const float* suffix, Ctx& c) {
    const dim3 grid(unsigned((a.shape.N + 255) / 256), unsigned(a.shape.B * a.shape.H));
    kernel::add_suffix<<<grid, 256, 0, c.stream>>>(a.dg, suffix, a.shape.H, a.shape.N, c.lay.header + 1);
    LASP_LAUNCH_CHECK(c.stream);
    return Status::kSuccess;
  }
};

/// Device-side checks (gate values) cannot return a status without synchronising; they record
/// it in the workspace and the kernels that write outputs skip their work. This reads it back
/// (synchronising `stream`): kSuccess or kInvalidDecay.
[[nodiscard]] inline Status deferred_status(const Workspace& ws, cudaStream_t stream) {
  if (!ws.ptr || ws.bytes < 256) return Status::kWorkspaceTooSmall;
  unsigned v = 0;
  LASP_CUDA_TRY(cudaMemcpyAsync(&v, static_cast<const unsigned*>(ws.ptr) + 1, sizeof v, cudaMemcpyDeviceToHost, stream));
  LASP_CUDA_TRY(cudaStreamSynchronize(stream));
  return v ? Status::kInvalidDecay : Status::kSuccess;
}

}  // namespace lasp::cuda

namespace lasp {
template <>
struct backend_select<true> {
  using type = cuda::Backend;
};
}  // namespace lasp
