#pragma once
// schedule::LogScan: a log-depth (Kogge-Stone) exclusive scan of the rank summaries across the SP
// group (math.md section 3.4). ceil(log2 R) rounds of neighbour exchanges at distances 1, 2, 4, ...
// with one grouped sendrecv per rank per round, instead of R-1 dependent hops (Chain) or R
// summaries gathered on every rank (AllGather).
//
// Why Kogge-Stone and not Brent-Kung: a 1 MiB state hop over NVLink costs ~17 us of latency and
// ~3 us of bandwidth (bench/RESULTS.md), so the depth decides. Kogge-Stone has ceil(log2 R)
// rounds; Brent-Kung about 2 log2 R - 1 for half the total messages. In both every rank sends
// and receives at most one state per round, so the per-link load of a round is the same; Brent-Kung
// only saves messages that would have run in parallel anyway.
//
// Why exclusive directly, not inclusive + one shift: every rank keeps two running pairs, fed by
// the same message of each round:
//   y_v  (inclusive) covers ranks (v - 2d, v]   after the round at distance d; it is what v sends;
//   e_v  (exclusive) covers ranks (v - 2d, v-1] after the round at distance d.
// In the round at distance d, v receives y_{v-d}, covering (v - 2d, v - d], and sets
//   y_v <- y_{v-d} (+) y_v,   e_v <- y_{v-d} (+) e_v      ((+) of math.md: earlier on the left)
// so after the last round (2d >= R) e_v covers [0, v-1]: the exclusive prefix with no extra round.
// The price is one more D x E combine per received message (~1-2 us on a GPU for 1 MiB, against a
// hop of ~17 us). Ranks skip the combines whose results are never used again.
//
// S_init is folded into rank 0's summary first (L'_0 = A_0 S_init + L_0, as AllGather does), so
// e_v's L part is P_v. Backward runs the same scan over reversed ranks (virtual rank v = R-1-r) on
// [A | M] with dS_final folded into the last rank's M.
//
// Scratch (offsets in units of one summary, S = bh*(1+de) floats; the driver gives tmp = 1 summary
// and, since kGathers, gathered = R summaries; R = 1 touches none of it):
//   tmp[0, S)                         y = [y_A (bh) | y_L (bh*de)]   running inclusive pair (sent)
//   gathered[0, S)                    x = [x_A (bh) | x_L (bh*de)]   the pair received this round
//   gathered[S, S + bh)               e_A (bh)                       A of the exclusive pair
//   gathered[S + bh, S + 2 bh)        zeros (bh)                     L = 0 for products of A's
// That is at most 2 summaries of `gathered` (2 bh <= S since de >= 1), so R = 2 fits. e's L part is
// the output state itself (P forward, G backward).
//
// Messages per rank and pass: exactly #{d in {1,2,4,..} : d < R, v + d < R} sends and
// #{d : d < R, v - d >= 0} receives, at most ceil(log2 R) each, in at most ceil(log2 R) grouped
// calls (tests/cpu/logscan_test.cpp counts them).
#include "all_gather.hpp"
#include "common.hpp"

LASP_NAMESPACE_BEGIN
namespace schedule {

/// Log-depth (Kogge-Stone) exclusive scan over ranks: ceil(log2 R) rounds of one neighbour
/// exchange each (distances 1, 2, 4, ...), any R >= 1. Uses two summaries of the gathered
/// scratch (kGathers reserves R of them).
struct LogScan : ScanSchedule<LogScan> {
  static constexpr const char* kName = "log-scan";
  static constexpr bool kOverlapBackward = false;
  static constexpr bool kGathers = true;  // scratch: 2 summaries of `gathered` (R >= 2)
  static constexpr bool kNeighbourChain = false;  // rounds at distances 1, 2, 4, ...

  /// Exclusive scan over virtual ranks v (v = r forward, v = R-1-r when `reverse`) of X = [A | L]:
  /// out = state entering v (`init` on v = 0), fin (v = R-1, if non-null) = A_v out + L_v.
  template <class Backend, class Comm, class Stream>
  static Status scan(Comm& comm, StateDims d, const float* X, float* out, const float* init, float* fin, float* tmp,
                     float* gathered, bool reverse, Stream s) {
    const int R = comm.size();
    const int v = reverse ? R - 1 - comm.rank() : comm.rank();
    auto real = [&](int u) { return reverse ? R - 1 - u : u; };
    const index_t bh = d.bh, de = d.de;
    const float* XA = X;
    const float* XL = X + bh;
    if (R > 1) {
      float* yA = tmp;
      float* yL = tmp + bh;
      float* xA = gathered;
      float* xL = gathered + bh;
      float* eA = gathered + d.summary();
      float* zeros = eA + bh;
      LASP_RETURN_IF_ERROR(Backend::zero(zeros, std::size_t(bh), s));
      if (v < R - 1) {  // the last virtual rank never sends y
        LASP_RETURN_IF_ERROR(Backend::copy(yA, XA, std::size_t(bh), s));
        if (v == 0 && init) {
          LASP_RETURN_IF_ERROR(Backend::combine(yL, XA, init, XL, bh, de, s));  // L'_0 = A_0 S_init + L_0
        } else {
          LASP_RETURN_IF_ERROR(Backend::copy(yL, XL, d.state(), s));
        }
      }
      for (int dist = 1; dist < R; dist *= 2) {
        const bool sends = v + dist < R, receives = v - dist >= 0;
        if (!sends && !receives) continue;
        LASP_RETURN_IF_ERROR(
            shift(comm, tmp, sends ? real(v + dist) : -1, gathered, receives ? real(v - dist) : -1, d.summary(), s));
        if (!receives) continue;
        // e <- x (+) e: e_L = e_A x_L + e_L, e_A = x_A e_A (e is empty before the first round).
        const bool e_again = v - 2 * dist >= 0;  // a later round receives into e again
        if (dist == 1) {
          LASP_RETURN_IF_ERROR(Backend::copy(out, xL, d.state(), s));
          if (e_again) LASP_RETURN_IF_ERROR(Backend::copy(eA, xA, std::size_t(bh), s));
        } else {
          LASP_RETURN_IF_ERROR(Backend::combine(out, eA, xL, out, bh, de, s));
          if (e_again) LASP_RETURN_IF_ERROR(Backend::combine(eA, xA, eA, zeros, bh, 1, s));
        }
        // y <- x (+) y, only if y is sent again (in the round at distance 2*dist).
        if (v + 2 * dist < R) {
          LASP_RETURN_IF_ERROR(Backend::combine(yL, yA, xL, yL, bh, de, s));
          LASP_RETURN_IF_ERROR(Backend::combine(yA, xA, yA, zeros, bh, 1, s));
        }
      }
    }
    return ScanSchedule::template scan_ends<Backend>(d, v, R, X, out, init, fin, s);
  }


  /// Gates' reverse sum of B*H scalars: one all-gather, as Chain does.
  template <class Backend, class Comm, class Stream>
  static Status suffix_sum(Comm& comm, index_t bh, const float* total, float* suffix, float* tmp, float* gathered,
                           Stream s) {
    return AllGather::suffix_sum<Backend>(comm, bh, total, suffix, tmp, gathered, s);
  }
};

}  // namespace schedule
LASP_NAMESPACE_END
