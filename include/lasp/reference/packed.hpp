#pragma once
// Packed documents and the zigzag layout in the oracle (math.md 3.5, 3.6): each document of a
// packed sequence run alone through the quadratic form of naive.hpp, and where row n of rank r
// sits in the global sequence under each lasp::Sharding. Written from the definitions in
// args.hpp only (no code shared with driver/packed.hpp or a backend), so that the tests and the
// demo check the library against it.
//
//   std::vector<lasp::index_t> cu = {0, 700, 701, 4096};         // 3 documents, T = 4096, B = 1
//   lasp::reference::Documents out;
//   lasp::reference::documents(p, cu, q, k, v, log_decay, init, dout, d_final, true, out);
//   // out.o ... (1, T, H, X) like naive.hpp; out.final_states, out.d_initial_states (docs, H, D, E)
#include <algorithm>
#include <cstddef>
#include <vector>
#include "../args.hpp"
#include "naive.hpp"

LASP_NAMESPACE_BEGIN
namespace reference {

/// The global position of local row n of rank r (0 <= n < rank_N[r]) when the ranks hold
/// rank_N tokens each, laid out as `sh` says (args.hpp): contiguous, rank r holds
/// [N_0 + ... + N_{r-1}, + N_r); zigzag, its first N_r / 2 rows are virtual segment r and its
/// last N_r / 2 rows segment 2R-1-r, segments in global order 0, 1, ..., 2R-1.
inline index_t position(Sharding sh, const std::vector<index_t>& rank_N, int r, index_t n) {
  const int R = int(rank_N.size());
  if (sh != Sharding::kZigzag) {
    index_t t0 = 0;
    for (int j = 0; j < r; ++j) t0 += rank_N[std::size_t(j)];
    return t0 + n;
  }
  const index_t half = rank_N[std::size_t(r)] / 2;
  index_t front = 0, back = 0;  // where segments r and 2R-1-r start
  for (int j = 0; j < r; ++j) front += rank_N[std::size_t(j)] / 2;
  for (int j = 0; j < R; ++j) back += rank_N[std::size_t(j)] / 2;       // segments 0..R-1
  for (int j = R - 1; j > r; --j) back += rank_N[std::size_t(j)] / 2;   // segments R..2R-2-r
  return n < half ? front + n : back + (n - half);
}

/// What documents() computes: o, dq, dk, dv, dlog in naive.hpp's layouts with B = 1, and the
/// per-document states (docs, H, D, E).
struct Documents {
  Vec o, dq, dk, dv, dlog, final_states, d_initial_states;
};

/// Runs each document [offsets[i], offsets[i+1]) of the B = 1 sequence of `p` (p.T tokens) alone
/// through forward() and backward() (and dlog_pairs() for dlog when `want_dlog`): the state
/// starts at the document's initial state and nothing crosses a document boundary.
///   offsets   docs + 1 non-decreasing positions, 0 first, p.T last (empty documents allowed)
///   init      per-document initial states (H, D, E) (empty vector or empty entry: zero)
///   d_final   per-document gradients of the final states (likewise)
/// An empty document's final state is its initial state and its initial-state gradient is its
/// final-state gradient.
inline void documents(const Problem& p, const std::vector<index_t>& offsets, const Vec& q, const Vec& k, const Vec& v,
                      const Vec& log_decay, const std::vector<Vec>& init, const Vec& dout,
                      const std::vector<Vec>& d_final, bool want_dlog, Documents& out) {
  const index_t H = p.H, D = p.D, E = p.E, st = H * D * E;
  const index_t docs = offsets.empty() ? 0 : index_t(offsets.size()) - 1;
  out.o.assign(std::size_t(p.T * H * E), 0.0);
  out.dv = out.o;
  out.dq.assign(std::size_t(p.T * H * D), 0.0);
  out.dk = out.dq;
  out.dlog.assign(std::size_t(p.T * H), 0.0);
  out.final_states.assign(std::size_t(docs * st), 0.0);
  out.d_initial_states = out.final_states;
  auto entry = [](const std::vector<Vec>& list, index_t i) -> const Vec& {
    static const Vec none;
    return std::size_t(i) < list.size() ? list[std::size_t(i)] : none;
  };
  for (index_t i = 0; i < docs; ++i) {
    const index_t t0 = offsets[std::size_t(i)], L = offsets[std::size_t(i + 1)] - t0;
    const Vec& S0 = entry(init, i);
    const Vec& dF = entry(d_final, i);
    double* fin = out.final_states.data() + i * st;
    double* dinit = out.d_initial_states.data() + i * st;
    if (L <= 0) {
      for (index_t x = 0; x < st; ++x) {
        fin[x] = S0.empty() ? 0.0 : S0[std::size_t(x)];
        dinit[x] = dF.empty() ? 0.0 : dF[std::size_t(x)];
      }
      continue;
    }
    const Problem dp{1, L, H, D, E, p.scale};
    auto cut = [&](const Vec& a, index_t X) {  // tokens [t0, t0 + L) of a (1, T, H, X) array
      return Vec(a.begin() + std::ptrdiff_t(t0 * H * X), a.begin() + std::ptrdiff_t((t0 + L) * H * X));
    };
    const Vec dq_ = cut(q, D), dk_ = cut(k, D), dv_ = cut(v, E), ddo = cut(dout, E), dld = cut(log_decay, 1);
    Vec o, f, gq, gk, gv, gl, gi;
    forward(dp, dq_, dk_, dv_, dld, S0, o, f);
    backward(dp, dq_, dk_, dv_, dld, S0, ddo, dF, gq, gk, gv, gl, gi);
    if (want_dlog) dlog_pairs(dp, dq_, dk_, dv_, dld, S0, ddo, dF, gl);  // cancellation-free form
    auto put = [&](const Vec& src, Vec& dst, index_t X) {
      std::copy(src.begin(), src.end(), dst.begin() + std::ptrdiff_t(t0 * H * X));
    };
    put(o, out.o, E), put(gq, out.dq, D), put(gk, out.dk, D), put(gv, out.dv, E);
    if (want_dlog) put(gl, out.dlog, 1);
    std::copy(f.begin(), f.end(), fin);
    std::copy(gi.begin(), gi.end(), dinit);
  }
}

}  // namespace reference
LASP_NAMESPACE_END
