// The newcomer test of the decay interface: a scheme defined in the test (tests/common/
// tensor_slopes.hpp: per-head slopes read from a tensor, not validated on the host) runs
// through lasp unchanged and gives bit-for-bit the results of decay::PerHead with the same
// slopes, on one rank and over several ranks with every schedule.
#include <cstring>
#include "common/tensor_slopes.hpp"
#include "support.hpp"

using namespace lasp_test;

namespace {

template <class Schedule>
void same_as_per_head(int R, std::uint32_t seed) {
  ProblemSpec s;
  s.B = 2; s.N = 45; s.H = 3; s.D = 8; s.E = 12; s.R = R; s.seed = seed;
  s.initial_state = true; s.final_state = true;
  using Custom = lasp::Policy<TensorSlopes, Schedule, lasp::caching::Recompute, lasp::tile::Tile<16>>;
  using Head = lasp::Policy<lasp::decay::PerHead, Schedule, lasp::caching::Recompute, lasp::tile::Tile<16>>;
  GlobalProblem<float> a(s), b(s);
  REQUIRE(run_host<Head>(a).ok());
  const RunResult rb = run_host<Custom>(b);
  INFO("R=", R, " schedule=", Schedule::kName);
  REQUIRE(rb.ok());
  auto same = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0;
  };
  CHECK(same(a.o_buf, b.o_buf));
  CHECK(same(a.dq_buf, b.dq_buf));
  CHECK(same(a.dk_buf, b.dk_buf));
  CHECK(same(a.dv_buf, b.dv_buf));
  CHECK(same(a.final_buf, b.final_buf));
  CHECK(same(a.dinit_buf, b.dinit_buf));
  // And both agree with the double reference (the custom run is no stale copy of the first).
  const RefResult ref = run_reference<lasp::decay::PerHead>(b);
  CHECK(rel_err(b.o(), ref.o) <= kTolF32);
  CHECK(rel_err(b.dq(), ref.dq) <= kTolF32);
}

}  // namespace

TEST_CASE("a decay scheme defined outside lasp runs unchanged and matches decay::PerHead bit for bit") {
  for (int R : {1, 3}) {
    same_as_per_head<lasp::schedule::Chain>(R, 40u + unsigned(R));
    same_as_per_head<lasp::schedule::AllGather>(R, 50u + unsigned(R));
    same_as_per_head<lasp::schedule::Auto>(R, 60u + unsigned(R));
  }
}

TEST_CASE("a decay scheme defined outside lasp: its own checks give their status, nothing written") {
  using Custom = lasp::Policy<TensorSlopes>;
  ProblemSpec s;
  s.B = 1; s.N = 20; s.H = 2; s.D = 8; s.E = 8;
  GlobalProblem<float> p(s);
  p.slopes[1] = -0.5f;  // the host backend reads the values (check_values)
  const RunResult r = run_host<Custom>(p, RunOptions{false});
  CHECK(r.fwd[0] == lasp::Status::kInvalidDecay);
  CHECK(all_bytes(p.o_buf, kNaNByte));  // still the poison: nothing written
}
