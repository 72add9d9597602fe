#pragma once
// What every schedule (one file each in this folder) shares: the sizes of a rank summary and the
// neighbour shift. A schedule is a policy struct that also carries its scan across SP ranks
// (math.md section 3), written once over any Backend and any communicator: the host backend runs
// it with thread ranks, the CUDA backend with NCCL, same code, stream-ordered.
//
// A schedule S provides
//   kName, kOverlapBackward (backward's scan may run on the communicator's side stream),
//   kGathers (its scratch needs R summaries: `gathered`),
//   kNeighbourChain (its only messages are one state from each rank to one neighbour, in the
//     direction of the scan: a rank may then send before it receives without changing what
//     its peers see, so schedule::Truncated can cut such a chain rank by rank),
//   forward(comm, d, AL, P, init, final, tmp, gathered, stream)   P = state entering this rank,
//   backward(comm, d, AM, G, d_final, d_init, tmp, gathered, stream)   G = gradient of the state
//                                                                        leaving this rank,
//   suffix_sum(comm, bh, total, suffix, tmp, gathered, stream)    gates: later ranks' dc totals.
// Backend state ops used: zero(p, n, stream), copy(dst, src, n, stream),
//   combine(out, A, P, L, bh, de, stream, skip = nullptr): out[i,:] = A[i] * P[i,:] + L[i,:]
//   (A null = 1, P null = 0; out may alias P or L; nothing is written while *skip != 0: the
//   schedules pass StateDims::skip when `out` is a user's buffer, final_state or d_initial_state);
//   put_status / verdict: the agreement (agree() below).
// A schedule's messages (which ranks send what, in which order) must depend only on what every
// rank of the group shares: R, the rank, StateDims::bh/de/single_hop, the decay's kind, the
// communicator's node_size() (schedule::Hierarchical; the same on every rank). Never on
// a rank's own data (StateDims::local_hop only by kNeighbourChain schedules, where it changes the
// order of one rank's own send and receive, not the messages): a rank that refused the call
// still runs the scan of the group with its own workspace (driver.hpp).
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include "../comm/concept.hpp"
#include "../config.hpp"
#include "../status.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

/// Floats of one rank's status word in the agreement of every call (16 bytes).
inline constexpr std::size_t kStatusFloats = 4;

/// Sizes of one rank summary: bh (B*H) scalars A followed by bh states of de (D*E) floats, and
/// what the scan needs besides.
struct StateDims {
  index_t bh, de;
  /// schedule::Truncated, agreed by the group (a Plan): on EVERY rank every head's decay over
  /// that rank's tokens is below fp32 resolution. False without a plan.
  bool single_hop = false;
  /// This rank's own decay over its own tokens is below fp32 resolution on every head (its
  /// message may drop the incoming state): used by kNeighbourChain schedules only.
  bool local_hop = false;
  /// Device verdict of the call (driver/layout.hpp kDeviceStatus), or null: writes of user
  /// buffers (final_state, d_initial_state) are skipped while it is non-zero.
  const std::uint32_t* skip = nullptr;
  std::size_t state() const { return std::size_t(bh * de); }
  std::size_t summary() const { return std::size_t(bh * (1 + de)); }
};

/// The agreement step of every call with R > 1, before anything is written (driver.hpp): each
/// rank puts its local status in `word` (kStatusFloats floats, Backend memory), then every
/// rank's word is all-gathered into `all` (R words). Backends whose memory the host reads
/// (Backend::kSyncVerdict) return the agreed verdict: the status of the lowest rank that
/// refused, else kSuccess. The others record it on the device in *slot (kernels then skip their
/// output writes; cuda::deferred_status reads it) and return kSuccess. A rank that refused
/// itself gets its own status back either way. kCommError if the all-gather fails.
template <class Backend, class Comm, class Stream>
Status agree(Comm& comm, Status local, float* word, float* all, std::uint32_t* slot, Stream s, int mode = 0) {
  LASP_RETURN_IF_ERROR(Backend::put_status(word, local, s, mode));
  LASP_RETURN_IF_ERROR(comm.all_gather(word, all, kStatusFloats, s));
  const Status v = Backend::verdict(all, comm.size(), slot, s);
  return v != Status::kSuccess ? v : local;
}

template <class C, class = void>
struct has_sendrecv : std::false_type {};
template <class C>
struct has_sendrecv<C, std::void_t<decltype(std::declval<C&>().sendrecv(
                           std::declval<const float*>(), 0, std::declval<float*>(), 0, std::size_t{},
                           std::declval<typename C::stream_type>()))>> : std::true_type {};

/// Send n floats to dst and receive n from src (either may be -1): one grouped call where the
/// communicator has sendrecv (so that every rank can shift at once), else send then recv (host
/// communicators: send does not block).
template <class Comm, class Stream>
Status shift(Comm& comm, const float* sbuf, int dst, float* rbuf, int src, std::size_t n, Stream s) {
  if constexpr (has_sendrecv<Comm>::value) {
    return comm.sendrecv(sbuf, dst, rbuf, src, n, s);
  } else {
    if (dst >= 0) LASP_RETURN_IF_ERROR(comm.send(sbuf, n, dst, s));
    if (src >= 0) LASP_RETURN_IF_ERROR(comm.recv(rbuf, n, src, s));
    return Status::kSuccess;
  }
}

/// forward / backward / suffix_sum of a schedule that is one exclusive scan over virtual ranks
/// (LogScan, Hierarchical): Derived::scan<Backend>(comm, d, X, out, init, fin, tmp, gathered,
/// reverse, stream) with X = [A | L] forward (out = P, fin = final state) and [A | M] backward
/// over reversed ranks (out = G, init = dS_final, fin = d_init = A_0 G_0 + M_0).
template <class Derived>
struct ScanSchedule {
  template <class Backend, class Comm, class Stream>
  static Status forward(Comm& comm, StateDims d, const float* AL, float* P, const float* init, float* final_state,
                        float* tmp, float* gathered, Stream s) {
    return Derived::template scan<Backend>(comm, d, AL, P, init, final_state, tmp, gathered, false, s);
  }
  template <class Backend, class Comm, class Stream>
  static Status backward(Comm& comm, StateDims d, const float* AM, float* G, const float* d_final, float* d_init,
                         float* tmp, float* gathered, Stream s) {
    return Derived::template scan<Backend>(comm, d, AM, G, d_final, d_init, tmp, gathered, true, s);
  }

 protected:
  /// The ends every such scan shares, once its exclusive states are in `out`: virtual rank 0's
  /// incoming state is `init` (or zero), and the last virtual rank writes the user's `fin` =
  /// A X_out + L from its own summary X = [A | L] (skipped while the call's verdict failed).
  template <class Backend, class Stream>
  static Status scan_ends(const StateDims& d, int v, int R, const float* X, float* out, const float* init, float* fin,
                          Stream s) {
    if (v == 0) LASP_RETURN_IF_ERROR(init ? Backend::copy(out, init, d.state(), s) : Backend::zero(out, d.state(), s));
    if (v == R - 1 && fin) LASP_RETURN_IF_ERROR(Backend::combine(fin, X, out, X + d.bh, d.bh, d.de, s, d.skip));
    return Status::kSuccess;
  }
};

}  // namespace schedule
LASP_NAMESPACE_END
