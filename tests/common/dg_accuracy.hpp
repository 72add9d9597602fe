#pragma once
// The yardstick for dg (per-token log-gate gradients) when |dg| is tiny, shared by the CPU and
// GPU suites. Plain C++17, no test framework. See docs/dg-accuracy.md.
//
// dg_m is a sum of pair terms W_sj over the pairs s >= m > j (reference::dlog_pairs). A method that
// never cancels pairs against each other computes it with an error bounded by a small multiple of
// the unit roundoff times the sum of the absolute values of the elementary products it adds,
//     Ybar_m = scale sum_{s >= m > j} exp(c_s - c_j) (|q_s| . |k_j|)(|do_s| . |v_j|)   (+ state terms),
// and Cauchy-Schwarz bounds that by a yardstick that factorises (so it costs O(T (D + E))):
//     Y_m = A_m B_m,  A_m = sum_{s >= m} a_s exp(c_s - c_{m-1}) + |dS_final|_F exp(c_{T-1} - c_{m-1}),
//                     B_m = sum_{j <  m} b_j exp(c_{m-1} - c_j) + |S_init|_F exp(c_{m-1}),
//     a_s = |scale| |q_s| |do_s|,  b_j = |k_j| |v_j|  (2-norms).
// Y_m >= Ybar_m >= |dg_m|, and Y_m is the same kind of quantity as dg_m (a sum over the same pairs),
// so |dg - ref| / Y stays meaningful when dg is 1e-11 and every dq.q is O(1). For random data
// Y_m is about 2.5x Ybar_m and 10-100x |dg_m|.
// A computation that cancels (the reverse sum of q.dq - k.dk) has no such bound: its error scales
// with sum_t |q_t.dq_t| + |k_t.dk_t| (the diagonal pairs W_tt of weight 1 included), which does not
// shrink with the decays.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#include <lasp/decay/decay.hpp>
#include <lasp/reference/naive.hpp>
#include "problem.hpp"

namespace lasp_test {

enum class GateRegime { kStrong, kWeak, kMixed };
inline const char* to_string(GateRegime g) {
  return g == GateRegime::kStrong ? "strong" : g == GateRegime::kWeak ? "weak" : "mixed";
}

constexpr float kStrongLo = -30.f, kStrongHi = -28.f;  // a_t = exp(g) ~ 1e-13 .. 7e-13
constexpr float kWeakLo = -0.05f, kWeakHi = 0.f;       // a_t ~ 0.95 .. 1

/// Log-gates of a regime. Mixed: weak gates, with strong ones in blocks of 16 tokens out of every
/// 48 (shifted by head), at the first, a middle (29) and the last token of every `chunk`-token chunk
/// of every rank (so at rank boundaries too).
template <class Elem>
void set_gates(GlobalProblem<Elem>& p, GateRegime regime, std::uint32_t seed, lasp::index_t chunk = 64) {
  Rng rng(seed);
  const ProblemSpec& s = p.spec;
  for (lasp::index_t b = 0; b < s.B; ++b)
    for (lasp::index_t t = 0; t < p.T; ++t)
      for (lasp::index_t h = 0; h < s.H; ++h) {
        const lasp::index_t tl = t % s.N, tc = tl % chunk;
        bool strong = regime == GateRegime::kStrong;
        if (regime == GateRegime::kMixed)
          strong = ((t + 5 * h) / 16) % 3 == 2 || tc == 0 || tc == 29 || tc == chunk - 1;
        p.gates[p.ref_g(b, t, h)] = strong ? rng.uniform(kStrongLo, kStrongHi) : rng.uniform(kWeakLo, kWeakHi);
      }
  p.pack();
}

/// dg without cancellation in double, on the values lasp reads: the state form
/// (reference::dlog_states, O(T D E)) or the pair form (reference::dlog_pairs, O(T^2 (D + E))).
template <class Elem>
std::vector<double> dg_reference(const GlobalProblem<Elem>& p, bool pairs = false) {
  namespace ref = lasp::reference;
  const ProblemSpec& s = p.spec;
  ref::Problem rp{s.B, p.T, s.H, s.D, s.E, double(s.scale)};
  auto d = [](const auto& v) { return ref::Vec(v.begin(), v.end()); };
  ref::Vec dlog;
  (pairs ? ref::dlog_pairs : ref::dlog_states)(rp, d(p.q), d(p.k), d(p.v), reference_log_decay<lasp::decay::Gate>(p),
                                               d(p.init), d(p.dout), d(p.dfinal), dlog);
  return dlog;
}

/// The yardstick Y_m above, (B,T,H) in the reference layout.
template <class Elem>
std::vector<double> dg_yardstick(const GlobalProblem<Elem>& p) {
  const ProblemSpec& s = p.spec;
  const lasp::index_t T = p.T, D = s.D, E = s.E, H = s.H;
  auto norm = [](const auto& x, std::size_t off, lasp::index_t n) {
    double a = 0;
    for (lasp::index_t i = 0; i < n; ++i) a += double(x[off + std::size_t(i)]) * double(x[off + std::size_t(i)]);
    return std::sqrt(a);
  };
  std::vector<double> Y(std::size_t(s.B * T * H));
  std::vector<double> A(std::size_t(T + 1));
  for (lasp::index_t b = 0; b < s.B; ++b)
    for (lasp::index_t h = 0; h < H; ++h) {
      const std::size_t st = std::size_t((b * H + h) * D * E);
      const double fin = p.dfinal.empty() ? 0.0 : norm(p.dfinal, st, D * E);
      const double ini = p.init.empty() ? 0.0 : norm(p.init, st, D * E);
      auto qk = [&](lasp::index_t t) { return std::size_t(((b * T + t) * H + h) * D); };
      auto vo = [&](lasp::index_t t) { return std::size_t(((b * T + t) * H + h) * E); };
      auto gate = [&](lasp::index_t t) { return double(p.gates[p.ref_g(b, t, h)]); };
      A[std::size_t(T)] = fin;  // A_m = exp(g_m) (a_m + A_{m+1})
      for (lasp::index_t m = T - 1; m >= 0; --m)
        A[std::size_t(m)] = std::exp(gate(m)) *
                            (std::fabs(double(s.scale)) * norm(p.q, qk(m), D) * norm(p.dout, vo(m), E) + A[std::size_t(m + 1)]);
      double B = ini;  // B_{m+1} = exp(g_m) B_m + b_m
      for (lasp::index_t m = 0; m < T; ++m) {
        Y[p.ref_g(b, m, h)] = A[std::size_t(m)] * B;
        B = std::exp(gate(m)) * B + norm(p.k, qk(m), D) * norm(p.v, vo(m), E);
      }
    }
  return Y;
}

/// max_m |dg_m - ref_m| / Y_m (NaN if dg holds a NaN). Y_m = 0 (the first token without an initial
/// state: no pair crosses it) requires dg_m = 0 exactly (else the ratio is infinite).
template <class A>
double dg_worst_ratio(const A& dg, const std::vector<double>& ref, const std::vector<double>& Y) {
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(double(dg[i]) - ref[i]);
    const double e = Y[i] > 0 ? d / Y[i] : (d == 0 || std::isnan(d) ? d : HUGE_VAL);
    if (std::isnan(e)) return e;
    worst = std::max(worst, e);
  }
  return worst;
}

}  // namespace lasp_test
