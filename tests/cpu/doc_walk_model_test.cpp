// An executable model of the CUDA backend's packed-document design (docs/packed-cuda.md 2) in
// double precision: the five chunk kernels as walks over kernel::DocCursor with the same hooks
// (reset to the initial state before a document's first chunk, final state after its last;
// reverse walks start a document's last chunk from d_final_states, BwdSummary restarts M after a
// document's first chunk, BwdDkDv writes d_initial_states there), segment summaries with A = 0
// at a reset, and the forward / reverse folds over segments; chunk bodies token by token. Checked
// against reference::documents (each document alone), so a wrong hook or fold rule fails here
// before any GPU time is spent. With per-token gates it also models the dg pipeline proposed in
// docs/packed-cuda.md 4 (q.dq plus <dF, S_end> at document ends, a reverse cumulative sum whose
// carry stops at document starts, a segment fix-up that stops at the first later segment holding
// a start).
// The model also splits the sequence into virtual segments (the ranks, or the two halves of a
// zigzag rank: vb), each with its own segments, forward and reverse folds and a scan across them
// (P_v, G_v); dg is then completed on each virtual segment alone by the rule the CUDA backend uses
// for packed / zigzag calls (docs/packed-cuda.md 3 and 4): the rows of its last document get
// <S_end_v, G_v> = <A_v P_v + L_v, G_v>, the gradient of the gate of the token after it, which is
// the dc of everything after the virtual segment in that document plus the final-state term, so no
// suffix sum across ranks is needed.
#include <doctest/doctest.h>
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>
#include <lasp/kernel/doc_chunks.hpp>
#include <lasp/reference/packed.hpp>

namespace {

using lasp::index_t;
using lasp::kernel::DocChunk;
using lasp::kernel::DocCursor;
using lasp::kernel::DocOffsets;
namespace ref = lasp::reference;
using Vec = std::vector<double>;

constexpr int C = 8;

struct Model {
  index_t T, D, E, nseg, seg_len;
  std::vector<index_t> vb;  // virtual segment bounds (0, ..., T; empty: {0, T}); segments of seg_len from each
  double scale;  // output scale
  Vec lg;        // per-token log decay g_t <= 0 (per-head decay: the same value everywhere)
  Vec q, k, v, dout;                  // (T, D) / (T, E), one head
  std::vector<std::int64_t> off;      // document offsets
  std::vector<Vec> init, dfinal;      // per document (empty: zero)
  // outputs
  Vec o, dq, dk, dv, dg;
  std::vector<Vec> fin, dinit;

  DocOffsets docs() const { return DocOffsets{off.data(), 64, index_t(off.size()) - 1}; }
  index_t ndocs() const { return index_t(off.size()) - 1; }
  std::vector<index_t> sb, sv;  // segment bounds and each segment's virtual segment (split())
  void split() {
    if (vb.empty()) vb = {0, T};
    sb.clear(), sv.clear();
    for (std::size_t v = 0; v + 1 < vb.size(); ++v)
      for (index_t b = vb[v]; b < vb[v + 1]; b += seg_len) sb.push_back(b), sv.push_back(index_t(v));
    sb.push_back(T);
    nseg = index_t(sv.size());
  }
  index_t seg_begin(index_t g) const { return sb[std::size_t(g)]; }
  index_t seg_end(index_t g) const { return std::min(sb[std::size_t(g) + 1], vb[std::size_t(sv[std::size_t(g)]) + 1]); }
  index_t nvirt() const { return index_t(vb.size()) - 1; }
  Vec state_of(const std::vector<Vec>& list, index_t d) const {
    return list[std::size_t(d)].empty() ? Vec(std::size_t(D * E), 0.0) : list[std::size_t(d)];
  }
  template <bool Reverse>
  DocCursor<C, Reverse> cursor(index_t g) const {
    const index_t b = seg_begin(g), e = seg_end(g);
    return DocCursor<C, Reverse>(docs(), 0, b, e, docs().doc_at(Reverse ? e - 1 : b));
  }
  // S <- a S + k_t v_t^T
  void step_state(Vec& S, index_t t) const {
    const double a = std::exp(lg[std::size_t(t)]);
    for (index_t d = 0; d < D; ++d)
      for (index_t e = 0; e < E; ++e)
        S[std::size_t(d * E + e)] = a * S[std::size_t(d * E + e)] + k[std::size_t(t * D + d)] * v[std::size_t(t * E + e)];
  }
  // M <- a_t (M + scale q_t do_t^T): from the gradient of S_t (tokens after t) to that of S_{t-1}
  // (token t's output reads S_t, which holds S_{t-1} times a_t). The kernels' chunk form, exp(G) M
  // + scale sum_i exp(g_i) q_i do_i^T with g_i the in-chunk cumulative log decay, is this applied
  // token by token.
  void step_grad(Vec& M, index_t t) const {
    const double a = std::exp(lg[std::size_t(t)]);
    for (index_t d = 0; d < D; ++d)
      for (index_t e = 0; e < E; ++e)
        M[std::size_t(d * E + e)] = a * (M[std::size_t(d * E + e)] + scale * q[std::size_t(t * D + d)] * dout[std::size_t(t * E + e)]);
  }

  void run() {
    split();
    const index_t de = D * E;
    o.assign(std::size_t(T * E), 0.0), dv = o;
    dq.assign(std::size_t(T * D), 0.0), dk = dq;
    fin.assign(std::size_t(ndocs()), Vec(std::size_t(de), std::nan(""))), dinit = fin;
    dg.assign(std::size_t(T), std::nan(""));
    Vec qdq(static_cast<std::size_t>(T), 0.0);
    std::vector<double> lead(static_cast<std::size_t>(nseg), 0.0);  // DkDv: dc of a segment's rows before its first document start
    std::vector<bool> has_start(static_cast<std::size_t>(nseg), false);
    // FwdSummary: (A, L) per segment.
    std::vector<double> A(static_cast<std::size_t>(nseg));
    std::vector<Vec> L(static_cast<std::size_t>(nseg));
    for (index_t g = 0; g < nseg; ++g) {
      Vec S(std::size_t(de), 0.0);
      double total = 0;
      auto cur = cursor<false>(g);
      while (cur.more()) {
        const DocChunk c = cur.next();
        if (c.starts) S = state_of(init, c.doc), total = -INFINITY;  // before
        for (index_t t = c.n0; t < c.n0 + c.len; ++t) step_state(S, t), total += lg[std::size_t(t)];
      }
      A[std::size_t(g)] = std::exp(total), L[std::size_t(g)] = S;
    }
    // Forward fold per virtual segment v: X_g, the state entering segment g from a zero state at
    // v's start, Apre_g, and v's summary (A_v, L_v); then the scan: P_v, the state entering v.
    const index_t V = nvirt();
    std::vector<Vec> X(std::size_t(nseg), Vec(std::size_t(de), 0.0)), Lv(std::size_t(V), Vec(std::size_t(de), 0.0));
    std::vector<double> Apre(std::size_t(nseg), 1.0), Av(std::size_t(V), 1.0);
    for (index_t g = 0; g < nseg; ++g) {
      const std::size_t v = std::size_t(sv[std::size_t(g)]);
      X[std::size_t(g)] = Lv[v], Apre[std::size_t(g)] = Av[v];
      for (index_t x = 0; x < de; ++x) Lv[v][std::size_t(x)] = A[std::size_t(g)] * Lv[v][std::size_t(x)] + L[std::size_t(g)][std::size_t(x)];
      Av[v] *= A[std::size_t(g)];
    }
    std::vector<Vec> P(std::size_t(V), Vec(std::size_t(de), 0.0));
    for (index_t v = 1; v < V; ++v)
      for (index_t x = 0; x < de; ++x)
        P[std::size_t(v)][std::size_t(x)] = Av[std::size_t(v - 1)] * P[std::size_t(v - 1)][std::size_t(x)] + Lv[std::size_t(v - 1)][std::size_t(x)];
    // FwdOutput and BwdDq: forward walks from Apre_g P_v + X_g.
    for (index_t g = 0; g < nseg; ++g) {
      Vec S = X[std::size_t(g)];
      for (index_t x = 0; x < de; ++x) S[std::size_t(x)] += Apre[std::size_t(g)] * P[std::size_t(sv[std::size_t(g)])][std::size_t(x)];
      auto cur = cursor<false>(g);
      while (cur.more()) {
        const DocChunk c = cur.next();
        if (c.starts) S = state_of(init, c.doc);
        for (index_t t = c.n0; t < c.n0 + c.len; ++t) {
          step_state(S, t);
          for (index_t e = 0; e < E; ++e) {
            double acc = 0;
            for (index_t d = 0; d < D; ++d) acc += q[std::size_t(t * D + d)] * S[std::size_t(d * E + e)];
            o[std::size_t(t * E + e)] = scale * acc;
          }
          double qd = 0;
          for (index_t d = 0; d < D; ++d) {
            double acc = 0;
            for (index_t e = 0; e < E; ++e) acc += S[std::size_t(d * E + e)] * dout[std::size_t(t * E + e)];
            dq[std::size_t(t * D + d)] = scale * acc;
            qd += q[std::size_t(t * D + d)] * scale * acc;
          }
          qdq[std::size_t(t)] = qd;
        }
        if (c.ends) {  // after: FwdOutput's final state; BwdDq adds <dF, S_end> to the last token's q.dq
          fin[std::size_t(c.doc)] = S;
          const Vec dF = state_of(dfinal, c.doc);
          double dot = 0;
          for (std::size_t x = 0; x < S.size(); ++x) dot += dF[x] * S[x];
          qdq[std::size_t(c.n0 + c.len - 1)] += dot;
        }
      }
    }
    // BwdSummary: M per segment (reverse walks).
    std::vector<Vec> M(static_cast<std::size_t>(nseg));
    for (index_t g = 0; g < nseg; ++g) {
      Vec m(std::size_t(de), 0.0);
      auto cur = cursor<true>(g);
      while (cur.more()) {
        const DocChunk c = cur.next();
        if (c.ends) m = state_of(dfinal, c.doc);                       // before
        for (index_t t = c.n0 + c.len - 1; t >= c.n0; --t) step_grad(m, t);
        if (c.starts) m.assign(std::size_t(de), 0.0);                  // after
      }
      M[std::size_t(g)] = m;
    }
    // Reverse fold per virtual segment: Y_g, the gradient of the state leaving segment g from a
    // zero gradient at v's end, Apost_g, and v's (A_v, M_v); then the reverse scan: G_v, the
    // gradient of the state leaving v (zero after the last one: no whole-sequence final state).
    std::vector<Vec> Y(std::size_t(nseg), Vec(std::size_t(de), 0.0)), Mv(std::size_t(V), Vec(std::size_t(de), 0.0));
    std::vector<double> Apost(std::size_t(nseg), 1.0), Arev(std::size_t(V), 1.0);
    for (index_t g = nseg - 1; g >= 0; --g) {
      const std::size_t v = std::size_t(sv[std::size_t(g)]);
      Y[std::size_t(g)] = Mv[v], Apost[std::size_t(g)] = Arev[v];
      for (index_t x = 0; x < de; ++x) Mv[v][std::size_t(x)] = A[std::size_t(g)] * Mv[v][std::size_t(x)] + M[std::size_t(g)][std::size_t(x)];
      Arev[v] *= A[std::size_t(g)];
    }
    std::vector<Vec> Gv(std::size_t(V), Vec(std::size_t(de), 0.0));
    for (index_t v = V - 2; v >= 0; --v)
      for (index_t x = 0; x < de; ++x)
        Gv[std::size_t(v)][std::size_t(x)] = Av[std::size_t(v + 1)] * Gv[std::size_t(v + 1)][std::size_t(x)] + Mv[std::size_t(v + 1)][std::size_t(x)];
    // BwdDkDv: reverse walks from Apost_g G_v + Y_g.
    for (index_t g = 0; g < nseg; ++g) {
      Vec dS = Y[std::size_t(g)];
      for (index_t x = 0; x < de; ++x) dS[std::size_t(x)] += Apost[std::size_t(g)] * Gv[std::size_t(sv[std::size_t(g)])][std::size_t(x)];
      double carry = 0;  // dc summed over the later chunks of this segment's current document
      auto cur = cursor<true>(g);
      while (cur.more()) {
        const DocChunk c = cur.next();
        if (c.ends) dS = state_of(dfinal, c.doc);
        double run = carry;
        for (index_t t = c.n0 + c.len - 1; t >= c.n0; --t) {
          // dS is the gradient of S_t from the tokens after t; the total adds token t's output.
          Vec tot = dS;
          for (index_t d = 0; d < D; ++d)
            for (index_t e = 0; e < E; ++e) tot[std::size_t(d * E + e)] += scale * q[std::size_t(t * D + d)] * dout[std::size_t(t * E + e)];
          double kd = 0;
          for (index_t d = 0; d < D; ++d) {
            double acc = 0;
            for (index_t e = 0; e < E; ++e) acc += tot[std::size_t(d * E + e)] * v[std::size_t(t * E + e)];
            dk[std::size_t(t * D + d)] = acc;
            kd += k[std::size_t(t * D + d)] * acc;
          }
          run += qdq[std::size_t(t)] - kd;  // dc_t
          dg[std::size_t(t)] = run;
          for (index_t e = 0; e < E; ++e) {
            double acc = 0;
            for (index_t d = 0; d < D; ++d) acc += tot[std::size_t(d * E + e)] * k[std::size_t(t * D + d)];
            dv[std::size_t(t * E + e)] = acc;
          }
          for (std::size_t x = 0; x < tot.size(); ++x) dS[x] = std::exp(lg[std::size_t(t)]) * tot[x];  // to the state before t
        }
        carry = run;
        if (c.starts) {  // after: the document's initial-state gradient; earlier rows are another document
          dinit[std::size_t(c.doc)] = dS;
          carry = 0;
          has_start[std::size_t(g)] = true;
        }
      }
      lead[std::size_t(g)] = carry;
    }
    // GateSegmentFixup with documents: the rows of segment g's last document get the dc of that
    // document's rows in later segments of its virtual segment: their leads, up to and including
    // the first segment that holds a document start; when there is none, that document runs to the
    // end of the virtual segment v and also gets <S_end_v, G_v> (S_end_v = A_v P_v + L_v): all of
    // its dc after v plus its final-state term.
    std::vector<double> extra(std::size_t(V), 0.0);
    for (index_t v = 0; v < V; ++v)
      for (index_t x = 0; x < de; ++x)
        extra[std::size_t(v)] += (Av[std::size_t(v)] * P[std::size_t(v)][std::size_t(x)] + Lv[std::size_t(v)][std::size_t(x)]) *
                                 Gv[std::size_t(v)][std::size_t(x)];
    for (index_t g = 0; g < nseg; ++g) {
      double suffix = 0;
      bool open = true;
      for (index_t h = g + 1; h < nseg && sv[std::size_t(h)] == sv[std::size_t(g)]; ++h) {
        suffix += lead[std::size_t(h)];
        if (has_start[std::size_t(h)]) {
          open = false;
          break;
        }
      }
      if (open) suffix += extra[std::size_t(sv[std::size_t(g)])];
      const index_t b = seg_begin(g), e = seg_end(g);
      const index_t lo = off[std::size_t(docs().doc_at(e - 1))];
      for (index_t t = std::max(b, lo); t < e; ++t) dg[std::size_t(t)] += suffix;
    }
    // EmptyDocs.
    for (index_t d = 0; d < ndocs(); ++d)
      if (off[std::size_t(d)] == off[std::size_t(d + 1)]) fin[std::size_t(d)] = state_of(init, d), dinit[std::size_t(d)] = state_of(dfinal, d);
  }
};

double max_diff(const Vec& a, const Vec& b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

/// A model of documents `lens` (random q, k, v, dout, initial states and final-state gradients;
/// gates in [-0.6, 0] or -0.15 everywhere), run and checked against reference::documents.
void check_model(const std::vector<index_t>& lens, index_t seg_len, bool gates, const std::vector<index_t>& cuts,
                 std::mt19937& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  std::uniform_real_distribution<double> ud(-0.6, 0.0);
  Model m;
  m.D = 3, m.E = 2, m.scale = 0.5;
  m.off = {0};
  for (index_t l : lens) m.off.push_back(m.off.back() + l);
  m.T = m.off.back();
  m.lg.assign(std::size_t(m.T), -0.15);
  if (gates)
    for (double& x : m.lg) x = ud(rng);
  m.seg_len = seg_len;
  if (!cuts.empty()) {
    m.vb = {0};
    for (index_t c : cuts) m.vb.push_back(c);
    m.vb.push_back(m.T);
  }
  auto fill = [&](Vec& x, std::size_t n) { x.resize(n); for (double& y : x) y = nd(rng); };
  fill(m.q, std::size_t(m.T * m.D)), fill(m.k, std::size_t(m.T * m.D));
  fill(m.v, std::size_t(m.T * m.E)), fill(m.dout, std::size_t(m.T * m.E));
  const index_t docs = m.ndocs();
  m.init.resize(std::size_t(docs)), m.dfinal.resize(std::size_t(docs));
  for (index_t d = 0; d < docs; ++d) {
    if (d % 3 != 2) fill(m.init[std::size_t(d)], std::size_t(m.D * m.E));  // some start from zero
    fill(m.dfinal[std::size_t(d)], std::size_t(m.D * m.E));
  }
  m.run();
  const ref::Vec ld = m.lg;
  ref::Documents want;
  const std::vector<index_t> offsets(m.off.begin(), m.off.end());
  ref::documents(ref::Problem{1, m.T, 1, m.D, m.E, m.scale}, offsets, m.q, m.k, m.v, ld, m.init, m.dout, m.dfinal,
                 true, want);
  CAPTURE(gates);
  CAPTURE(m.T);
  CAPTURE(seg_len);
  CAPTURE(m.vb.size());
  CHECK(max_diff(m.dg, want.dlog) < 1e-8);
  CHECK(max_diff(m.o, want.o) < 1e-9);
  CHECK(max_diff(m.dq, want.dq) < 1e-9);
  CHECK(max_diff(m.dk, want.dk) < 1e-9);
  CHECK(max_diff(m.dv, want.dv) < 1e-9);
  Vec fin, dinit;
  for (index_t d = 0; d < docs; ++d) {
    fin.insert(fin.end(), m.fin[std::size_t(d)].begin(), m.fin[std::size_t(d)].end());
    dinit.insert(dinit.end(), m.dinit[std::size_t(d)].begin(), m.dinit[std::size_t(d)].end());
  }
  CHECK(max_diff(fin, want.final_states) < 1e-9);
  CHECK(max_diff(dinit, want.d_initial_states) < 1e-9);
}

const std::vector<std::vector<index_t>> kLayouts = {
    {1, 2, 7, 0, 8, 9, 40, 13, 0, 1, 30, 8},  // every kind of length, empty ones inside
    {96},                                     // one document
    {8, 8, 16, 0, 0, 24, 40},                 // on chunk and segment boundaries
    {0, 5, 50, 3, 0},                         // empty first and last
};

}  // namespace

TEST_CASE("packed documents, the CUDA design as a double-precision model: equal to each document alone") {
  std::mt19937 rng(5);
  for (bool gates : {false, true})
    for (const auto& lens : kLayouts)
      for (index_t seg_len : {8, 24, 1000}) check_model(lens, seg_len, gates, {}, rng);
}

// The virtual segments of packed / zigzag calls (ranks, zigzag halves) each complete their dg
// alone (<S_end_v, G_v> on their last document): cuts anywhere, on document, chunk and segment
// boundaries, one document over every virtual segment (a zigzag call without documents).
TEST_CASE("packed documents over virtual segments (ranks, zigzag halves): dg completed per virtual segment") {
  std::mt19937 rng(11);
  for (bool gates : {false, true})
    for (const auto& lens : kLayouts) {
      index_t T = 0;
      for (index_t l : lens) T += l;
      std::vector<std::vector<index_t>> cut_sets = {{T / 2}, {1, T - 1}, {8, 16, 24, 40}, {T / 3, T / 2, 2 * T / 3}};
      std::uniform_int_distribution<index_t> pos(1, T - 1);
      for (int i = 0; i < 3; ++i) {
        std::vector<index_t> c = {pos(rng), pos(rng), pos(rng)};
        std::sort(c.begin(), c.end());
        c.erase(std::unique(c.begin(), c.end()), c.end());
        cut_sets.push_back(c);
      }
      for (const auto& cuts : cut_sets)
        for (index_t seg_len : {8, 24, 1000}) check_model(lens, seg_len, gates, cuts, rng);
    }
}
