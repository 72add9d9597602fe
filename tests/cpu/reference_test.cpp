// The double-precision reference (lasp/reference/naive.hpp) checked on its own: forward against
// the token-by-token recurrence of math.md section 1, backward against central finite differences.
#include "support.hpp"

using namespace lasp_test;
namespace ref = lasp::reference;

namespace {

struct RefData {
  ref::Problem p;
  ref::Vec q, k, v, ld, init, dout, dfin;
};

RefData make_ref_data(index_t B, index_t T, index_t H, index_t D, index_t E, double scale, bool with_states,
                      std::uint32_t seed) {
  RefData r;
  r.p = {B, T, H, D, E, scale};
  Rng rng(seed);
  auto fill = [&](ref::Vec& v, std::size_t n) {
    v.resize(n);
    for (auto& x : v) x = rng.normal();
  };
  fill(r.q, std::size_t(B * T * H * D));
  fill(r.k, std::size_t(B * T * H * D));
  fill(r.v, std::size_t(B * T * H * E));
  fill(r.dout, std::size_t(B * T * H * E));
  r.ld.resize(std::size_t(B * T * H));
  for (auto& x : r.ld) x = rng.uniform(-0.6f, -0.05f);
  if (with_states) {
    fill(r.init, std::size_t(B * H * D * E));
    fill(r.dfin, std::size_t(B * H * D * E));
  }
  return r;
}

double loss(const RefData& d, const ref::Vec& q, const ref::Vec& k, const ref::Vec& v, const ref::Vec& ld,
            const ref::Vec& init) {
  ref::Vec o, fin;
  ref::forward(d.p, q, k, v, ld, init, o, fin);
  double l = 0;
  for (std::size_t i = 0; i < o.size(); ++i) l += d.dout[i] * o[i];
  for (std::size_t i = 0; i < d.dfin.size(); ++i) l += d.dfin[i] * fin[i];
  return l;
}

}  // namespace

TEST_CASE("reference: forward equals the token-by-token recurrence S_t = a_t S_{t-1} + k_t v_t^T") {
  for (bool with_states : {false, true}) {
    CAPTURE(with_states);
    const RefData d = make_ref_data(2, 19, 3, 5, 4, 0.7, with_states, 11);
    const auto& p = d.p;
    ref::Vec o, fin;
    ref::forward(p, d.q, d.k, d.v, d.ld, d.init, o, fin);
    ref::Vec o_rec(o.size()), fin_rec(fin.size());
    for (index_t b = 0; b < p.B; ++b)
      for (index_t h = 0; h < p.H; ++h) {
        std::vector<double> S(std::size_t(p.D * p.E), 0.0);
        if (with_states)
          for (index_t x = 0; x < p.D * p.E; ++x) S[std::size_t(x)] = d.init[std::size_t((b * p.H + h) * p.D * p.E + x)];
        for (index_t t = 0; t < p.T; ++t) {
          const double a = std::exp(d.ld[std::size_t((b * p.T + t) * p.H + h)]);
          const double* kt = &d.k[std::size_t(((b * p.T + t) * p.H + h) * p.D)];
          const double* qt = &d.q[std::size_t(((b * p.T + t) * p.H + h) * p.D)];
          const double* vt = &d.v[std::size_t(((b * p.T + t) * p.H + h) * p.E)];
          for (index_t i = 0; i < p.D; ++i)
            for (index_t j = 0; j < p.E; ++j) S[std::size_t(i * p.E + j)] = a * S[std::size_t(i * p.E + j)] + kt[i] * vt[j];
          for (index_t j = 0; j < p.E; ++j) {
            double acc = 0;
            for (index_t i = 0; i < p.D; ++i) acc += S[std::size_t(i * p.E + j)] * qt[i];
            o_rec[std::size_t(((b * p.T + t) * p.H + h) * p.E + j)] = p.scale * acc;
          }
        }
        for (index_t x = 0; x < p.D * p.E; ++x) fin_rec[std::size_t((b * p.H + h) * p.D * p.E + x)] = S[std::size_t(x)];
      }
    CHECK(rel_err(o, o_rec) <= 1e-13);
    CHECK(rel_err(fin, fin_rec) <= 1e-13);
  }
}

TEST_CASE("reference: backward equals double-precision central finite differences") {
  // L = <dout, o> + <dS_final, S_final>. L is linear in each of q, k, v and S_init separately, so
  // central differences are exact there up to roundoff (step 1e-3); in the log-decays the error is
  // O(h^2) (step 1e-5). Every coordinate is checked.
  for (bool with_states : {false, true}) {
    CAPTURE(with_states);
    RefData d = make_ref_data(2, 9, 2, 3, 4, 1.3, with_states, 5);
    ref::Vec dq, dk, dv, dld, dinit;
    ref::backward(d.p, d.q, d.k, d.v, d.ld, d.init, d.dout, d.dfin, dq, dk, dv, dld, dinit);
    auto fd = [&](ref::Vec& x, double h) {
      ref::Vec g(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss(d, d.q, d.k, d.v, d.ld, d.init);
        x[i] = x0 - h;
        const double lm = loss(d, d.q, d.k, d.v, d.ld, d.init);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
      }
      return g;
    };
    CHECK(rel_err(dq, fd(d.q, 1e-3)) <= 1e-9);
    CHECK(rel_err(dk, fd(d.k, 1e-3)) <= 1e-9);
    CHECK(rel_err(dv, fd(d.v, 1e-3)) <= 1e-9);
    CHECK(rel_err(dld, fd(d.ld, 1e-5)) <= 1e-8);
    if (with_states) {
      CHECK(rel_err(dinit, fd(d.init, 1e-3)) <= 1e-9);
    } else {
      // Without S_init the reference still gives dL/dS_init (the state is an input at zero).
      ref::Vec zero(std::size_t(d.p.B * d.p.H * d.p.D * d.p.E), 0.0);
      d.init = zero;
      CHECK(rel_err(dinit, fd(d.init, 1e-3)) <= 1e-9);
    }
  }
}
