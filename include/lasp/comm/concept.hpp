#pragma once
// The communicator concept (duck-typed, checked by a trait; no virtual calls on the hot path).
//
// A communicator type C of an SP group provides:
//   using stream_type = ...;                      // host_stream for host comms, cudaStream_t for device comms
//   static constexpr bool kDeviceMemory;          // where the buffers it moves live
//   int rank() const;  int size() const;          // this rank's position in the SP group, group size
//   Status send(const float* buf, std::size_t count, int peer, stream_type);
//   Status recv(float* buf, std::size_t count, int peer, stream_type);
//   Status all_gather(const float* send, float* recv, std::size_t count, stream_type);  // recv: size()*count
// send/recv are point-to-point within the group; a send is matched by the peer's recv of the same count.
// Ordering: operations are ordered on the stream like kernels (device comms) or complete before
// returning (host comms, where recv blocks until the peer's data is there; send must not block).
//
// Optional members, used when present (detected by traits in schedule/):
//   Status sendrecv(const float* s, int dst, float* r, int src, std::size_t count, stream_type);
//       one grouped exchange (dst or src -1 skips that half); schedule::Truncated shifts every
//       rank's summary at once with it, and schedule::LogScan runs each of its rounds with it,
//       else they call send then recv;
//   Status fork(stream_type, stream_type* side);  Status join(stream_type);
//       a side stream for the overlapped schedules (ChainOverlap, AllGatherOverlap);
//   int node_size() const;
//       the group's ranks sit on nodes (hosts) of node_size() CONTIGUOUS ranks each (ranks
//       [n g, (n+1) g) share node n); <= 0 = unknown. Used by schedule::Hierarchical only, which
//       without it (or with a size that does not split the group into equal nodes) runs its
//       inner scan over the whole group (schedule/hierarchical.hpp). Must be the same on every rank.
#include "../config.hpp"
#include <cstddef>
#include <type_traits>
#include <utility>
#include "../status.hpp"

LASP_NAMESPACE_BEGIN

/// The stream type of the host backend (everything is synchronous on the calling thread).
struct host_stream {};

namespace detail {
template <class C, class = void>
struct is_communicator : std::false_type {};
template <class C>
struct is_communicator<
    C, std::void_t<typename C::stream_type, decltype(C::kDeviceMemory),
                   decltype(std::declval<const C&>().rank()), decltype(std::declval<const C&>().size()),
                   decltype(std::declval<C&>().send(std::declval<const float*>(), std::size_t{}, 0,
                                                    std::declval<typename C::stream_type>())),
                   decltype(std::declval<C&>().recv(std::declval<float*>(), std::size_t{}, 0,
                                                    std::declval<typename C::stream_type>())),
                   decltype(std::declval<C&>().all_gather(std::declval<const float*>(), std::declval<float*>(),
                                                          std::size_t{}, std::declval<typename C::stream_type>()))>>
    : std::true_type {};
}  // namespace detail

template <class C>
inline constexpr bool is_communicator_v = detail::is_communicator<C>::value;

LASP_NAMESPACE_END
