#pragma once
// The CUDA backend: the Backend of driver/driver.hpp over device memory and a stream. It builds
// kernel parameters from the arguments and the workspace regions, picks kernels from the table
// and launches them; nothing here allocates or synchronises.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include "../../driver/driver.hpp"
#include "../../element.hpp"
#include "../../kernel/doc_states.cuh"
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
  /// Packed documents and the zigzag layout (docs/packed-cuda.md), every decay, any number of
  /// ranks. The offsets come twice (Packed::cu_seqlens on the host, cu_seqlens_device for the
  /// kernels); the per-document states and state_index are device memory, the slots checked on
  /// the device (kernel::DocCheck). A zigzag rank's two halves run in one launch per kernel
  /// (see "Zigzag" below).
  static constexpr bool kPackedSequences = true;
  static constexpr bool kDeviceStateIndex = true;

  /// Host <-> device copies of a few floats (the geometry exchange of packed calls,
  /// driver/packed.hpp); to_host synchronises the stream.
  static Status to_device(float* d, const float* h, std::size_t n, cudaStream_t s) {
    LASP_CUDA_TRY(cudaMemcpyAsync(d, h, n * sizeof(float), cudaMemcpyHostToDevice, s));
    return Status::kSuccess;
  }
  static Status to_host(float* h, const float* d, std::size_t n, cudaStream_t s) {
    LASP_CUDA_TRY(cudaMemcpyAsync(h, d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    LASP_CUDA_TRY(cudaStreamSynchronize(s));
    return Status::kSuccess;
  }

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
  /// A rank's status word: every byte = its Status code (bits 0-5) and the call's layout mode
  /// (bits 6-7: packed, zigzag; driver/packed.hpp) (one memset, no kernel, capturable).
  static Status put_status(float* word, Status st, cudaStream_t s, int mode = 0) {
    static_assert(int(Status::kTimeout) < 64, "status codes fit in 6 bits");
    LASP_CUDA_TRY(cudaMemsetAsync(word, (int(st) & 0x3f) | ((mode & 3) << 6), schedule::kStatusFloats * sizeof(float), s));
    return Status::kSuccess;
  }
  /// *slot = (first non-zero code of the R words, else kPeerMismatch where the ranks' layout
  /// modes differ) << 8 on the device: the kernels skip their output writes while it is
  /// non-zero, cuda::deferred_status decodes it. Replaces the reset of the slot at the start of
  /// every call.
  static Status verdict(const float* all, int R, std::uint32_t* slot, cudaStream_t s) {
    return launch<kernel::Verdict>({reinterpret_cast<const std::uint32_t*>(all), R,
                                    unsigned(schedule::kStatusFloats), slot, driver::kVerdictShift,
                                    unsigned(Status::kPeerMismatch)},
                                   s);
  }
  /// The verdict slot, read on the host (synchronises the stream): packed calls, which
  /// synchronise anyway, read it before their geometry exchange (driver.hpp).
  static Status read_verdict(const std::uint32_t* header, cudaStream_t s) {
    std::uint32_t v = 0;
    LASP_CUDA_TRY(cudaMemcpyAsync(&v, header + driver::kDeviceStatus, sizeof v, cudaMemcpyDeviceToHost, s));
    LASP_CUDA_TRY(cudaStreamSynchronize(s));
    return driver::decode_verdict(v);
  }

  // ---- workspace and checks ----
  template <class Policy, class T>
  static Regions carve(const Shape& s, Carver& reserve, Carver& scratch) {
    return cuda::carve<Policy>(s, reserve, scratch);
  }

  /// Every pointer the kernels read or write must be memory the current device can access
  /// (device memory of this device, managed memory, or mapped pinned host memory), and what lasp
  /// reads on the host (per-head slopes) must not be device memory: kWrongMemorySpace otherwise,
  /// before anything is read. One cudaPointerGetAttributes per pointer (no synchronisation).
  static Status device_accessible(const void* p, int dev) {
    if (!p) return Status::kSuccess;  // null pointers are the argument checks' business
    cudaPointerAttributes a{};
    LASP_CUDA_TRY(cudaPointerGetAttributes(&a, p));
    const bool ok = (a.type == cudaMemoryTypeDevice && a.device == dev) || a.type == cudaMemoryTypeManaged ||
                    (a.type == cudaMemoryTypeHost && a.devicePointer == p);
    return ok ? Status::kSuccess : Status::kWrongMemorySpace;
  }
  static Status host_readable(const void* p) {
    if (!p) return Status::kSuccess;
    cudaPointerAttributes a{};
    LASP_CUDA_TRY(cudaPointerGetAttributes(&a, p));
    return a.type == cudaMemoryTypeDevice ? Status::kWrongMemorySpace : Status::kSuccess;
  }
  template <class T, class Decay>
  static Status check_memory(const ForwardArgs<T, Decay>& a, const Workspace& ws, int rank, int size) {
    int dev = 0;
    LASP_CUDA_TRY(cudaGetDevice(&dev));
    LASP_RETURN_IF_ERROR(host_readable(Decay::host_memory(a.decay)));
    // The whole-sequence final state lives on driver::final_owner (rank 0 with zigzag).
    const bool owner = rank == driver::final_owner(a, size);
    const void* ptrs[] = {a.q.ptr, a.k.ptr, a.v.ptr, a.o.ptr, Decay::input_gates(a.decay).ptr, ws.ptr, ws.scratch,
                          rank == 0 ? a.initial_state : nullptr, owner ? a.final_state : nullptr};
    for (const void* p : ptrs) LASP_RETURN_IF_ERROR(device_accessible(p, dev));
    return check_packed_memory(a.packed, dev, true);
  }
  /// Packed calls: cu_seqlens on the host, its copy, the states and the slots on the device.
  static Status check_packed_memory(const Packed& pk, int dev, bool forward) {
    if (!pk.active()) return Status::kSuccess;
    LASP_RETURN_IF_ERROR(host_readable(pk.cu_seqlens));
    const void* ptrs[] = {pk.cu_seqlens_device, pk.initial_states, pk.state_index,
                          forward ? pk.final_states : nullptr, forward ? nullptr : pk.d_final_states,
                          forward ? nullptr : pk.d_initial_states};
    for (const void* p : ptrs) LASP_RETURN_IF_ERROR(device_accessible(p, dev));
    return Status::kSuccess;
  }
  template <class T, class Decay>
  static Status check_memory(const BackwardArgs<T, Decay>& a, const Workspace& ws, int rank, int size) {
    int dev = 0;
    LASP_CUDA_TRY(cudaGetDevice(&dev));
    LASP_RETURN_IF_ERROR(host_readable(Decay::host_memory(a.decay)));
    const bool owner = rank == driver::final_owner(a, size);  // reads d_final_state (rank 0 with zigzag)
    const void* ptrs[] = {a.q.ptr, a.k.ptr, a.v.ptr, a.dout.ptr, a.dq.ptr, a.dk.ptr, a.dv.ptr,
                          Decay::kHasGradient ? a.dg.ptr : nullptr, Decay::input_gates(a.decay).ptr, ws.ptr,
                          ws.scratch, owner ? a.d_final_state : nullptr,
                          rank == 0 ? a.d_initial_state : nullptr};
    for (const void* p : ptrs) LASP_RETURN_IF_ERROR(device_accessible(p, dev));
    return check_packed_memory(a.packed, dev, false);
  }

  /// What the device and the built kernels cannot run is refused before anything is launched.
  template <class Policy, class T>
  static Status check_common(const Shape& s) {
    static_assert(!std::is_void_v<op_t<T>>,
                  "The CUDA backend takes __nv_bfloat16, __half, lasp::bf16, lasp::fp16 or float elements.");
    using R = resolve_tile<typename Policy::Tile>;
    if (R::kChunk != 64 || R::kWarps != 4) return Status::kUnsupportedTile;  // only C=64, 4 warps built
    if ((s.D != 64 && s.D != 128) || (s.E != 64 && s.E != 128)) return Status::kUnsupportedHeadDim;
    DeviceInfo dev;
    LASP_RETURN_IF_ERROR(current_device(&dev));
    return check_device<Policy, T>(s, dev);
  }
  /// Can `dev` run every kernel of a forward and backward of `s`? kUnsupportedDevice below sm_80
  /// or when a kernel needs more shared memory per block than the device grants (D = E = 128
  /// needs about 107 KB; sm_86/sm_89 GPUs have 99 KB).
  template <class Policy, class T>
  static Status check_device(const Shape& s, const DeviceInfo& dev) {
    return with_kernels<Policy, op_t<T>>(dev, s.D, s.E, [&](auto k) {
      using K = decltype(k);
      const std::size_t need = std::max({smem_bytes<typename K::FwdSummary>(), smem_bytes<typename K::FwdOutput>(),
                                         smem_bytes<typename K::BwdSummary>(), smem_bytes<typename K::BwdDq>(),
                                         smem_bytes<typename K::BwdDkDv>()});
      return need > dev.smem_optin ? Status::kUnsupportedDevice : Status::kSuccess;
    });
  }

  /// Fingerprint of a forward: shape, policies, element type and the q, k, v tensors. Backward
  /// of the same layer passes the same tensors, so a reserve filled by another layer (or by no
  /// forward) does not match (checked on the device: reading the reserve would synchronise).
  template <class Policy, class T, class Args>
  static unsigned forward_tag(const Args& a) {
    std::uint64_t h = 1469598103934665603ull;
    auto mix = [&](std::uint64_t x) { h = (h ^ x) * 1099511628211ull; };
    const Shape& s = a.shape;
    for (index_t x : {s.B, s.N, s.H, s.D, s.E, index_t(s.R), index_t(sizeof(T))}) mix(std::uint64_t(x));
    static const std::uint64_t policy = [] {  // once per policy: describe() builds a string
      std::uint64_t x = 1469598103934665603ull;
      for (char ch : describe<Policy>()) x = (x ^ std::uint64_t(ch)) * 1099511628211ull;
      return x;
    }();
    mix(policy);
    mix(driver::layout_tag(a));  // a packed forward pairs only with a backward of the same documents
    if (a.forward_id != 0) {  // the caller names the forward (its inputs may move before backward)
      mix(0x9e3779b97f4a7c15ull);
      mix(std::uint64_t(a.forward_id));
    } else {
      for (const auto* t : {&a.q, &a.k, &a.v}) {
        mix(std::uint64_t(reinterpret_cast<std::uintptr_t>(t->ptr)));
        mix(std::uint64_t(t->stride_b)); mix(std::uint64_t(t->stride_n)); mix(std::uint64_t(t->stride_h));
      }
    }
    return unsigned(h ^ (h >> 32)) | 1u;  // never 0: the value of a cleared slot
  }
  template <class Policy, class T>
  static Status check_forward(const ForwardArgs<T, typename Policy::Decay>& a) {
    LASP_RETURN_IF_ERROR((check_common<Policy, T>(a.shape)));
    return check_packed<Policy>(a);
  }
  template <class Policy, class T>
  static Status check_backward(const BackwardArgs<T, typename Policy::Decay>& a) {
    LASP_RETURN_IF_ERROR((check_common<Policy, T>(a.shape)));
    return check_packed<Policy>(a);
  }
  /// The device copy of the offsets of packed calls (the rest: driver::check_layout). Every
  /// packed / zigzag call runs: zigzag with every decay and caching policy (the two halves'
  /// segments share the per-segment arrays, sized for either split: regions.cuh), gates with
  /// documents or zigzag on any number of ranks (dg is completed on each rank by <S_end, G> of
  /// each virtual segment: backward_outputs).
  template <class Policy, class Args>
  static Status check_packed(const Args& a) {
    if (!a.packed.active()) return Status::kSuccess;  // zigzag alone reads no offsets
    if (!a.packed.cu_seqlens_device) return Status::kNullPointer;
    if (reinterpret_cast<std::uintptr_t>(a.packed.cu_seqlens_device) % std::uintptr_t(a.packed.index_bits == 64 ? 8 : 4))
      return Status::kMisaligned;
    return Status::kSuccess;
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
    p.row0 = 0;
    p.row1 = s.N;
    if (zigzag(c)) {
      // Both halves in one launch (back_state / back_grad: set by the callers that pass P, G).
      const driver::Segment& f = c.geo->seg[0];
      const driver::Segment& k = c.geo->seg[1];
      p.nseg_front = r.zz.nseg;
      p.nseg = 2 * r.zz.nseg;
      p.seg_len = r.zz.seg_len;
      p.row0 = f.n0, p.row1 = f.n1, p.g0 = f.g0 - f.n0;
      p.row0b = k.n0, p.row1b = k.n1, p.g0b = k.g0 - k.n0;
    } else if (c.geo) {
      const driver::Segment& sg = c.geo->seg[0];
      p.row0 = sg.n0, p.row1 = sg.n1, p.g0 = sg.g0 - sg.n0;
    }
    if (const driver::Docs* d = driver::docs_of(c)) {
      const Packed& pk = a.packed;
      p.docs = kernel::DocOffsets{pk.cu_seqlens_device, pk.index_bits, d->count};
      p.doc_init = pk.initial_states;
      p.doc_slot = pk.state_index;
      p.pool = pk.initial_states ? pk.pool : 0;
    }
    return p;
  }
  static bool packed(const Ctx& c) { return driver::docs_of(c) != nullptr; }

  // ---- Zigzag ----
  // The driver runs a zigzag rank as two virtual segments, calling each backend step once per
  // segment (Ctx::seg 0: the front half, local rows [0, N/2); 1: the back half, [N/2, N)) in the
  // order: rank_summary 0, 1; the scans; forward_outputs 0, 1 (backward: backward_summary 0, 1;
  // the scans; backward_local 0, backward_outputs 0, backward_local 1, backward_outputs 1). Two
  // launches of half the CTAs each would take twice the time of one (the split fills the GPU
  // with one launch), so the call for segment 0 launches every chunk kernel over both halves
  // (grid y = the segments of both; CtaCoords finds a CTA's half) and folds each half into its
  // own summary (AL / AL2, M / M2), in one launch; the call for segment 1 only does what is the
  // back half's alone (its empty documents). Everything the launches at segment 0 need exists by
  // then: the forward outputs need P and P2 (both scans ran), the backward ones G and G2; the
  // summaries need nothing from the scans.
  static bool zigzag(const Ctx& c) { return c.geo && c.geo->segments == 2; }
  /// The call is about the back half of a zigzag rank: its kernels ran with the front half's.
  static bool back_half(const Ctx& c) { return zigzag(c) && c.seg == 1; }
  /// Launch the packed variant of a kernel (Docs = true) for packed calls.
  template <class K, class KDocs>
  static Status launch2(bool docs, const typename K::Params& p, cudaStream_t s, const DeviceInfo& dev) {
    return docs ? launch<KDocs>(p, s, dev) : launch<K>(p, s, dev);
  }
  /// Packed calls: the device-side check of a segment's documents (kernel::DocCheck) and the
  /// range of documents it covers, [i0, i1) (empty documents at its end included).
  static void doc_range(const Ctx& c, const driver::Segment& sg, index_t* i0, index_t* i1) {
    const driver::Docs& d = *driver::docs_of(c);
    const index_t g1 = sg.g0 + (sg.n1 - sg.n0);
    *i0 = std::max<index_t>(0, d.lower(sg.g0) - 1);  // the document holding g0, and every one starting at or after it
    *i1 = std::min(d.upper(g1), d.count);            // past every document starting at or before g1
  }
  /// Checks the documents of every segment the launches of this call read (both halves of a
  /// zigzag rank: one check each, as their documents may lie far apart).
  template <class Args>
  static Status check_docs(const Args& a, const Ctx& c) {
    LASP_RETURN_IF_ERROR(check_docs(a, c, driver::segment_of(a.shape, c)));
    if (zigzag(c)) LASP_RETURN_IF_ERROR(check_docs(a, c, c.geo->seg[1]));
    return Status::kSuccess;
  }
  template <class Args>
  static Status check_docs(const Args& a, const Ctx& c, const driver::Segment& sg) {
    const driver::Docs& d = *driver::docs_of(c);
    index_t i0 = 0, i1 = 0;
    doc_range(c, sg, &i0, &i1);
    std::uint32_t h = 0;
    for (index_t i = i0; i <= i1; ++i) h += kernel::doc_mix(i, d.at(i));
    const Packed& pk = a.packed;
    return launch<kernel::DocCheck>({kernel::DocOffsets{pk.cu_seqlens_device, pk.index_bits, d.count}, i0, i1, h,
                                     pk.initial_states ? pk.state_index : nullptr, pk.pool,
                                     c.lay.header + driver::kDeviceStatus, driver::kBadDocBit},
                                    c.stream, c.lay.backend.dev);
  }
  /// Packed calls: the states of the empty documents among [i0, i1) this call's segment owns
  /// (Ctx::seg: called once per segment, also for the back half of a zigzag rank).
  template <class Args>
  static Status empty_docs(const Args& a, const Ctx& c, const float* pool_states, const float* doc_states,
                           float* dst) {
    if (!dst) return Status::kSuccess;
    const driver::Docs& d = *driver::docs_of(c);
    const driver::Segment sg = driver::segment_of(a.shape, c);
    index_t i0 = 0, i1 = 0;
    doc_range(c, sg, &i0, &i1);
    const index_t g1 = sg.g0 + (sg.n1 - sg.n0);
    bool any = false;
    for (index_t j = i0; j < i1 && !any; ++j)
      any = d.at(j) == d.at(j + 1) && (d.at(j) < g1 || (sg.ends && d.at(j) == d.total()));
    if (!any) return Status::kSuccess;
    const Packed& pk = a.packed;
    return launch<kernel::EmptyDocs>({kernel::DocOffsets{pk.cu_seqlens_device, pk.index_bits, d.count}, i0, i1, g1,
                                      d.total(), sg.ends, pool_states, pool_states ? pk.state_index : nullptr,
                                      pool_states ? pk.pool : 0, doc_states, dst, a.shape.H, a.shape.D * a.shape.E,
                                      c.lay.header + driver::kDeviceStatus},
                                     c.stream);
  }
  template <class Policy, class T>
  static auto bwd_params(const BackwardArgs<T, typename Policy::Decay>& a, const Ctx& c) {
    using Op = op_t<T>;
    auto p = params<Policy, T>(a, c, a.dg);
    p.dout = as<const Op>(a.dout);
    p.dq = as<Op>(a.dq);
    p.dk = as<Op>(a.dk);
    p.dv = as<Op>(a.dv);
    if (packed(c)) {
      p.doc_dfinal = a.packed.d_final_states;
      p.doc_dinit = a.packed.d_initial_states;
    }
    return p;
  }

  /// Fold the per-segment summaries (forward: into the rank's [A | L] when AL is non-null;
  /// backward: into M). Zigzag: each half into its own, the back half's into (rank_A2,
  /// rank_L2), in the same launch.
  template <bool Reverse, class Params>
  static Status fold(const Params& p, float* rank_A, float* rank_L, index_t de, cudaStream_t s,
                     float* rank_A2 = nullptr, float* rank_L2 = nullptr) {
    float* seg_S = Reverse ? p.seg_M : p.seg_S;
    float* seg_X = Reverse ? p.seg_Apost : p.seg_Apre;
    const int front = p.nseg_front > 0 ? p.nseg_front : p.nseg;
    return launch<kernel::FoldSegments<Reverse>>({seg_S, p.seg_A, seg_X, front, p.B * p.H, de, rank_A, rank_L,
                                                  p.status, p.nseg - front, rank_A2, rank_L2},
                                                 s);
  }

  // ---- forward ----
  /// The verdict slot was set by the driver's agreement (driver::agree_call) before this runs.
  /// Zigzag: the call for the front half summarises both (the back half into c.lay.AL2, the
  /// driver's AL of segment 1); the call for the back half has nothing left to do.
  template <class Policy, class T>
  static Status rank_summary(const ForwardArgs<T, typename Policy::Decay>& a, float* AL, Ctx& c) {
    if (back_half(c)) return Status::kSuccess;
    // Clears the previous forward's fingerprint (the verdict slot belongs to the agreement).
    LASP_CUDA_TRY(cudaMemsetAsync(c.lay.header + driver::kDeviceTag, 0, sizeof(std::uint32_t), c.stream));
    const auto p = params<Policy, T>(a, c);
    const index_t bh = a.shape.B * a.shape.H, de = a.shape.D * a.shape.E;
    const bool docs = packed(c);
    if (docs) LASP_RETURN_IF_ERROR(check_docs(a, c));
    float* AL2 = zigzag(c) ? c.lay.AL2 : nullptr;
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      LASP_RETURN_IF_ERROR((launch2<typename K::FwdSummary, typename K::DocFwdSummary>(docs, p, c.stream, c.lay.backend.dev)));
      return fold<false>(p, AL, AL + bh, de, c.stream, AL2, AL2 ? AL2 + bh : nullptr);
    });
  }

  /// Zigzag: the call for the front half writes both halves' outputs (the back half from
  /// c.lay.P2, the driver's P of segment 1, which the scans filled before this call).
  template <class Policy, class T>
  static Status forward_outputs(const ForwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    if (back_half(c)) return packed(c) ? empty_docs(a, c, a.packed.initial_states, nullptr, a.packed.final_states)
                                       : Status::kSuccess;
    auto p = params<Policy, T>(a, c);
    p.o = as<op_t<T>>(a.o);
    p.rank_state = P;
    if (zigzag(c)) p.back_state = c.lay.P2 - P;
    p.tag = c.lay.header + driver::kDeviceTag;
    p.tag_value = forward_tag<Policy, T>(a);
    const bool docs = packed(c);
    if (docs) p.doc_final = a.packed.final_states;
    LASP_RETURN_IF_ERROR((with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      return launch2<typename K::FwdOutput, typename K::DocFwdOutput>(docs, p, c.stream, c.lay.backend.dev);
    })));
    if (docs) return empty_docs(a, c, a.packed.initial_states, nullptr, a.packed.final_states);
    return Status::kSuccess;
  }

  // ---- backward ----
  /// M_r (into M); also (re)builds the forward segment states the dq kernel needs. Zigzag: the
  /// call for the front half does both halves (the back half's M into c.lay.M2 + B*H, the
  /// driver's M of segment 1; the driver fills M2's A part itself).
  template <class Policy, class T>
  static Status backward_summary(const BackwardArgs<T, typename Policy::Decay>& a, const float*, float* M, Ctx& c) {
    if (back_half(c)) return Status::kSuccess;
    auto p = bwd_params<Policy>(a, c);
    p.tag = c.lay.header + driver::kDeviceTag;  // BwdSummary checks the forward's fingerprint
    p.tag_value = forward_tag<Policy, T>(a);
    const index_t de = a.shape.D * a.shape.E;
    const bool docs = packed(c);
    if (docs) LASP_RETURN_IF_ERROR(check_docs(a, c));
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      const DeviceInfo& dev = c.lay.backend.dev;
      if constexpr (!Policy::Caching::kCache) {
        LASP_RETURN_IF_ERROR((launch2<typename K::FwdSummary, typename K::DocFwdSummary>(docs, p, c.stream, dev)));
        LASP_RETURN_IF_ERROR(fold<false>(p, nullptr, nullptr, de, c.stream));
      }
      LASP_RETURN_IF_ERROR((launch2<typename K::BwdSummary, typename K::DocBwdSummary>(docs, p, c.stream, dev)));
      return fold<true>(p, nullptr, M, de, c.stream, nullptr, zigzag(c) ? c.lay.M2 + a.shape.B * a.shape.H : nullptr);
    });
  }

  /// dq needs only P_r and the forward segment states: it runs while the reverse scan is in flight.
  template <class Policy, class T>
  static Status backward_local(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    if (back_half(c)) return Status::kSuccess;  // ran with the front half's
    auto p = bwd_params<Policy>(a, c);
    p.rank_state = P;
    if (zigzag(c)) p.back_state = c.lay.P2 - P;
    return with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      return launch2<typename K::BwdDq, typename K::DocBwdDq>(packed(c), p, c.stream, c.lay.backend.dev);
    });
  }

  /// Zigzag: the call for the front half computes both halves' gradients (the back half's from
  /// c.lay.G2 and c.lay.P2, which the scans filled before this call).
  /// Decays with a gradient. Plain calls: dg within this rank, the later ranks' totals come from
  /// the driver's suffix sum (dc_total). Packed / zigzag calls (the driver does no suffix sum):
  /// dg is completed here. What follows a virtual segment v (a rank, or a half of a zigzag rank)
  /// reaches dg of its rows only through the state leaving it, S_end = A_v P_v + L_v: the dc of
  /// every later token plus the final-state term add up to <S_end, G_v>, the gradient of the
  /// gate of the token after v (dL/dg_{t+1} = <S_t, dS_t>); with documents it goes to the rows of
  /// v's last document only (GateSegmentFixup). One dot per half, no temporary state (A, L from
  /// the forward's summary in the reserve; tests/cpu/doc_walk_model_test.cpp models the rule).
  template <class Policy, class T>
  static Status backward_outputs(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, const float* G,
                                 const float* s_final, float* dc_total, Ctx& c) {
    if (back_half(c)) return packed(c) ? empty_docs(a, c, nullptr, a.packed.d_final_states, a.packed.d_initial_states)
                                       : Status::kSuccess;
    auto p = bwd_params<Policy>(a, c);
    p.rank_state = P;
    p.rank_grad = G;
    if (zigzag(c)) p.back_grad = c.lay.G2 - G;
    LASP_RETURN_IF_ERROR((with_kernels<Policy, op_t<T>>(c.lay.backend.dev, a.shape.D, a.shape.E, [&](auto k) {
      using K = decltype(k);
      return launch2<typename K::BwdDkDv, typename K::DocBwdDkDv>(packed(c), p, c.stream, c.lay.backend.dev);
    })));
    if (packed(c)) LASP_RETURN_IF_ERROR(empty_docs(a, c, nullptr, a.packed.d_final_states, a.packed.d_initial_states));
    if constexpr (Policy::Decay::kHasGradient) {
      const Regions& r = c.lay.backend;
      const index_t bh = a.shape.B * a.shape.H, de = a.shape.D * a.shape.E;
      kernel::GateSegmentFixup::Params f{a.dg, r.seg_dc, nullptr, dc_total, p.nseg, a.shape.B, a.shape.H, a.shape.N,
                                         p.seg_len, p.status, p.row0, p.row1, p.docs, p.g0};
      if (c.geo) {  // packed / zigzag: <A P + L, G> of each virtual segment (AL, AL2: this rank's summaries)
        LASP_RETURN_IF_ERROR(launch<kernel::StateDot>({r.extra, G, c.lay.AL + bh, bh, de, c.lay.AL, P}, c.stream, r.dev));
        f.extra = r.extra;
        f.dc_total = nullptr;  // nothing left for earlier ranks
        if (zigzag(c)) {
          LASP_RETURN_IF_ERROR(launch<kernel::StateDot>(
              {r.extra + bh, c.lay.G2, c.lay.AL2 + bh, bh, de, c.lay.AL2, c.lay.P2}, c.stream, r.dev));
          f.nseg_front = p.nseg_front;
          f.row0b = p.row0b, f.row1b = p.row1b, f.g0b = p.g0b;
          f.extra2 = r.extra + bh;
        }
      } else if (s_final) {
        LASP_RETURN_IF_ERROR(launch<kernel::StateDot>({r.extra, G, s_final, bh, de}, c.stream, r.dev));
        f.extra = r.extra;
      }
      LASP_RETURN_IF_ERROR(launch<kernel::GateSegmentFixup>(f, c.stream));
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
