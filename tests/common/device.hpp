#pragma once
// Device buffers for the GPU suites: copies of a GlobalProblem's packed host buffers, views over
// them with the same layouts, and copy-back of the outputs. Aborting checks are fine here (tests).
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "problem.hpp"

#define LASP_TEST_CUDA(expr)                                                                  \
  do {                                                                                        \
    cudaError_t e_ = (expr);                                                                  \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

namespace lasp_test {

template <class T>
struct DeviceBuf {
  T* ptr = nullptr;
  std::size_t n = 0;
  DeviceBuf() = default;
  explicit DeviceBuf(std::size_t count) : n(count) { LASP_TEST_CUDA(cudaMalloc(&ptr, count * sizeof(T) + 16)); }
  template <class V>
  explicit DeviceBuf(const V& host) : DeviceBuf(host.size()) { upload(host); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  DeviceBuf(DeviceBuf&& o) noexcept : ptr(o.ptr), n(o.n) { o.ptr = nullptr; }
  ~DeviceBuf() { if (ptr) cudaFree(ptr); }
  template <class V> void upload(const V& h) { LASP_TEST_CUDA(cudaMemcpy(ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  template <class V> void download(V& h) const { LASP_TEST_CUDA(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost)); }
};

/// A GlobalProblem mirrored on the current device (outputs poisoned as on the host).
template <class Elem>
struct DeviceProblem {
  GlobalProblem<Elem>& h;
  DeviceBuf<Elem> q, k, v, dout, o, dq, dk, dv;
  DeviceBuf<float> g, dg, init, dfinal, fin, dinit;
  explicit DeviceProblem(GlobalProblem<Elem>& p)
      : h(p), q(p.q_buf), k(p.k_buf), v(p.v_buf), dout(p.dout_buf), o(p.o_buf), dq(p.dq_buf), dk(p.dk_buf),
        dv(p.dv_buf), g(p.g_buf), dg(p.dg_buf), init(std::max<std::size_t>(p.init.size(), 1)),
        dfinal(std::max<std::size_t>(p.dfinal.size(), 1)), fin(p.final_buf), dinit(p.dinit_buf) {
    if (!p.init.empty()) init.upload(p.init);
    if (!p.dfinal.empty()) dfinal.upload(p.dfinal);
  }
  lasp::Tensor<const Elem> view(const DeviceBuf<Elem>& b, const SeqLayout& l, int r) const { return l.view<const Elem>(b.ptr, h.t0(r)); }
  lasp::Tensor<Elem> mview(DeviceBuf<Elem>& b, const SeqLayout& l, int r) { return l.view<Elem>(b.ptr, h.t0(r)); }

  template <class Decay>
  typename Decay::Params decay_params(int r) const {
    if constexpr (std::is_same_v<Decay, lasp::decay::PerHead>) return {h.slopes.data()};
    else if constexpr (std::is_same_v<Decay, lasp::decay::Gate>) return {h.lg.cview(g.ptr, h.t0(r))};
    else return {};
  }
  template <class Decay>
  lasp::ForwardArgs<Elem, Decay> forward_args(int r) {
    lasp::ForwardArgs<Elem, Decay> a{};
    a.shape = h.shape_of(r);
    a.q = view(q, h.lq, r); a.k = view(k, h.lq, r); a.v = view(v, h.lv, r); a.o = mview(o, h.lv, r);
    a.scale = h.spec.scale;
    a.decay = decay_params<Decay>(r);
    a.initial_state = h.spec.initial_state ? init.ptr : nullptr;
    a.final_state = h.spec.final_state ? fin.ptr : nullptr;
    return a;
  }
  template <class Decay>
  lasp::BackwardArgs<Elem, Decay> backward_args(int r) {
    lasp::BackwardArgs<Elem, Decay> a{};
    a.shape = h.shape_of(r);
    a.q = view(q, h.lq, r); a.k = view(k, h.lq, r); a.v = view(v, h.lv, r); a.dout = view(dout, h.lv, r);
    a.dq = mview(dq, h.lq, r); a.dk = mview(dk, h.lq, r); a.dv = mview(dv, h.lv, r);
    a.scale = h.spec.scale;
    a.decay = decay_params<Decay>(r);
    if constexpr (Decay::kHasGradient) a.dg = h.lg.view(dg.ptr, h.t0(r));
    a.d_final_state = h.spec.final_state ? dfinal.ptr : nullptr;
    a.d_initial_state = h.spec.initial_state ? dinit.ptr : nullptr;
    return a;
  }
  /// Outputs back into the host problem's buffers (for comparison with the reference).
  void download() {
    o.download(h.o_buf); dq.download(h.dq_buf); dk.download(h.dk_buf); dv.download(h.dv_buf);
    dg.download(h.dg_buf); fin.download(h.final_buf); dinit.download(h.dinit_buf);
  }
};

}  // namespace lasp_test
