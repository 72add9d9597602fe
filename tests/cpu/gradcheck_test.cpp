// Backward of the host backend against central finite differences of its own fp32 forward, over
// one and several ranks, for L = <dout, o> + <dS_final, S_final>.
//
// Steps: L is linear in each of q, k, v and S_init separately, so central differences are exact
// there for any step and only fp32 roundoff of the forward remains; a large step (0.5) makes it
// negligible (measured ~5e-7 relative). In the log-gates L is smooth but not polynomial: step 1e-2
// balances truncation (O(h^2)) and fp32 roundoff (O(u/h)); measured 2.5e-5..3.2e-5. The gates are drawn in
// [-0.5, -0.05] so that g +/- h stays <= 0.
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

constexpr double kStepLinear = 0.5, kStepGate = 1e-2;
constexpr double kTolLinear = 1e-5, kTolGate = 1e-4;

/// Finite-difference gradient of p.loss() with respect to the canonical input `x` (then packed),
/// at `count` coordinates spread over x; `analytic` holds the backward's gradient. Returns the
/// norm-wise relative error over those coordinates.
template <class Policy, class X>
double fd_error(GlobalProblem<float>& p, X& x, const std::vector<double>& analytic, double h, std::size_t count) {
  RunOptions fwd_only;
  fwd_only.backward = false;
  std::vector<double> fd, an;
  const std::size_t stride = std::max<std::size_t>(1, x.size() / count);
  for (std::size_t i = 0; i < x.size(); i += stride) {
    const float x0 = x[i];
    double l[2];
    for (int side = 0; side < 2; ++side) {
      x[i] = float(x0 + (side ? -h : h));
      p.pack();
      const RunResult rr = run_host<Policy>(p, fwd_only);
      REQUIRE(rr.ok());
      l[side] = p.loss();
    }
    x[i] = x0;
    fd.push_back((l[0] - l[1]) / (2 * h));
    an.push_back(analytic[i]);
  }
  p.pack();
  return rel_err(an, fd);
}

template <class Policy>
void gradcheck(ProblemSpec s) {
  using Decay = typename Policy::Decay;
  GlobalProblem<float> p(s);
  Rng rng(s.seed + 1000);
  rng.fill_uniform(p.gates, -0.5f, -0.05f);
  p.pack();
  REQUIRE(run_host<Policy>(p).ok());
  const auto dq = p.dq(), dk = p.dk(), dv = p.dv(), dinit = p.d_initial_state();
  const auto dg = p.dg();
  INFO(describe<Policy>(), " R=", s.R);
  CHECK(fd_error<Policy>(p, p.q, dq, kStepLinear, 40) <= kTolLinear);
  CHECK(fd_error<Policy>(p, p.k, dk, kStepLinear, 40) <= kTolLinear);
  CHECK(fd_error<Policy>(p, p.v, dv, kStepLinear, 40) <= kTolLinear);
  CHECK(fd_error<Policy>(p, p.init, dinit, kStepLinear, 40) <= kTolLinear);
  if constexpr (Decay::kHasGradient) CHECK(fd_error<Policy>(p, p.gates, dg, kStepGate, 48) <= kTolGate);
}

ProblemSpec fd_spec(int R, index_t N, std::uint32_t seed) {
  ProblemSpec s;
  s.B = 2, s.N = N, s.H = 2, s.D = 4, s.E = 8, s.R = R, s.scale = 0.8f, s.seed = seed;
  return s;
}

}  // namespace

TEST_CASE("finite differences: gates, one rank (dq, dk, dv, dg, d initial state)") {
  gradcheck<P16<decay::Gate>>(fd_spec(1, 37, 301));
}

TEST_CASE("finite differences: gates, 3 ranks, Chain (gradients cross rank boundaries)") {
  gradcheck<P16<decay::Gate>>(fd_spec(3, 13, 302));
}

TEST_CASE("finite differences: gates, 4 ranks, AllGather") {
  gradcheck<P16<decay::Gate, schedule::AllGather>>(fd_spec(4, 9, 303));
}

TEST_CASE("finite differences: per-head slopes and no decay, 2 ranks") {
  gradcheck<P16<decay::PerHead>>(fd_spec(2, 21, 304));
  gradcheck<P16<decay::None, schedule::AllGather>>(fd_spec(2, 21, 305));
}
