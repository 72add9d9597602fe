#pragma once
// Packed documents (args.hpp Packed) and the zigzag layout (Sharding::kZigzag): the checks of a
// call on this rank alone, the group's exchange that places this rank's tokens in the global
// sequence, and what a backend sees of it (driver::Geometry through Ctx). math.md 3.5 and 3.6.
//
// The scan needs no new schedule: a virtual segment v with a document start has the summary
// (A_v, L_v) = (0, the state of its last document at the segment end, from that document's
// initial state), which keeps the scan associative; per-document initial states enter in L_v
// where their document starts. Zigzag runs the rank-ordered scan twice: over the fronts
// (segments 0..R-1, Schedule::forward) and then over the backs (segments R..2R-1, which are
// ranks R-1..0: Schedule::backward's reverse scan, fed with the state leaving segment R-1);
// backward runs the same two passes in the other order (driver.hpp).
//
// Only backends that declare `static constexpr bool kPackedSequences = true` (the host backend)
// run such calls; the others refuse them with kUnsupportedFeature before anything is written.
#include <cstdint>
#include <type_traits>
#include <vector>
#include "../args.hpp"
#include "../status.hpp"
#include "../tensor.hpp"
#include "../workspace.hpp"
#include "validate.hpp"

LASP_NAMESPACE_BEGIN
namespace driver {

template <class B, class = void>
struct supports_packed : std::false_type {};
template <class B>
struct supports_packed<B, std::void_t<decltype(B::kPackedSequences)>> : std::bool_constant<B::kPackedSequences> {};

/// Backends that declare `static constexpr bool kEmptyShards = true` (the host backend) run
/// calls in which this rank holds no token (Shape::N = 0: the rank passes the incoming state on,
/// summary A = 1, L = 0); the others refuse them with kUnsupportedFeature (driver.hpp, plan.hpp)
/// and size their workspace as for N = 1 (layout.hpp).
template <class B, class = void>
struct supports_empty : std::false_type {};
template <class B>
struct supports_empty<B, std::void_t<decltype(B::kEmptyShards)>> : std::bool_constant<B::kEmptyShards> {};

/// Backends that declare `static constexpr bool kDeviceStateIndex = true` (the CUDA backend) read
/// Packed::state_index on the device: the host checks skip its values (the backend checks them
/// where it reads them and reports kInvalidOffsets through its deferred status).
template <class B, class = void>
struct device_state_index : std::false_type {};
template <class B>
struct device_state_index<B, std::void_t<decltype(B::kDeviceStateIndex)>> : std::bool_constant<B::kDeviceStateIndex> {};

/// Read access to cu_seqlens (host-readable memory only).
struct Docs {
  const void* p = nullptr;
  int bits = 32;
  index_t count = 0;  // documents; p holds count + 1 offsets
  index_t at(index_t i) const {
    return bits == 64 ? index_t(static_cast<const std::int64_t*>(p)[i]) : index_t(static_cast<const std::int32_t*>(p)[i]);
  }
  index_t total() const { return at(count); }
  /// The first i in [0, count] with at(i) > x (count + 1 if none): offsets are non-decreasing.
  index_t upper(index_t x) const {
    index_t lo = 0, hi = count + 1;
    while (lo < hi) {
      const index_t mid = (lo + hi) / 2;
      if (at(mid) > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
  /// The first i in [0, count] with at(i) >= x (count + 1 if none).
  index_t lower(index_t x) const {
    index_t lo = 0, hi = count + 1;
    while (lo < hi) {
      const index_t mid = (lo + hi) / 2;
      if (at(mid) >= x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
};

/// One virtual segment of this rank: local rows [n0, n1), the first at global position g0.
/// `ends`: the segment that ends the group's sequence, i.e. the last non-empty virtual segment in
/// global order (rank 0's first segment when the group holds no token); the empty documents at
/// the position `total` are placed there, on exactly one rank even when the last ranks are empty.
struct Segment {
  index_t n0 = 0, n1 = 0, g0 = 0;
  bool ends = false;
};

/// Where this rank's tokens sit in the group's sequence (exchange_geometry): its segments (1, or
/// 2 with zigzag: front then back) and the documents (packed only).
struct Geometry {
  int segments = 1;
  Segment seg[2];
  bool packed = false;
  Docs docs{};
  const Packed* pk = nullptr;
  index_t total = 0;  // tokens of the group
};

/// bit 0: packed documents, bit 1: zigzag. 0: a plain call.
template <class Args>
int layout_mode(const Args& a) {
  return (a.packed.active() ? 1 : 0) | (a.sharding == Sharding::kZigzag ? 2 : 0);
}

/// The rank that holds the whole-sequence final state (and reads d_final_state).
template <class Args>
int final_owner(const Args& a, int comm_size) {
  return a.sharding == Sharding::kZigzag ? 0 : comm_size - 1;
}

/// 64-bit FNV-1a of the offsets (the agreement compares them across ranks).
inline std::uint64_t offsets_hash(const Docs& d) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&](std::uint64_t x) {
    for (int i = 0; i < 8; ++i) h = (h ^ ((x >> (8 * i)) & 0xffu)) * 1099511628211ull;
  };
  mix(std::uint64_t(d.count));
  for (index_t i = 0; i <= d.count; ++i) mix(std::uint64_t(d.at(i)));
  return h;
}

/// A tag of the call's layout for pairing forward and backward (host backend): 0 for plain calls.
template <class Args>
std::uint32_t layout_tag(const Args& a) {
  const int mode = layout_mode(a);
  if (!mode || (a.packed.active() && !a.packed.cu_seqlens)) return std::uint32_t(mode);
  std::uint64_t h = std::uint64_t(mode) * 0x9e3779b97f4a7c15ull;
  if (a.packed.active()) h ^= offsets_hash(Docs{a.packed.cu_seqlens, a.packed.index_bits, a.packed.docs});
  return std::uint32_t(h ^ (h >> 32)) | 1u;
}

namespace detail {
template <class T, class D>
bool whole_states(const ForwardArgs<T, D>& a) { return a.initial_state || a.final_state; }
template <class T, class D>
bool whole_states(const BackwardArgs<T, D>& a) { return a.d_final_state || a.d_initial_state; }
inline Extent floats_extent(const void* p, index_t n) {
  return byte_extent(p, p && n > 0 ? std::size_t(n) * sizeof(float) : 0);
}
}  // namespace detail

/// Checks of the packed / zigzag arguments on this rank alone (after check_forward /
/// check_backward). `supported`: the backend runs such calls. `plan_total`: the group's tokens
/// from a plan, or -1 (then `last offset == total` is checked after the exchange).
/// `outs`, `ins`: byte ranges of the call's other outputs and inputs (for the overlap checks).
template <class Args>
Status check_layout(const Args& a, bool supported, index_t plan_total, const std::vector<Extent>& outs,
                    const std::vector<Extent>& ins, bool forward, bool host_slots = true) {
  const Shape& s = a.shape;
  if (a.sharding != Sharding::kContiguous && a.sharding != Sharding::kZigzag) return Status::kInvalidShape;
  if (!layout_mode(a)) return Status::kSuccess;
  if (!supported) return Status::kUnsupportedFeature;
  if (a.sharding == Sharding::kZigzag && s.N % 2 != 0) return Status::kInvalidShape;  // two halves of N / 2
  if (!a.packed.active()) return Status::kSuccess;
  const Packed& p = a.packed;
  if (s.B != 1) return Status::kInvalidShape;
  if (detail::whole_states(a)) return Status::kUnsupportedFeature;
  if (!p.cu_seqlens) return Status::kNullPointer;
  if (p.index_bits != 32 && p.index_bits != 64) return Status::kInvalidOffsets;
  if (p.docs < 1) return Status::kInvalidOffsets;
  if (reinterpret_cast<std::uintptr_t>(p.cu_seqlens) % std::uintptr_t(p.index_bits / 8)) return Status::kMisaligned;
  if (p.state_index && !p.initial_states) return Status::kNullPointer;
  if (!aligned16(p.initial_states) || !aligned16(p.final_states) || !aligned16(p.d_final_states) ||
      !aligned16(p.d_initial_states) || reinterpret_cast<std::uintptr_t>(p.state_index) % alignof(std::int32_t))
    return Status::kMisaligned;
  const Docs d{p.cu_seqlens, p.index_bits, p.docs};
  if (d.at(0) != 0) return Status::kInvalidOffsets;
  for (index_t i = 0; i < p.docs; ++i)
    if (d.at(i + 1) < d.at(i)) return Status::kInvalidOffsets;
  if (plan_total >= 0 && d.total() != plan_total) return Status::kInvalidOffsets;
  if (p.initial_states) {
    if (p.pool < 1 || (!p.state_index && p.pool < p.docs)) return Status::kInvalidOffsets;
    if (p.state_index && host_slots)
      for (index_t i = 0; i < p.docs; ++i)
        if (p.state_index[i] < -1 || index_t(p.state_index[i]) >= p.pool) return Status::kInvalidOffsets;
  }
  // Overlaps: the per-document outputs against every buffer of the call, and the other outputs
  // against the per-document inputs.
  const index_t st = s.H * s.D * s.E;
  const Extent doc_out = forward ? detail::floats_extent(p.final_states, p.docs * st)
                                 : detail::floats_extent(p.d_initial_states, p.docs * st);
  std::vector<Extent> doc_in = {detail::floats_extent(p.initial_states, p.pool * st),
                                byte_extent(p.cu_seqlens, std::size_t(p.docs + 1) * std::size_t(p.index_bits / 8)),
                                byte_extent(p.state_index, p.state_index ? std::size_t(p.docs) * 4 : 0)};
  if (!forward) doc_in.push_back(detail::floats_extent(p.d_final_states, p.docs * st));
  for (const Extent& e : outs)
    if (overlaps(doc_out, e)) return Status::kOverlap;
  for (const Extent& e : ins)
    if (overlaps(doc_out, e)) return Status::kOverlap;
  for (const Extent& e : doc_in)
    if (overlaps(doc_out, e)) return Status::kOverlap;
  for (const Extent& o : outs)
    for (const Extent& e : doc_in)
      if (overlaps(o, e)) return Status::kOverlap;
  return Status::kSuccess;
}

/// Floats of one rank's record in exchange_geometry: N in three 16-bit parts, the offsets' hash
/// in four 16-bit parts, the layout mode, the rank's status.
inline constexpr std::size_t kGeometryFloats = 9;

/// Collective (every rank of a packed / zigzag call): all-gathers every rank's status, N and the
/// hash of its offsets, and places this rank's segments in the global sequence. Returns the same
/// status on every rank: the status of the lowest rank that refused the call (`local`), then
/// kPeerMismatch when the ranks' layouts or offsets differ, kInvalidOffsets when the last offset
/// is not the group's total, kCommError. Backends whose memory the host cannot read
/// (kSyncVerdict false) pass `staging`, (1 + R) records of device memory: the records go
/// through it and come back to the host (one synchronisation of `stream`); so for them this
/// exchange is also the call's agreement (driver.hpp).
template <class Backend, class Args, class Comm, class Stream>
Status exchange_geometry(Comm& comm, const Args& a, Status local, float* staging, Stream stream, Geometry* g) {
  const int R = comm.size(), r = comm.rank();
  const Packed& p = a.packed;
  const bool packed = p.active(), zz = a.sharding == Sharding::kZigzag;
  const Docs d{p.cu_seqlens, p.index_bits, p.docs};
  const std::uint64_t h = packed && local == Status::kSuccess ? offsets_hash(d) : 0;
  constexpr std::size_t W = kGeometryFloats;
  std::vector<float> mine(W, 0.f), all(W * std::size_t(R), 0.f);
  const auto n = std::uint64_t(a.shape.N > 0 ? a.shape.N : 0);
  for (int c = 0; c < 3; ++c) mine[std::size_t(c)] = float((n >> (16 * c)) & 0xffffu);
  for (int c = 0; c < 4; ++c) mine[std::size_t(3 + c)] = float((h >> (16 * c)) & 0xffffu);
  mine[7] = float(layout_mode(a));
  mine[8] = float(int(local));
  if (R > 1) {
    if constexpr (Backend::kSyncVerdict) {
      LASP_RETURN_IF_ERROR(comm.all_gather(mine.data(), all.data(), W, stream));
    } else {
      float* own = staging + W * std::size_t(R);
      LASP_RETURN_IF_ERROR(Backend::to_device(own, mine.data(), W, stream));
      LASP_RETURN_IF_ERROR(comm.all_gather(own, staging, W, stream));
      LASP_RETURN_IF_ERROR(Backend::to_host(all.data(), staging, W * std::size_t(R), stream));
    }
  } else {
    all = mine;
  }
  for (int j = 0; j < R; ++j)
    if (const float st = all[std::size_t(j) * W + 8]; st != 0.f) return Status(int(st));
  std::vector<index_t> N(static_cast<std::size_t>(R));
  for (int j = 0; j < R; ++j) {
    const float* rec = all.data() + std::size_t(j) * W;
    for (std::size_t i = 3; i < 8; ++i)
      if (rec[i] != all[i]) return Status::kPeerMismatch;
    std::uint64_t nj = 0;
    for (int c = 0; c < 3; ++c) nj |= std::uint64_t(rec[c]) << (16 * c);
    N[std::size_t(j)] = index_t(nj);
  }
  Geometry out;
  for (int j = 0; j < R; ++j) out.total += N[std::size_t(j)];
  if (!zz) {
    index_t t0 = 0;
    for (int j = 0; j < r; ++j) t0 += N[std::size_t(j)];
    out.segments = 1;
    out.seg[0] = {0, a.shape.N, t0};
  } else {
    index_t front = 0, back = 0;
    for (int j = 0; j < r; ++j) front += N[std::size_t(j)] / 2;
    for (int j = 0; j < R; ++j) back += N[std::size_t(j)] / 2;
    for (int j = R - 1; j > r; --j) back += N[std::size_t(j)] / 2;
    const index_t half = a.shape.N / 2;
    out.segments = 2;
    out.seg[0] = {0, half, front};
    out.seg[1] = {half, a.shape.N, back};
  }
  // Segment::ends: the last non-empty virtual segment (contiguous: ranks 0..R-1; zigzag: fronts
  // of ranks 0..R-1, then backs of ranks R-1..0).
  int end_rank = 0, end_seg = 0;
  for (int v = 0; v < (zz ? 2 * R : R); ++v) {
    const int j = v < R ? v : 2 * R - 1 - v;
    if ((zz ? N[std::size_t(j)] / 2 : N[std::size_t(j)]) > 0) end_rank = j, end_seg = v < R ? 0 : 1;
  }
  if (r == end_rank) out.seg[end_seg].ends = true;
  if (packed) {
    if (d.total() != out.total) return Status::kInvalidOffsets;
    out.packed = true;
    out.docs = d;
    out.pk = &a.packed;
  }
  *g = out;
  return Status::kSuccess;
}

}  // namespace driver
LASP_NAMESPACE_END
