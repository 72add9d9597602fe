#pragma once
// Argument checks shared by every backend. They run on the host before anything is written or
// launched; they read only host memory (pointers, strides, slopes), never device memory. The
// decay scheme checks its own parameters (Decay::check).
#include <algorithm>
#include <initializer_list>
#include <utility>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include "../args.hpp"
#include "../status.hpp"

LASP_NAMESPACE_BEGIN
namespace driver {

/// Byte range [lo, hi) touched by a strided view.
struct Extent {
  std::uintptr_t lo = 0, hi = 0;
  bool empty() const { return lo == hi; }
};
inline bool overlaps(Extent a, Extent b) { return !a.empty() && !b.empty() && a.lo < b.hi && b.lo < a.hi; }

template <class T>
Extent extent(const Tensor<T>& t, const Shape& s, index_t X) {
  if (!t.ptr) return {};
  const auto base = reinterpret_cast<std::uintptr_t>(t.ptr);
  const index_t last = (s.B - 1) * t.stride_b + (s.N - 1) * t.stride_n + (s.H - 1) * t.stride_h + X;
  return {base, base + std::uintptr_t(last) * sizeof(T)};
}
template <class G>
Extent gate_extent(const G& t, const Shape& s) {
  if (!t.ptr) return {};
  const auto base = reinterpret_cast<std::uintptr_t>(t.ptr);
  const index_t last = (s.B - 1) * t.stride_b + (s.N - 1) * t.stride_n + (s.H - 1) * t.stride_h + 1;
  return {base, base + std::uintptr_t(last) * sizeof(float)};
}
inline Extent state_extent(const float* p, const Shape& s) {
  if (!p) return {};
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  return {base, base + std::uintptr_t(s.B * s.H * s.D * s.E) * sizeof(float)};
}
inline Extent byte_extent(const void* p, std::size_t bytes) {
  const auto base = reinterpret_cast<std::uintptr_t>(p);
  return p ? Extent{base, base + bytes} : Extent{};
}
inline Extent workspace_extent(const Workspace& w) { return byte_extent(w.ptr, w.bytes); }
inline Extent scratch_extent(const Workspace& w) { return byte_extent(w.scratch, w.scratch_bytes); }

/// Two views with the same strides whose rows interleave without sharing an element, like dq, dk
/// and dv written into one fused [B,N,H,3,D] buffer. With s = the smallest stride of a dimension
/// of size > 1 (all others its multiples) every row starts at a multiple of s, so the rows of a
/// and b meet only if some x in [0, Xa), y in [0, Xb) have x - y = delta (mod s), delta = b - a.
template <class A, class B>
bool interleaved_disjoint(const Tensor<A>& a, index_t Xa, const Tensor<B>& b, index_t Xb, const Shape& s) {
  if (sizeof(A) != sizeof(B) || a.stride_b != b.stride_b || a.stride_n != b.stride_n || a.stride_h != b.stride_h)
    return false;
  index_t step = 0;
  const std::pair<index_t, index_t> dims[3] = {{s.B, a.stride_b}, {s.N, a.stride_n}, {s.H, a.stride_h}};
  for (auto d : dims)
    if (d.first > 1 && d.second > 0 && (step == 0 || d.second < step)) step = d.second;
  if (step == 0) return false;  // single rows: the byte ranges decide
  for (auto d : dims)
    if (d.first > 1 && d.second % step != 0) return false;
  const auto pa = reinterpret_cast<std::intptr_t>(a.ptr), pb = reinterpret_cast<std::intptr_t>(b.ptr);
  if ((pb - pa) % std::intptr_t(sizeof(A)) != 0) return false;
  index_t delta = index_t((pb - pa) / std::intptr_t(sizeof(A)));
  index_t r = delta % step;
  if (r < 0) r += step;
  return Xa <= r && r <= step - Xb;
}

template <class A, class B>
bool tensors_overlap(const Tensor<A>& a, index_t Xa, const Tensor<B>& b, index_t Xb, const Shape& s) {
  return overlaps(extent(a, s, Xa), extent(b, s, Xb)) && !interleaved_disjoint(a, Xa, b, Xb, s);
}

/// Strides must be >= 0 and, for outputs, no two (b,n,h) rows may share an element.
inline bool rows_disjoint(index_t X, std::initializer_list<std::pair<index_t, index_t>> size_stride) {
  std::pair<index_t, index_t> dims[3];
  int n = 0;
  for (auto d : size_stride)
    if (d.first > 1) dims[n++] = d;
  for (int i = 1; i < n; ++i)  // insertion sort of at most 3 dims by stride
    for (int j = i; j > 0 && dims[j].second < dims[j - 1].second; --j) std::swap(dims[j], dims[j - 1]);
  index_t span = X;
  for (int i = 0; i < n; ++i) {
    if (dims[i].second < span) return false;
    span = dims[i].second * (dims[i].first - 1) + span;
  }
  return true;
}

template <class T>
bool strides_ok(const Tensor<T>& t, const Shape& s, index_t X, bool is_output) {
  if (t.stride_b < 0 || t.stride_n < 0 || t.stride_h < 0) return false;
  return !is_output || rows_disjoint(X, {{s.B, t.stride_b}, {s.N, t.stride_n}, {s.H, t.stride_h}});
}
template <class G>
bool gate_strides_ok(const G& t, const Shape& s, bool is_output) {
  if (t.stride_b < 0 || t.stride_n < 0 || t.stride_h < 0) return false;
  return !is_output || rows_disjoint(1, {{s.B, t.stride_b}, {s.N, t.stride_n}, {s.H, t.stride_h}});
}

/// 16-byte rule: base pointers aligned to 16 bytes and every stride a multiple of 16 bytes, so
/// each (b,n,h) row starts on a 16-byte boundary (vector loads on the GPU). The host backend
/// enforces the same rule so that code validated on the CPU runs unchanged on the GPU.
template <class T>
bool aligned16(const Tensor<T>& t) {
  constexpr index_t v = 16 / index_t(sizeof(T));
  return reinterpret_cast<std::uintptr_t>(t.ptr) % 16 == 0 && t.stride_b % v == 0 && t.stride_n % v == 0 &&
         t.stride_h % v == 0;
}
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

inline Status check_shape(const Shape& s, int comm_size, int comm_rank) {
  if (s.B < 1 || s.N < 1 || s.H < 1 || s.D < 1 || s.E < 1 || s.R < 1) return Status::kInvalidShape;
  if (comm_size != s.R) return Status::kSpSizeMismatch;
  if (comm_rank < 0 || comm_rank >= comm_size) return Status::kInvalidRank;
  return Status::kSuccess;
}

/// Checks common to every backend for forward. Backend-specific checks (head dims, gate values,
/// workspace size) follow in the backend's can_implement.
template <class Decay, class T>
Status check_forward(const ForwardArgs<T, Decay>& a, int comm_size, int comm_rank, const Workspace& ws) {
  const Shape& s = a.shape;
  LASP_RETURN_IF_ERROR(check_shape(s, comm_size, comm_rank));
  if (!a.q.ptr || !a.k.ptr || !a.v.ptr || !a.o.ptr || !ws.ptr) return Status::kNullPointer;
  if (!strides_ok(a.q, s, s.D, false) || !strides_ok(a.k, s, s.D, false) || !strides_ok(a.v, s, s.E, false) ||
      !strides_ok(a.o, s, s.E, true))
    return Status::kInvalidShape;
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.o) || !aligned16(ws.ptr) || !aligned16(ws.scratch) ||
      !aligned16(a.initial_state) || !aligned16(a.final_state))
    return Status::kMisaligned;
  if (!std::isfinite(a.scale)) return Status::kInvalidShape;
  LASP_RETURN_IF_ERROR(Decay::check(a.decay, s));
  // Outputs (o, final_state on the last rank, workspace) must not overlap inputs or each other.
  const bool last = comm_rank == comm_size - 1, first = comm_rank == 0;
  if (tensors_overlap(a.o, s.E, a.q, s.D, s) || tensors_overlap(a.o, s.E, a.k, s.D, s) ||
      tensors_overlap(a.o, s.E, a.v, s.E, s))
    return Status::kOverlap;
  // Tensor-tensor pairs are checked above (interleaved rows allowed); the rest by byte ranges.
  Extent outs[] = {extent(a.o, s, s.E), last ? state_extent(a.final_state, s) : Extent{}, workspace_extent(ws),
                   scratch_extent(ws)};
  Extent ins[] = {Extent{}, Extent{}, Extent{}, first ? state_extent(a.initial_state, s) : Extent{}, Extent{}};
  ins[4] = gate_extent(Decay::input_gates(a.decay), s);
  const Extent tens_in[] = {extent(a.q, s, s.D), extent(a.k, s, s.D), extent(a.v, s, s.E)};
  for (int i = 0; i < 4; ++i) {
    for (const Extent& in : ins)
      if (overlaps(outs[i], in)) return Status::kOverlap;
    if (i > 0)
      for (const Extent& in : tens_in)
        if (overlaps(outs[i], in)) return Status::kOverlap;
    for (int j = i + 1; j < 4; ++j)
      if (overlaps(outs[i], outs[j])) return Status::kOverlap;
  }
  return Status::kSuccess;
}

template <class Decay, class T>
Status check_backward(const BackwardArgs<T, Decay>& a, int comm_size, int comm_rank, const Workspace& ws) {
  const Shape& s = a.shape;
  LASP_RETURN_IF_ERROR(check_shape(s, comm_size, comm_rank));
  if (!a.q.ptr || !a.k.ptr || !a.v.ptr || !a.dout.ptr || !a.dq.ptr || !a.dk.ptr || !a.dv.ptr || !ws.ptr)
    return Status::kNullPointer;
  if constexpr (Decay::kHasGradient) {
    if (!a.dg.ptr) return Status::kNullPointer;
    if (!gate_strides_ok(a.dg, s, true)) return Status::kInvalidShape;
    if (reinterpret_cast<std::uintptr_t>(a.dg.ptr) % alignof(float)) return Status::kMisaligned;
  }
  if (!strides_ok(a.q, s, s.D, false) || !strides_ok(a.k, s, s.D, false) || !strides_ok(a.v, s, s.E, false) ||
      !strides_ok(a.dout, s, s.E, false) || !strides_ok(a.dq, s, s.D, true) || !strides_ok(a.dk, s, s.D, true) ||
      !strides_ok(a.dv, s, s.E, true))
    return Status::kInvalidShape;
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.dout) || !aligned16(a.dq) ||
      !aligned16(a.dk) || !aligned16(a.dv) || !aligned16(ws.ptr) || !aligned16(ws.scratch) || !aligned16(a.d_final_state) ||
      !aligned16(a.d_initial_state))
    return Status::kMisaligned;
  if (!std::isfinite(a.scale)) return Status::kInvalidShape;
  LASP_RETURN_IF_ERROR(Decay::check(a.decay, s));
  const bool last = comm_rank == comm_size - 1, first = comm_rank == 0;
  // Output tensors against each other and against the input tensors: interleaved rows (a fused
  // dq/dk/dv buffer) are fine. Everything else by byte ranges.
  const Tensor<const T> ot[] = {a.dq, a.dk, a.dv};
  const index_t ox[] = {s.D, s.D, s.E};
  const Tensor<const T> it[] = {a.q, a.k, a.v, a.dout};
  const index_t ix[] = {s.D, s.D, s.E, s.E};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j)
      if (tensors_overlap(ot[i], ox[i], it[j], ix[j], s)) return Status::kOverlap;
    for (int j = i + 1; j < 3; ++j)
      if (tensors_overlap(ot[i], ox[i], ot[j], ox[j], s)) return Status::kOverlap;
  }
  Extent tens_out[] = {extent(a.dq, s, s.D), extent(a.dk, s, s.D), extent(a.dv, s, s.E)};
  Extent tens_in[] = {extent(a.q, s, s.D), extent(a.k, s, s.D), extent(a.v, s, s.E), extent(a.dout, s, s.E)};
  Extent outs[] = {first ? state_extent(a.d_initial_state, s) : Extent{}, Extent{}, workspace_extent(ws),
                   scratch_extent(ws)};
  Extent ins[] = {last ? state_extent(a.d_final_state, s) : Extent{}, Extent{}};
  if constexpr (Decay::kHasGradient) outs[1] = gate_extent(a.dg, s);
  ins[1] = gate_extent(Decay::input_gates(a.decay), s);
  for (const Extent& o : outs) {
    for (const Extent& in : ins)
      if (overlaps(o, in)) return Status::kOverlap;
    for (const Extent& in : tens_in)
      if (overlaps(o, in)) return Status::kOverlap;
    for (const Extent& t : tens_out)
      if (overlaps(o, t)) return Status::kOverlap;
  }
  for (const Extent& t : tens_out)
    for (const Extent& in : ins)
      if (overlaps(t, in)) return Status::kOverlap;
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j)
      if (overlaps(outs[i], outs[j])) return Status::kOverlap;
  return Status::kSuccess;
}

}  // namespace driver
LASP_NAMESPACE_END
