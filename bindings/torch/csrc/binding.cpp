// The torch side of lasp_torch: argument checks, torch::Tensor -> lasp views, allocation through
// torch's caching allocator on torch's current stream, and the op registrations
// (TORCH_LIBRARY: lasp_torch::fwd / lasp_torch::bwd, CUDA implementations). The fake (meta)
// implementations and autograd are registered in Python (lasp_torch/_ops.py).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <type_traits>
#include <tuple>

#include "iface.h"

namespace lasp_torch {
namespace {

// Error messages are assembled here into one std::string, without std::ostream: TORCH_CHECK with
// several arguments formats them through a std::ostringstream in this module, and on the device
// image (torch 2.11, g++ 13) streaming an integer that way crashed inside libstdc++'s number
// formatting (SIGSEGV in basic_ostream::_M_insert<long>, bench/RESULTS.md "lasp_torch on H200,
// third run"). A single std::string argument reaches the exception without a stream.
inline void put(std::string& s, const char* x) { s += x; }
inline void put(std::string& s, const std::string& x) { s += x; }
template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
void put(std::string& s, I x) { s += std::to_string(x); }
inline void put(std::string& s, c10::IntArrayRef a) {
  s += '[';
  for (std::size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + std::to_string(a[i]);
  s += ']';
}
inline void put(std::string& s, const at::Device& d) { s += d.str(); }
inline void put(std::string& s, at::ScalarType t) { s += c10::toString(t); }
template <class... A>
std::string msg(const A&... a) {
  std::string s;
  (put(s, a), ...);
  return s;
}

Dtype dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return Dtype::kBF16;
    case at::kHalf: return Dtype::kF16;
    case at::kFloat: return Dtype::kF32;
    default:
      TORCH_CHECK_TYPE(false, msg("lasp_torch: q, k, v must be bfloat16, float16 or float32, got ", t.scalar_type()));
  }
  return Dtype::kBF16;
}

void check_cuda(const at::Tensor& t, const char* name, const at::Device& dev) {
  TORCH_CHECK(t.is_cuda(), msg("lasp_torch: ", name, " must be a CUDA tensor, got device ", t.device()));
  TORCH_CHECK(t.device() == dev, msg("lasp_torch: ", name, " is on ", t.device(), " but q is on ", dev));
}

/// (b, n, h, x) view; the last dimension must be contiguous.
View view4(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 4, msg("lasp_torch: ", name, " must have 4 dimensions [B, N, H, X], got ", t.sizes()));
  TORCH_CHECK_VALUE(t.stride(3) == 1 || t.size(3) == 1, msg("lasp_torch: ", name, " must have a contiguous last dimension (stride 1), got strides ", t.strides()));
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)};
}

View view3(const at::Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

/// A gradient from autograd may be expanded (stride 0) or otherwise odd: make it dense.
at::Tensor dense_grad(const at::Tensor& t) {
  for (int64_t i = 0; i < t.dim(); ++i)
    if (t.stride(i) == 0 && t.size(i) > 1) return t.contiguous();
  if (t.dim() > 0 && t.stride(-1) != 1) return t.contiguous();
  const int64_t es = t.element_size();
  for (int64_t i = 0; i < t.dim(); ++i)
    if ((t.stride(i) * es) % 16 != 0 && t.size(i) > 1 && i + 1 != t.dim()) return t.contiguous();
  if ((reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16) != 0) return t.contiguous();
  return t;
}

[[noreturn]] void fail(const char* what, int st) {
  TORCH_CHECK(false, msg("[lasp ", status_name(st), "] ", what, ": ", status_sentence(st)));
  throw;  // unreachable
}

struct Common {
  Problem p;
  int rank = 0, size = 1;
};

Common check_common(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const c10::optional<at::Tensor>& g,
                    const c10::optional<at::Tensor>& slopes, int64_t comm) {
  const at::Device dev = q.device();
  check_cuda(q, "q", dev), check_cuda(k, "k", dev), check_cuda(v, "v", dev);
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, msg("lasp_torch: q, k, v must be [B, N, H, D], [B, N, H, D], [B, N, H, E]; got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes()));
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), msg("lasp_torch: q, k, v must share one dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ", v.scalar_type()));
  TORCH_CHECK_VALUE(q.sizes() == k.sizes(), msg("lasp_torch: q and k must have the same shape, got ", q.sizes(), " and ", k.sizes()));
  TORCH_CHECK_VALUE(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2), msg("lasp_torch: v must be [B, N, H, E] with q's B, N, H; got q ", q.sizes(), ", v ", v.sizes()));
  Common c;
  c.p.dtype = dtype_of(q);
  c.p.B = q.size(0), c.p.N = q.size(1), c.p.H = q.size(2), c.p.D = q.size(3), c.p.E = v.size(3);
  c.p.comm = int(comm);
  TORCH_CHECK_VALUE(!(g.has_value() && slopes.has_value()), msg("lasp_torch: pass per-token log-gates g or per-head slopes, not both"));
  if (g.has_value()) {
    c.p.decay = DecayKind::kGate;
    const at::Tensor& G = *g;
    check_cuda(G, "g", dev);
    TORCH_CHECK_TYPE(G.scalar_type() == at::kFloat, msg("lasp_torch: g (log-gates) must be float32, got ", G.scalar_type()));
    TORCH_CHECK_VALUE(G.dim() == 3 && G.size(0) == c.p.B && G.size(1) == c.p.N && G.size(2) == c.p.H, msg("lasp_torch: g must be [B, N, H] = [", c.p.B, ", ", c.p.N, ", ", c.p.H, "], got ", G.sizes()));
  } else if (slopes.has_value()) {
    c.p.decay = DecayKind::kPerHead;
    const at::Tensor& S = *slopes;
    TORCH_CHECK(S.device().is_cpu(), msg("lasp_torch: slopes must be a CPU tensor (lasp reads them on the host), got ", S.device()));
    TORCH_CHECK_TYPE(S.scalar_type() == at::kFloat, msg("lasp_torch: slopes must be float32, got ", S.scalar_type()));
    TORCH_CHECK_VALUE(S.dim() == 1 && S.size(0) == c.p.H && S.is_contiguous(), msg("lasp_torch: slopes must be a contiguous [H] = [", c.p.H, "] tensor, got ", S.sizes()));
  } else {
    c.p.decay = DecayKind::kNone;
  }
  int device = -1;
  TORCH_CHECK(comm_info(c.p.comm, &c.rank, &c.size, &device), msg("lasp_torch: unknown communicator id ", comm));
  TORCH_CHECK(device < 0 || device == dev.index(), msg("lasp_torch: the sequence-parallel communicator lives on cuda:", device, " but q is on ", dev));
  return c;
}

void check_state(const at::Tensor& s, const char* name, const Problem& p, const at::Device& dev) {
  check_cuda(s, name, dev);
  TORCH_CHECK_TYPE(s.scalar_type() == at::kFloat, msg("lasp_torch: ", name, " must be float32, got ", s.scalar_type()));
  TORCH_CHECK_VALUE(s.dim() == 4 && s.size(0) == p.B && s.size(1) == p.H && s.size(2) == p.D && s.size(3) == p.E &&
                        s.is_contiguous(), msg("lasp_torch: ", name, " must be a contiguous [B, H, D, E] = [", p.B, ", ", p.H, ", ", p.D, ", ", p.E, "] tensor, got ", s.sizes()));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const c10::optional<at::Tensor>& g,
                                                   const c10::optional<at::Tensor>& slopes, double scale,
                                                   const c10::optional<at::Tensor>& initial_state,
                                                   bool output_final_state, int64_t comm) {
  Common c = check_common(q, k, v, g, slopes, comm);
  const at::Device dev = q.device();
  if (initial_state.has_value()) check_state(*initial_state, "initial_state", c.p, dev);
  c10::cuda::CUDAGuard guard(dev);
  std::size_t rb = 0, sb = 0;
  if (int st = workspace_sizes(c.p, c.size, &rb, &sb)) fail("workspace sizes", st);
  auto bytes = q.options().dtype(at::kByte);
  at::Tensor o = at::empty_like(v);
  at::Tensor ht;
  if (output_final_state)
    ht = c.rank == c.size - 1 ? at::empty({c.p.B, c.p.H, c.p.D, c.p.E}, q.options().dtype(at::kFloat))
                              : at::zeros({c.p.B, c.p.H, c.p.D, c.p.E}, q.options().dtype(at::kFloat));
  else
    ht = at::empty({0}, q.options().dtype(at::kFloat));
  at::Tensor reserve = at::empty({int64_t(rb)}, bytes);
  at::Tensor scratch = at::empty({int64_t(sb)}, bytes);  // back to the caching allocator on return
  FwdCall call;
  call.p = c.p;
  call.q = view4(q, "q"), call.k = view4(k, "k"), call.v = view4(v, "v"), call.o = view4(o, "o");
  call.scale = float(scale);
  if (slopes.has_value()) call.slopes = slopes->data_ptr<float>();
  if (g.has_value()) call.g = view3(*g);
  call.h0 = initial_state.has_value() ? initial_state->data_ptr<float>() : nullptr;
  call.ht = output_final_state ? ht.data_ptr<float>() : nullptr;
  call.reserve = reserve.data_ptr(), call.reserve_bytes = rb;
  call.scratch = sb ? scratch.data_ptr() : nullptr, call.scratch_bytes = sb;
  call.stream = at::cuda::getCurrentCUDAStream(dev.index()).stream();
  if (int st = forward(call, nullptr)) fail("forward", st);
  return {o, ht, reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const c10::optional<at::Tensor>& g,
    const c10::optional<at::Tensor>& slopes, double scale, const at::Tensor& reserve, const at::Tensor& dout_in,
    const c10::optional<at::Tensor>& dht_in, bool need_dh0, int64_t comm) {
  Common c = check_common(q, k, v, g, slopes, comm);
  const at::Device dev = q.device();
  check_cuda(dout_in, "do", dev);
  TORCH_CHECK_VALUE(dout_in.sizes() == v.sizes(), msg("lasp_torch: do must have v's shape ", v.sizes(), ", got ", dout_in.sizes()));
  TORCH_CHECK_TYPE(dout_in.scalar_type() == q.scalar_type(), msg("lasp_torch: do must have q's dtype"));
  check_cuda(reserve, "reserve", dev);
  TORCH_CHECK_TYPE(reserve.scalar_type() == at::kByte && reserve.dim() == 1, msg("lasp_torch: reserve must be the uint8 tensor forward returned"));
  const at::Tensor dout = dense_grad(dout_in);
  at::Tensor dht;
  if (dht_in.has_value()) {
    dht = dht_in->contiguous();
    check_state(dht, "d_final_state", c.p, dev);
  }
  c10::cuda::CUDAGuard guard(dev);
  std::size_t rb = 0, sb = 0;
  if (int st = workspace_sizes(c.p, c.size, &rb, &sb)) fail("workspace sizes", st);
  TORCH_CHECK_VALUE(std::size_t(reserve.numel()) == rb, msg("lasp_torch: reserve has ", reserve.numel(), " bytes, this problem's reserve has ", rb));
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  at::Tensor dg = g.has_value() ? at::empty_like(*g) : at::empty({0}, q.options().dtype(at::kFloat));
  at::Tensor dh0;
  if (need_dh0)
    dh0 = c.rank == 0 ? at::empty({c.p.B, c.p.H, c.p.D, c.p.E}, q.options().dtype(at::kFloat))
                      : at::zeros({c.p.B, c.p.H, c.p.D, c.p.E}, q.options().dtype(at::kFloat));
  else
    dh0 = at::empty({0}, q.options().dtype(at::kFloat));
  at::Tensor scratch = at::empty({int64_t(sb)}, q.options().dtype(at::kByte));
  BwdCall call;
  call.p = c.p;
  call.q = view4(q, "q"), call.k = view4(k, "k"), call.v = view4(v, "v"), call.dout = view4(dout, "do");
  call.dq = view4(dq, "dq"), call.dk = view4(dk, "dk"), call.dv = view4(dv, "dv");
  call.scale = float(scale);
  if (slopes.has_value()) call.slopes = slopes->data_ptr<float>();
  if (g.has_value()) call.g = view3(*g), call.dg = view3(dg);
  call.dht = dht.defined() ? dht.data_ptr<float>() : nullptr;
  call.dh0 = need_dh0 ? dh0.data_ptr<float>() : nullptr;
  call.reserve = reserve.data_ptr(), call.reserve_bytes = rb;
  call.scratch = sb ? scratch.data_ptr() : nullptr, call.scratch_bytes = sb;
  call.stream = at::cuda::getCurrentCUDAStream(dev.index()).stream();
  if (int st = backward(call)) fail("backward", st);
  return {dq, dk, dv, dg, dh0};
}

// ---- plain Python functions (pybind) ---------------------------------------------------------

std::tuple<int64_t, int64_t> py_workspace_sizes(int64_t dtype, int64_t decay, int64_t B, int64_t N, int64_t H,
                                                int64_t D, int64_t E, int64_t R) {
  Problem p;
  p.dtype = Dtype(dtype), p.decay = DecayKind(decay);
  p.B = B, p.N = N, p.H = H, p.D = D, p.E = E;
  std::size_t r = 0, s = 0;
  if (int st = workspace_sizes(p, int(R), &r, &s)) fail("workspace sizes", st);
  return {int64_t(r), int64_t(s)};
}

py::bytes py_nccl_unique_id() {
  std::string buf(128, '\0'), err;
  TORCH_CHECK(nccl_unique_id(reinterpret_cast<unsigned char*>(&buf[0]), buf.size(), &err), msg("lasp_torch: ", err));
  return py::bytes(buf);
}

int64_t py_comm_create(py::bytes id, int64_t rank, int64_t size) {
  std::string s = id, err;
  int r = -1;
  {
    py::gil_scoped_release nogil;  // ncclCommInitRank blocks until every rank joined
    r = comm_create(reinterpret_cast<const unsigned char*>(s.data()), s.size(), int(rank), int(size), &err);
  }
  TORCH_CHECK(r > 0, msg("lasp_torch: ", err));
  return r;
}

std::tuple<int64_t, int64_t> py_comm_info(int64_t id) {
  int rank = 0, size = 0, device = -1;
  TORCH_CHECK(comm_info(int(id), &rank, &size, &device), msg("lasp_torch: unknown communicator id ", id));
  return {rank, size};
}

int64_t py_deferred_status(const at::Tensor& reserve) {
  c10::cuda::CUDAGuard guard(reserve.device());
  return deferred_status(reserve.data_ptr(), std::size_t(reserve.numel()),
                         at::cuda::getCurrentCUDAStream(reserve.device().index()).stream());
}

}  // namespace
}  // namespace lasp_torch

TORCH_LIBRARY(lasp_torch, m) {
  m.def(
      "fwd(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor? slopes, float scale, Tensor? initial_state, "
      "bool output_final_state, int comm) -> (Tensor o, Tensor final_state, Tensor reserve)");
  m.def(
      "bwd(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor? slopes, float scale, Tensor reserve, Tensor do, "
      "Tensor? d_final_state, bool need_d_initial_state, int comm) -> "
      "(Tensor dq, Tensor dk, Tensor dv, Tensor dg, Tensor d_initial_state)");
}

TORCH_LIBRARY_IMPL(lasp_torch, CUDA, m) {
  m.impl("fwd", &lasp_torch::fwd);
  m.impl("bwd", &lasp_torch::bwd);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lasp_torch._C: lasp (causal linear attention, sequence parallel) for PyTorch";
  m.def("workspace_sizes", &lasp_torch::py_workspace_sizes, "reserve and scratch bytes of a problem (current device)");
  m.def("have_nccl", &lasp_torch::have_nccl);
  m.def("nccl_unique_id", &lasp_torch::py_nccl_unique_id);
  m.def("comm_create", &lasp_torch::py_comm_create, "ncclCommInitRank on the current device; returns an id");
  m.def("comm_info", &lasp_torch::py_comm_info);
  m.def("comm_destroy", [](int64_t id) { lasp_torch::comm_destroy(int(id)); });
  m.def("deferred_status", &lasp_torch::py_deferred_status, "device-side verdict of the last call (synchronises)");
  m.def("status_sentence", [](int64_t s) { return std::string(lasp_torch::status_sentence(int(s))); });
  m.def("status_name", [](int64_t s) { return std::string(lasp_torch::status_name(int(s))); });
}
