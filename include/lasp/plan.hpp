#pragma once
// lasp::Plan: what every rank of an SP group agreed on for one layer shape (cuDNN's and
// cuFFT's plan pattern). make_plan (api.hpp for host communicators, plan.cuh for device ones)
// is called once per layer shape by every rank together; it exchanges and checks every rank's
// shape (B, H, D, E and R must agree; N may differ from rank to rank), element type, policies
// and lasp version, decides the schedule for the whole group (schedule::Truncated's single hop
// only if EVERY rank's decay over its own N is below fp32 resolution) and sizes this rank's
// workspace. It returns the same Status on every rank. forward/backward then take the plan:
//
//   lasp::Plan<P, lasp::bf16> plan;
//   lasp::Status st = lasp::make_plan<P, lasp::bf16>(shape, {slopes}, comm, &plan);  // collective
//   std::vector<std::byte> ws(plan.workspace_size());
//   st = lasp::forward(plan, fwd_args, comm, {ws.data(), ws.size()});              // fwd_args.shape == plan.shape()
//
// A plan holds no memory and no communicator: copy it freely; it is valid with any communicator
// of the same group (same rank and size) and the element type T it was made for.
#include <cstddef>
#include <cstdint>
#include <vector>
#include "args.hpp"
#include "comm/check.hpp"
#include "config.hpp"
#include "driver/packed.hpp"
#include "driver/validate.hpp"
#include "schedule/hierarchical.hpp"
#include "schedule/truncated.hpp"
#include "status.hpp"
#include "tensor.hpp"
#include "workspace.hpp"

LASP_NAMESPACE_BEGIN

namespace detail {
struct PlanAccess;
}

/// The outcome of make_plan on this rank (see the file comment). Default-constructed: not
/// valid, and every call with it returns kPlanMismatch.
template <class Policy, class T>
class Plan {
 public:
  using policy = Policy;
  using element = T;

  bool valid() const { return valid_; }
  /// This rank's shape (its own N); forward/backward arguments must carry exactly this shape.
  const Shape& shape() const { return shape_; }
  int rank() const { return rank_; }
  int size() const { return shape_.R; }
  /// The group's decision for schedule::Truncated<AllGather> (and Auto): every rank shifts its
  /// summary to its neighbour instead of the all-gather. Always false for other schedules.
  bool single_hop() const { return single_hop_; }
  /// Tokens held by the ranks before this one (the global position of this rank's first token),
  /// and by the whole group.
  index_t token_offset() const { return t0_; }
  index_t total_tokens() const { return total_; }
  /// This rank's workspace (reserve and scratch), sized when the plan was made (for the CUDA
  /// backend: on the device current then).
  const WorkspaceSizes& workspace_sizes() const { return sizes_; }
  std::size_t workspace_size() const { return sizes_.single(); }

  /// kSuccess when a call with `s` on a communicator of this rank and size matches the plan;
  /// kPlanMismatch otherwise (or when the plan is not valid).
  Status check_call(const Shape& s, int comm_rank, int comm_size) const {
    if (!valid_ || !(s == shape_) || comm_rank != rank_ || comm_size != shape_.R) return Status::kPlanMismatch;
    return Status::kSuccess;
  }
  /// With single_hop(), the call's decay must still allow it on this rank (slopes changed after
  /// make_plan would make the single hop inexact): kPlanMismatch if not.
  Status check_decay(const typename Policy::Decay::Params& p, const Shape& s) const {
    if (single_hop_ && !Policy::Decay::single_hop(p, s)) return Status::kPlanMismatch;
    return Status::kSuccess;
  }

 private:
  friend struct detail::PlanAccess;
  Shape shape_{};
  int rank_ = -1;
  bool valid_ = false, single_hop_ = false;
  index_t t0_ = 0, total_ = 0;
  WorkspaceSizes sizes_{};
};

namespace detail {

/// One rank's record in make_plan's all-gather (floats, every value an exact integer < 2^16):
///   [0] its local status code, [1] its decay verdict (1: single hop possible on this rank),
///   [2..5] its N in 16-bit chunks, [6] the node size its schedule uses (schedule::Hierarchical:
///   effective_node_size, else 0), [7] 0, then comm::fingerprint of (Policy, element type,
///   B, H, D, E, R, communicator size, lasp version) with N left out (ranks may differ in N).
inline constexpr std::size_t kPlanHead = 8;
inline constexpr std::size_t kPlanRecordFloats = kPlanHead + comm::kFingerprintFloats;

struct PlanAccess {
  /// The status make_plan refuses with on this rank alone (before the exchange).
  template <class Policy, class Backend, class T, class Plan_>
  static Status local_status(const Shape& s, int comm_rank, int comm_size, const Plan_* out) {
    if (!out) return Status::kNullPointer;
    LASP_RETURN_IF_ERROR(driver::check_shape(s, comm_size, comm_rank));
    if (s.N == 0 && !driver::supports_empty<Backend>::value) return Status::kUnsupportedFeature;
    return Backend::template check_common<Policy, T>(s);
  }
  /// This rank's verdict for the group's single hop: the schedule takes it, and the decay
  /// parameters given to make_plan (slopes) are valid and strong enough over this rank's N.
  template <class Policy>
  static bool local_hop(const Shape& s, const typename Policy::Decay::Params& p, Status local) {
    using Decay = typename Policy::Decay;
    if (!schedule::uses_group_hop<typename Policy::Schedule>::value || local != Status::kSuccess) return false;
    return Decay::check(p, s) == Status::kSuccess && Decay::single_hop(p, s);
  }
  template <class Policy>
  static std::vector<float> record(const Shape& s, int comm_size, int elem_code, std::size_t elem_size,
                                   Status local, bool hop, int node_size = 0) {
    std::vector<float> r(kPlanRecordFloats, 0.f);
    r[0] = float(int(local));
    r[1] = hop ? 1.f : 0.f;
    r[6] = float(node_size > 0 && node_size < 65536 ? node_size : 0);
    const auto n = std::uint64_t(s.N > 0 ? s.N : 0);
    for (int c = 0; c < 4; ++c) r[std::size_t(2 + c)] = float((n >> (16 * c)) & 0xffffu);
    Shape no_n = s;
    no_n.N = 0;
    const std::vector<float> f = comm::fingerprint<Policy>(no_n, comm_size, elem_code, elem_size);
    for (std::size_t i = 0; i < f.size(); ++i) r[kPlanHead + i] = f[i];
    return r;
  }
  /// The agreed status from every rank's record (`all`: R records), the same on every rank:
  /// the local status of the lowest rank that refused, else kPeerMismatch if two fingerprints
  /// differ, else kSuccess; then fills *out (when non-null).
  template <class Policy, class T>
  static Status finish(const float* all, int R, int comm_rank, const Shape& s, const WorkspaceSizes& sizes,
                       Plan<Policy, T>* out) {
    if (R < 1) return Status::kCommError;
    for (int j = 0; j < R; ++j) {
      const float code = all[std::size_t(j) * kPlanRecordFloats];
      if (code != 0.f) return code > 0.f && code < 256.f ? Status(int(code)) : Status::kCommError;
    }
    for (int j = 1; j < R; ++j) {
      if (all[std::size_t(j) * kPlanRecordFloats + 6] != all[6]) return Status::kPeerMismatch;  // node size
      for (std::size_t i = kPlanHead; i < kPlanRecordFloats; ++i)
        if (all[std::size_t(j) * kPlanRecordFloats + i] != all[i]) return Status::kPeerMismatch;
    }
    bool hop = true;
    index_t t0 = 0, total = 0;
    for (int j = 0; j < R; ++j) {
      const float* rec = all + std::size_t(j) * kPlanRecordFloats;
      hop = hop && rec[1] == 1.f;
      std::uint64_t n = 0;
      for (int c = 0; c < 4; ++c) n |= std::uint64_t(rec[2 + c]) << (16 * c);
      if (j < comm_rank) t0 += index_t(n);
      total += index_t(n);
    }
    if (out) {
      Plan<Policy, T> p;
      p.shape_ = s;
      p.rank_ = comm_rank;
      p.valid_ = true;
      p.single_hop_ = hop && schedule::uses_group_hop<typename Policy::Schedule>::value;
      p.t0_ = t0;
      p.total_ = total;
      p.sizes_ = sizes;
      *out = p;
    }
    return Status::kSuccess;
  }
};

}  // namespace detail

LASP_NAMESPACE_END
