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

/// (Empty for a null view or a shape without rows: N = 0 on an empty shard.)
template <class T>
Extent extent(const Tensor<T>& t, const Shape& s, index_t X) {
  if (!t.ptr || s.B < 1 || s.N < 1 || s.H < 1) return {};
  const auto base = reinterpret_cast<std::uintptr_t>(t.ptr);
  const index_t last = (s.B - 1) * t.stride_b + (s.N - 1) * t.stride_n + (s.H - 1) * t.stride_h + X;
  return {base, base + std::uintptr_t(last) * sizeof(T)};
}
template <class G>
Extent gate_extent(const G& t, const Shape& s) {
  if (!t.ptr || s.B < 1 || s.N < 1 || s.H < 1) return {};
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

namespace detail {
/// Is there a value sum_i d_i s_i with |d_i| < n_i in [lo, hi]? `dims` (n_i, s_i), sorted by
/// increasing stride s_i > 0, count k. A depth-first search from the largest stride: with
/// nested strides (each one at least the span of the smaller ones, which rows_disjoint
/// guarantees for outputs) only a few d_i are candidates at each level. `budget` bounds the
/// work for other layouts; running out of it answers "maybe" (true).
inline bool lattice_hits(const std::pair<index_t, index_t>* dims, int k, index_t lo, index_t hi, int& budget) {
  if (k == 0) return lo <= 0 && 0 <= hi;
  index_t below = 0;  // the largest |sum| the smaller strides reach
  for (int i = 0; i < k - 1; ++i) below += (dims[i].first - 1) * dims[i].second;
  const index_t n = dims[k - 1].first, s = dims[k - 1].second;
  // d s + [-below, below] meets [lo, hi]  <=>  d in [ceil((lo - below) / s), floor((hi + below) / s)].
  auto floor_div = [](index_t x, index_t y) { return x >= 0 ? x / y : -((-x + y - 1) / y); };
  const index_t d0 = std::max<index_t>(-(n - 1), -floor_div(-(lo - below), s));
  const index_t d1 = std::min<index_t>(n - 1, floor_div(hi + below, s));
  for (index_t d = d0; d <= d1; ++d) {
    if (--budget < 0) return true;
    if (lattice_hits(dims, k - 1, lo - d * s, hi - d * s, budget)) return true;
  }
  return false;
}
}  // namespace detail

/// Two views with the same strides (in bytes) whose rows interleave without sharing a byte, like
/// dq, dk and dv written into one fused [B,N,H,3,D] buffer, with any padding of the batch or
/// token stride. Row (b,n,h) of a covers [pa + o, pa + o + Xa*sizeof(A)) with o = b sb + n sn +
/// h sh (bytes), and likewise for b at pb: two rows meet iff the difference o - o' of two row
/// offsets lies in (delta - Xa*sizeof(A), delta + Xb*sizeof(B)), delta = pb - pa. The
/// differences are sum_i d_i s_i with |d_i| < n_i over the dimensions of size n_i > 1, searched
/// exactly by detail::lattice_hits. False (may overlap) for strides that are not positive.
template <class A, class B>
bool interleaved_disjoint(const Tensor<A>& a, index_t Xa, const Tensor<B>& b, index_t Xb, const Shape& s) {
  const index_t ea = index_t(sizeof(A)), eb = index_t(sizeof(B));
  if (a.stride_b * ea != b.stride_b * eb || a.stride_n * ea != b.stride_n * eb || a.stride_h * ea != b.stride_h * eb)
    return false;
  std::pair<index_t, index_t> dims[3];
  int k = 0;
  for (auto d : {std::pair<index_t, index_t>{s.B, a.stride_b * ea}, {s.N, a.stride_n * ea}, {s.H, a.stride_h * ea}}) {
    if (d.first <= 1) continue;
    if (d.second <= 0) return false;
    dims[k++] = d;
  }
  for (int i = 1; i < k; ++i)  // insertion sort by stride
    for (int j = i; j > 0 && dims[j].second < dims[j - 1].second; --j) std::swap(dims[j], dims[j - 1]);
  const auto delta = index_t(reinterpret_cast<std::intptr_t>(b.ptr) - reinterpret_cast<std::intptr_t>(a.ptr));
  int budget = 4096;
  return !detail::lattice_hits(dims, k, delta - Xa * ea + 1, delta + Xb * eb - 1, budget);
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

/// N = 0 (an empty shard: this rank holds no token) passes here; backends that cannot run it
/// refuse it afterwards (packed.hpp supports_empty).
inline Status check_shape(const Shape& s, int comm_size, int comm_rank) {
  if (s.B < 1 || s.N < 0 || s.H < 1 || s.D < 1 || s.E < 1 || s.R < 1) return Status::kInvalidShape;
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
  // N = 0: the token tensors are neither read nor written and may be null.
  if (!ws.ptr || (s.N > 0 && (!a.q.ptr || !a.k.ptr || !a.v.ptr || !a.o.ptr))) return Status::kNullPointer;
  if (!strides_ok(a.q, s, s.D, false) || !strides_ok(a.k, s, s.D, false) || !strides_ok(a.v, s, s.E, false) ||
      !strides_ok(a.o, s, s.E, true))
    return Status::kInvalidShape;
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.o) || !aligned16(ws.ptr) || !aligned16(ws.scratch) ||
      !aligned16(a.initial_state) || !aligned16(a.final_state))
    return Status::kMisaligned;
  if (!std::isfinite(a.scale)) return Status::kInvalidShape;
  LASP_RETURN_IF_ERROR(Decay::check(a.decay, s));
  // Outputs (o, final_state on the last rank, workspace) must not overlap inputs or each other.
  // The whole-sequence final state leaves the last rank, or rank 0 with the zigzag layout.
  const bool last = comm_rank == (a.sharding == Sharding::kZigzag ? 0 : comm_size - 1), first = comm_rank == 0;
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
  // N = 0: the token tensors (and dg) are neither read nor written and may be null.
  if (!ws.ptr || (s.N > 0 && (!a.q.ptr || !a.k.ptr || !a.v.ptr || !a.dout.ptr || !a.dq.ptr || !a.dk.ptr || !a.dv.ptr)))
    return Status::kNullPointer;
  if constexpr (Decay::kHasGradient) {
    if (!a.dg.ptr && s.N > 0) return Status::kNullPointer;
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
  // The whole-sequence final state leaves the last rank, or rank 0 with the zigzag layout.
  const bool last = comm_rank == (a.sharding == Sharding::kZigzag ? 0 : comm_size - 1), first = comm_rank == 0;
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
