#pragma once
// One (element type, decay) pair of the binding: its plans (cached per problem and communicator)
// and its forward/backward. Each kernels_<t>_<decay>.cu instantiates one pair, so the build runs
// them in parallel. Included only by nvcc-compiled files (no torch headers here).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>
#include "comm_registry.cuh"
#include "iface.h"

namespace lasp_torch {

/// The forward_id (lasp ForwardArgs::forward_id) of the forward that fills `reserve`: autograd
/// keeps the reserve in this forward's context until its backward, so its address names the
/// forward; inputs that torch.compile rematerialises at other addresses do not matter.
inline std::uint32_t forward_id_of(const void* reserve) {
  const auto x = std::uint64_t(reinterpret_cast<std::uintptr_t>(reserve));
  return std::uint32_t(x ^ (x >> 32)) | 1u;
}

template <class Decay>
typename Decay::Params decay_params(const float* slopes, const View& g) {
  if constexpr (std::is_same_v<Decay, lasp::decay::PerHead>) {
    return {slopes};
  } else if constexpr (std::is_same_v<Decay, lasp::decay::Gate>) {
    return {lasp::ConstGateTensor{static_cast<const float*>(g.ptr), g.sb, g.sn, g.sh}};
  } else {
    (void)slopes, (void)g;
    return {};
  }
}

template <class T>
lasp::Tensor<const T> cview(const View& v) {
  return {static_cast<const T*>(v.ptr), v.sb, v.sn, v.sh};
}
template <class T>
lasp::Tensor<T> mview(const View& v) {
  return {static_cast<T*>(v.ptr), v.sb, v.sn, v.sh};
}

template <class T, class Decay>
struct Impl {
  using P = lasp::Policy<Decay>;  // schedule::Auto (decay-aware single hop, else all-gather), Recompute
  using PlanT = lasp::Plan<P, T>;
  // (B, N, H, D, E, comm, device, slopes bits): the plan of one layer shape on one communicator.
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, int, int,
                         std::vector<std::uint32_t>>;

  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::map<Key, PlanT>& plans() {
    static std::map<Key, PlanT> p;
    return p;
  }
  static void forget(int comm_id) {
    std::lock_guard<std::mutex> l(mu());
    for (auto it = plans().begin(); it != plans().end();)
      it = std::get<5>(it->first) == comm_id ? plans().erase(it) : std::next(it);
  }

  static lasp::Shape shape(const Problem& p, int R) { return {p.B, p.N, p.H, p.D, p.E, R}; }

  template <class F>
  static int with_comm(int id, F&& f) {
    if (id == 0) {
      lasp::comm::DeviceSingle c;
      return f(c);
    }
#if LASP_TORCH_WITH_NCCL
    CommEntry* e = comm_get(id);
    if (!e) return int(lasp::Status::kCommError);
    return f(e->comm);
#else
    return int(lasp::Status::kCommError);
#endif
  }

  /// The cached plan, made (collectively) on a miss. Refuses to make one during stream capture.
  template <class Comm>
  static int plan_for(const Problem& p, const float* slopes, Comm& comm, cudaStream_t stream, PlanT* out,
                      bool* made) {
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess) return int(lasp::Status::kCudaError);
    std::vector<std::uint32_t> bits;
    if constexpr (std::is_same_v<Decay, lasp::decay::PerHead>) {
      if (!slopes) return int(lasp::Status::kNullPointer);
      bits.resize(std::size_t(p.H));
      std::memcpy(bits.data(), slopes, bits.size() * sizeof(float));
    }
    Key key{p.B, p.N, p.H, p.D, p.E, p.comm, dev, std::move(bits)};
    std::lock_guard<std::mutex> l(mu());
    auto it = plans().find(key);
    if (it != plans().end()) {
      *out = it->second;
      return 0;
    }
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &cap) != cudaSuccess) return int(lasp::Status::kCudaError);
    if (cap != cudaStreamCaptureStatusNone) return kNeedPlanOutsideCapture;
    float* staging = nullptr;
    if (cudaMalloc(&staging, lasp::plan_staging_floats(comm.size()) * sizeof(float)) != cudaSuccess)
      return int(lasp::Status::kCudaError);
    PlanT plan;
    const lasp::Status st = lasp::make_plan<P, T>(shape(p, comm.size()), decay_params<Decay>(slopes, View{}), comm,
                                                  staging, stream, &plan);
    cudaFree(staging);
    if (st != lasp::Status::kSuccess) return int(st);
    plans().emplace(std::move(key), plan);
    *out = plan;
    if (made) *made = true;
    return 0;
  }

  static int forward(const FwdCall& c, bool* made) {
    return with_comm(c.p.comm, [&](auto& comm) -> int {
      auto stream = static_cast<cudaStream_t>(c.stream);
      PlanT plan;
      if (int r = plan_for(c.p, c.slopes, comm, stream, &plan, made)) return r;
      lasp::ForwardArgs<T, Decay> a{};
      a.shape = plan.shape();
      a.q = cview<T>(c.q), a.k = cview<T>(c.k), a.v = cview<T>(c.v);
      a.o = mview<T>(c.o);
      a.scale = c.scale;
      a.decay = decay_params<Decay>(c.slopes, c.g);
      a.initial_state = c.h0;
      a.final_state = c.ht;
      a.forward_id = forward_id_of(c.reserve);
      const lasp::Workspace ws{c.reserve, c.reserve_bytes, c.scratch, c.scratch_bytes};
      return int(lasp::forward(plan, a, comm, ws, stream));
    });
  }

  static int backward(const BwdCall& c) {
    return with_comm(c.p.comm, [&](auto& comm) -> int {
      auto stream = static_cast<cudaStream_t>(c.stream);
      PlanT plan;
      if (int r = plan_for(c.p, c.slopes, comm, stream, &plan, nullptr)) return r;
      lasp::BackwardArgs<T, Decay> a{};
      a.shape = plan.shape();
      a.q = cview<T>(c.q), a.k = cview<T>(c.k), a.v = cview<T>(c.v), a.dout = cview<T>(c.dout);
      a.dq = mview<T>(c.dq), a.dk = mview<T>(c.dk), a.dv = mview<T>(c.dv);
      a.scale = c.scale;
      a.decay = decay_params<Decay>(c.slopes, c.g);
      a.dg = lasp::GateTensor{static_cast<float*>(c.dg.ptr), c.dg.sb, c.dg.sn, c.dg.sh};
      a.d_final_state = c.dht;
      a.d_initial_state = c.dh0;
      const lasp::Workspace ws{c.reserve, c.reserve_bytes, c.scratch, c.scratch_bytes};
      a.forward_id = forward_id_of(c.reserve);  // pairs with its forward even if q, k, v moved
      return int(lasp::backward(plan, a, comm, ws, stream));
    });
  }

  static int sizes(const Problem& p, int R, std::size_t* reserve, std::size_t* scratch) {
    lasp::comm::DeviceSingle c;  // the sizes depend on the shape (R included), not on the communicator object
    const lasp::WorkspaceSizes z = lasp::workspace_sizes<P, T>(shape(p, R), c);
    *reserve = z.reserve;
    *scratch = z.scratch;
    return 0;
  }
};

}  // namespace lasp_torch

/// One TU per pair: kernels_<t>_<d>.cu defines these two and includes this file's instantiation.
#define LASP_TORCH_INSTANTIATE(NAME, T, DECAY)                                                          \
  namespace lasp_torch {                                                                               \
  int NAME##_forward(const FwdCall& c, bool* made) { return Impl<T, DECAY>::forward(c, made); }         \
  int NAME##_backward(const BwdCall& c) { return Impl<T, DECAY>::backward(c); }                        \
  int NAME##_sizes(const Problem& p, int R, std::size_t* r, std::size_t* s) {                         \
    return Impl<T, DECAY>::sizes(p, R, r, s);                                                         \
  }                                                                                                    \
  void NAME##_forget(int id) { Impl<T, DECAY>::forget(id); }                                           \
  }
