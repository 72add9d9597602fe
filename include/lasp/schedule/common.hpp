#pragma once
// What every schedule (one file each in this folder) shares: the sizes of a rank summary and the
// neighbour shift. A schedule is a policy struct that also carries its scan across SP ranks
// (math.md section 3), written once over any Backend and any communicator: the host backend runs
// it with thread ranks, the CUDA backend with NCCL, same code, stream-ordered.
//
// A schedule S provides
//   kName, kOverlapBackward (backward's scan may run on the communicator's side stream),
//   kGathers (its scratch needs R summaries: `gathered`),
//   forward(comm, d, AL, P, init, final, tmp, gathered, stream)   P = state entering this rank,
//   backward(comm, d, AM, G, d_final, d_init, tmp, gathered, stream)   G = gradient of the state
//                                                                        leaving this rank,
//   suffix_sum(comm, bh, total, suffix, tmp, gathered, stream)    gates: later ranks' dc totals.
// Backend state ops used: zero(p, n, stream), copy(dst, src, n, stream),
//   combine(out, A, P, L, bh, de, stream): out[i,:] = A[i] * P[i,:] + L[i,:] (A null = 1,
//   P null = 0; out may alias P or L).
#include <cstddef>
#include <type_traits>
#include <utility>
#include "../comm/concept.hpp"
#include "../config.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

/// Sizes of one rank summary: bh (B*H) scalars A followed by bh states of de (D*E) floats.
struct StateDims {
  index_t bh, de;
  bool single_hop = false;  // schedule::Truncated: every head's decay over a rank is below fp32 resolution
  std::size_t state() const { return std::size_t(bh * de); }
  std::size_t summary() const { return std::size_t(bh * (1 + de)); }
};

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

}  // namespace schedule
LASP_NAMESPACE_END
