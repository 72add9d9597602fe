#pragma once
// schedule::Hierarchical<Inner, Outer>: an exact exclusive scan of the rank summaries over an SP
// group whose R ranks sit on several nodes (math.md section 3.4, "Hierarchical"): a scan inside
// each node (NVLink), a scan over the node totals with one rank per node (the network), and a
// fix-up inside each node. Only ONE message (a summary; a state with Outer = Chain) crosses
// between two nodes per node pair and round of the outer scan, instead of the messages of every
// rank pair that straddles a node boundary in a flat scan.
//
// Nodes. The group's ranks are contiguous blocks of g ranks (g = the communicator's node_size(),
// an OPTIONAL member, comm/concept.hpp): ranks [n g, (n+1) g) are node n, M = R / g nodes. This
// is what comm::split_sp_dp gives when SP groups are contiguous world ranks and ranks are placed
// on hosts in blocks (comm::GroupRanks::sp_node_size computes g from the ranks per host).
// Fallback (documented, never an error; every rank decides the same from R and node_size()):
//   - no node_size() member, node_size() <= 0 (unknown), node_size() >= R, or R % node_size() != 0:
//     ONE node of R ranks: the Inner scan over the whole group (Hierarchical<LogScan, X> then sends
//     exactly LogScan's messages; Hierarchical<AllGather, X> R-1 rounds of direct exchanges);
//   - node_size() == 1: R nodes of one rank: the Outer schedule over the whole group (exactly its
//     messages: Chain or LogScan).
// node_size() must give the same node size on every rank of the group (it is the group's
// topology). make_plan checks it (the effective node size is in every rank's record: ranks that
// differ get kPeerMismatch, all of them); a plan-less call does not: ranks that disagree exchange
// mismatched messages (host: kCommError after a HostGroup timeout; NCCL: a hang), as with B, H,
// D, E of a plan-less call.
//
// Virtual ranks: v = r (forward) or v = R-1-r (backward: the reverse scan), u = v % g the local
// index in the node, nv = v / g the virtual node. Nodes are contiguous blocks in both orders.
// Every pass (the forward scan, the backward scan) runs three phases:
//   (a) inside each node (intra-node links, one summary [A | L] of S = bh (1 + de) floats per
//       message): every rank forms e_v = X_{base} (+) ... (+) X_{v-1}, the exclusive pair of its
//       node (base = the node's first virtual rank), and the node's last virtual rank (its leader,
//       u = g-1) the node total Y = e_v (+) X_v. S_init is folded into virtual rank 0's summary
//       first (L'_0 = A_0 S_init + L_0, as LogScan and AllGather do), so node 0 needs no
//       incoming state. Two ways (Inner):
//         Inner = LogScan:   Kogge-Stone inside the node: ceil(log2 g) rounds at distances
//                            1, 2, 4, ... < g, one grouped sendrecv per rank per round (send then
//                            recv on communicators without sendrecv, as LogScan);
//         Inner = AllGather: direct: each rank's summary goes to every later rank of its node,
//                            g-1 rounds at distances 1..g-1 (one grouped sendrecv per rank per
//                            round; the concept has no collective over a part of the group),
//                            one combine per received summary (LogScan: two).
//   (b) across nodes (inter-node links): the leaders alone (one rank per node) run the Outer
//       scan over the M node totals Y_n (Outer = LogScan: ceil(log2 M) rounds of one summary per
//       message; Outer = Chain: M-1 dependent hops of one state) and get Pin_n, the state
//       entering node n (0 for node 0: S_init is already in Y_0).
//   (c) inside each node but node 0 (intra-node links, one state of bh de floats per message):
//       the leader broadcasts Pin_n to the other g-1 ranks of its node along a binomial tree
//       (ceil(log2 g) rounds; every rank receives once); then every rank forms
//       P_v = e_A Pin_n + e_L (one combine). v = 0 sets P = S_init; v = R-1 writes
//       fin = A_{R-1} P + L_{R-1} (a user buffer: skipped under StateDims::skip).
//
// Messages of one pass (1 < g < R; tests/cpu/hierarchical_test.cpp counts them per rank and link):
//   rank with local index u, in node nv:
//     (a) Inner = LogScan:   sends #{d = 2^k < g : u + d < g}, receives #{d : u - d >= 0}
//         Inner = AllGather: sends g-1-u, receives u                           (S floats each)
//     (b) leaders only: Outer's messages over M nodes                          (S floats, LogScan;
//                                                                               de*bh floats, Chain)
//     (c) nv >= 1: receives 1 (not the leader); sends #{d = 2^k : w < d, w + d < g}, w = g-1-u
//                                                                              (bh*de floats each)
//   per node: (a) sum_{d = 2^k < g} (g - d) [LogScan] or g (g-1) / 2 [AllGather] intra-node
//   messages; (c) g-1 intra-node messages (none in node 0); per group: (b) sum_{d = 2^k < M} (M - d)
//   [LogScan] or M-1 [Chain] inter-node messages, the only ones that cross nodes.
//   Depth (dependent rounds): ceil(log2 g) [or g-1] + ceil(log2 M) [or M-1] + ceil(log2 g).
//
// Scratch (the driver's tmp = 1 summary and, since kGathers, gathered = R summaries; slot k =
// gathered[k S, (k+1) S)). 1 < g < R implies R >= 4:
//   tmp                 (a) y, the running inclusive pair (LogScan inner) or S_init folded into
//                       rank 0's summary (AllGather inner); (b) Outer's tmp
//   slot 0              (a) x, the pair received this round; (b) Outer's gathered (LogScan: 2)
//   slot 1 [0, bh)      (a) zeros (L = 0 for products of A's);   (b) Outer's gathered
//   slot 2              Y, the leader's node total (Outer's input summary)
//   slot 3 [0, bh)      e_A;   slot 3 [bh, S): Pin (state entering the node)
//   e_L lives in the output state itself (P forward, G backward), as in LogScan.
// One node (g = R): slots 0 and 1 only, e_A in slot 1 [bh, 2 bh) (2 bh <= S), so R = 2 fits;
// g = 1: Outer's own scratch.
#include <type_traits>
#include "all_gather.hpp"
#include "chain.hpp"
#include "common.hpp"
#include "log_scan.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

template <class C, class = void>
struct has_node_size : std::false_type {};
template <class C>
struct has_node_size<C, std::void_t<decltype(int(std::declval<const C&>().node_size()))>> : std::true_type {};

/// The node size the hierarchical schedule uses on `comm`: the communicator's node_size() when it
/// has one that splits the group into at least two nodes of equal size (1 <= g < R, R % g == 0),
/// else R (one node: see the fallback in the file comment).
template <class Comm>
int effective_node_size(const Comm& comm) {
  const int R = comm.size();
  if constexpr (has_node_size<Comm>::value) {
    const int g = comm.node_size();
    if (g >= 1 && g < R && R % g == 0) return g;
  }
  return R;
}

/// Does schedule S read the communicator's node_size()? (make_plan then agrees on it.)
template <class S>
struct uses_nodes : std::false_type {};
/// The node size a plan records for schedule S on `comm`: effective_node_size for schedules that
/// use nodes, else 0 (make_plan: ranks that differ get kPeerMismatch; plan.hpp).
template <class S, class Comm>
int plan_node_size(const Comm& comm) {
  if constexpr (uses_nodes<S>::value) {
    return effective_node_size(comm);
  } else {
    (void)comm;
    return 0;
  }
}

namespace detail {

/// The leaders of the nodes (one rank per node) as a communicator of M = R / g ranks: member j
/// is real rank j g + lead. Point-to-point only (all_gather is not used by the Outer schedules
/// and returns kCommError).
template <class Comm>
class Leaders {
 public:
  using stream_type = typename Comm::stream_type;
  static constexpr bool kDeviceMemory = Comm::kDeviceMemory;
  Leaders(Comm& c, int g, int lead) : c_(&c), g_(g), lead_(lead) {}
  int rank() const { return c_->rank() / g_; }
  int size() const { return c_->size() / g_; }
  Status send(const float* b, std::size_t n, int peer, stream_type s) { return c_->send(b, n, real(peer), s); }
  Status recv(float* b, std::size_t n, int peer, stream_type s) { return c_->recv(b, n, real(peer), s); }
  Status all_gather(const float*, float*, std::size_t, stream_type) { return Status::kCommError; }
  template <class C = Comm, class = std::enable_if_t<has_sendrecv<C>::value>>
  Status sendrecv(const float* sb, int dst, float* rb, int src, std::size_t n, stream_type s) {
    return c_->sendrecv(sb, dst < 0 ? -1 : real(dst), rb, src < 0 ? -1 : real(src), n, s);
  }

 private:
  int real(int j) const { return j * g_ + lead_; }
  Comm* c_;
  int g_, lead_;
};


}  // namespace detail

/// Hierarchical scan over nodes of node_size() contiguous ranks (see the file comment):
/// Inner (inside a node) = LogScan (Kogge-Stone) or AllGather (direct exchange with every later
/// rank of the node); Outer (over one rank per node) = LogScan or Chain.
template <class Inner = LogScan, class Outer = LogScan>
struct Hierarchical : ScanSchedule<Hierarchical<Inner, Outer>> {
  static_assert(std::is_same_v<Inner, LogScan> || std::is_same_v<Inner, AllGather>,
                "Hierarchical<Inner, Outer>: Inner is schedule::LogScan or schedule::AllGather");
  static_assert(std::is_same_v<Outer, LogScan> || std::is_same_v<Outer, Chain>,
                "Hierarchical<Inner, Outer>: Outer is schedule::LogScan or schedule::Chain");
  using inner = Inner;
  using outer = Outer;
  static constexpr const char* kName =
      std::is_same_v<Inner, LogScan>
          ? (std::is_same_v<Outer, LogScan> ? "hierarchical(log-scan/log-scan)" : "hierarchical(log-scan/chain)")
          : (std::is_same_v<Outer, LogScan> ? "hierarchical(all-gather/log-scan)" : "hierarchical(all-gather/chain)");
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = true;  // scratch: up to 4 summaries of `gathered` (R >= 4 then)
  static constexpr bool kNeighbourChain = false;

  /// Exclusive scan over virtual ranks (v = r, or R-1-r when `reverse`) of X = [A | L]: out =
  /// state entering v (`init` on v = 0), fin (v = R-1, if non-null) = A_v out + L_v. The same
  /// contract as LogScan::scan.
  template <class Backend, class Comm, class Stream>
  static Status scan(Comm& comm, StateDims d, const float* X, float* out, const float* init, float* fin, float* tmp,
                     float* gathered, bool reverse, Stream s) {
    const int R = comm.size();
    const int g = effective_node_size(comm);
    if (g == 1) {  // R nodes of one rank: the Outer schedule itself
      return reverse ? Outer::template backward<Backend>(comm, d, X, out, init, fin, tmp, gathered, s)
                     : Outer::template forward<Backend>(comm, d, X, out, init, fin, tmp, gathered, s);
    }
    const int v = reverse ? R - 1 - comm.rank() : comm.rank();
    auto real = [&](int w) { return reverse ? R - 1 - w : w; };
    const index_t bh = d.bh, de = d.de;
    const std::size_t S = d.summary();
    const float* XA = X;
    const float* XL = X + bh;
    const int M = R / g, u = v % g, nv = v / g, base = v - u;
    const bool leader = u == g - 1;
    float* x = gathered;
    float* zeros = gathered + S;
    float* Y = gathered + 2 * S;
    // e_A outlives phase (b) in slot 3 when there are several nodes; one node: beside the zeros
    // (2 bh <= S since de >= 1), so that R = 2 fits in two summaries.
    float* eA = M > 1 ? gathered + 3 * S : zeros + bh;
    float* Pin = gathered + 3 * S + bh;
    // What outlives phase (a): e_A where the fix-up needs it (nodes >= 1), Y on leaders of M > 1.
    const bool want_eA = M > 1 && nv >= 1 && u > 0;
    const bool want_Y = M > 1 && leader;
    if (R > 1) {
      // ---- (a) inside the node ----
      LASP_RETURN_IF_ERROR(Backend::zero(zeros, std::size_t(bh), s));
      LASP_RETURN_IF_ERROR((node_scan<Backend>(comm, d, XA, XL, out, v == 0 ? init : nullptr, tmp, x, zeros,
                                               eA, want_eA || want_Y, v, u, g, real, s)));
      if (want_Y) {  // Y = e (+) X: Y_A = e_A X_A, Y_L = X_A e_L + X_L (u = g-1 >= 1: e is not empty)
        LASP_RETURN_IF_ERROR(Backend::combine(Y, eA, XA, zeros, bh, 1, s));
        LASP_RETURN_IF_ERROR(Backend::combine(Y + bh, XA, out, XL, bh, de, s));
      }
      if (M > 1) {
        // ---- (b) across nodes: the leaders' Outer scan over the node totals ----
        if (leader) {
          detail::Leaders<Comm> lc(comm, g, reverse ? 0 : g - 1);
          LASP_RETURN_IF_ERROR(reverse ? Outer::template backward<Backend>(lc, d, Y, Pin, nullptr, nullptr, tmp,
                                                                          gathered, s)
                                       : Outer::template forward<Backend>(lc, d, Y, Pin, nullptr, nullptr, tmp,
                                                                         gathered, s));
        }
        // ---- (c) inside nodes >= 1: broadcast Pin from the leader, fix up ----
        if (nv >= 1) {
          const int w = g - 1 - u;  // 0 = the leader
          for (int dist = 1; dist < g; dist *= 2) {
            const bool sends = w < dist && w + dist < g, receives = w >= dist && w < 2 * dist;
            if (!sends && !receives) continue;
            LASP_RETURN_IF_ERROR(shift(comm, Pin, sends ? real(base + g - 1 - (w + dist)) : -1, Pin,
                                       receives ? real(base + g - 1 - (w - dist)) : -1, d.state(), s));
          }
          if (u == 0) {
            LASP_RETURN_IF_ERROR(Backend::copy(out, Pin, d.state(), s));
          } else {
            LASP_RETURN_IF_ERROR(Backend::combine(out, eA, Pin, out, bh, de, s));
          }
        }
      }
    }
    return ScanSchedule<Hierarchical>::template scan_ends<Backend>(d, v, R, X, out, init, fin, s);
  }


  /// Gates' reverse sum of B*H scalars: one all-gather over the group, as Chain and LogScan do.
  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp, float* gathered,
                           Stream s) {
    return AllGather::suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
  }

 private:
  /// Phase (a): the exclusive pair e = (e_A, e_L) of virtual rank v (local index u) over its
  /// node's earlier ranks: e_L into `out` (untouched for u = 0: e is empty), e_A into `eA` when
  /// `keep_eA` (u > 0). `init` (v = 0 only, or null) is folded into v's summary before it is sent.
  template <class Backend, class Comm, class Real, class Stream>
  static Status node_scan(Comm& comm, StateDims d, const float* XA, const float* XL, float* out, const float* init,
                          float* tmp, float* x, const float* zeros, float* eA, bool keep_eA, int v, int u, int g,
                          const Real& real, Stream s) {
    const index_t bh = d.bh, de = d.de;
    const std::size_t S = d.summary();
    const float* xA = x;
    const float* xL = x + bh;
    // The summary this rank sends first: X, or [A_0 | A_0 S_init + L_0] in tmp.
    const bool folded = init != nullptr && u < g - 1;
    if (folded) {
      LASP_RETURN_IF_ERROR(Backend::copy(tmp, XA, std::size_t(bh), s));
      LASP_RETURN_IF_ERROR(Backend::combine(tmp + bh, XA, init, XL, bh, de, s));
    }
    if constexpr (std::is_same_v<Inner, LogScan>) {
      // Kogge-Stone inside the node: y (tmp) covers (u - 2 dist, u] after the round at dist.
      float* yA = tmp;
      float* yL = tmp + bh;
      if (!folded && u < g - 1) {  // the leader never sends y
        LASP_RETURN_IF_ERROR(Backend::copy(yA, XA, std::size_t(bh), s));
        LASP_RETURN_IF_ERROR(Backend::copy(yL, XL, d.state(), s));
      }
      for (int dist = 1; dist < g; dist *= 2) {
        const bool sends = u + dist < g, receives = u - dist >= 0;
        if (!sends && !receives) continue;
        LASP_RETURN_IF_ERROR(
            shift(comm, tmp, sends ? real(v + dist) : -1, x, receives ? real(v - dist) : -1, S, s));
        if (!receives) continue;
        LASP_RETURN_IF_ERROR(fold<Backend>(d, xA, xL, out, eA, zeros, dist == 1, keep_eA || u - 2 * dist >= 0, s));
        if (u + 2 * dist < g) {  // y <- x (+) y, only if y is sent again
          LASP_RETURN_IF_ERROR(Backend::combine(yL, yA, xL, yL, bh, de, s));
          LASP_RETURN_IF_ERROR(Backend::combine(yA, xA, yA, zeros, bh, 1, s));
        }
      }
    } else {
      // Direct: the round at distance k sends this rank's summary to u + k and receives u - k's.
      const float* mine = folded ? tmp : XA;
      for (int k = 1; k < g; ++k) {
        const bool sends = u + k < g, receives = u - k >= 0;
        if (!sends && !receives) continue;
        LASP_RETURN_IF_ERROR(shift(comm, mine, sends ? real(v + k) : -1, x, receives ? real(v - k) : -1, S, s));
        if (!receives) continue;
        LASP_RETURN_IF_ERROR(fold<Backend>(d, xA, xL, out, eA, zeros, k == 1, keep_eA || u - k - 1 >= 0, s));
      }
    }
    return Status::kSuccess;
  }

  /// e <- x (+) e (x covers ranks before e's): e_L = e_A x_L + e_L, e_A = x_A e_A; e is empty
  /// before the `first` fold. e_A is updated only when used again (`keep`).
  template <class Backend, class Stream>
  static Status fold(StateDims d, const float* xA, const float* xL, float* eL, float* eA, const float* zeros,
                     bool first, bool keep, Stream s) {
    if (first) {
      LASP_RETURN_IF_ERROR(Backend::copy(eL, xL, d.state(), s));
      if (keep) LASP_RETURN_IF_ERROR(Backend::copy(eA, xA, std::size_t(d.bh), s));
    } else {
      LASP_RETURN_IF_ERROR(Backend::combine(eL, eA, xL, eL, d.bh, d.de, s));
      if (keep) LASP_RETURN_IF_ERROR(Backend::combine(eA, xA, eA, zeros, d.bh, 1, s));
    }
    return Status::kSuccess;
  }
};

template <class I, class O>
struct uses_nodes<Hierarchical<I, O>> : std::true_type {};

}  // namespace schedule
LASP_NAMESPACE_END
