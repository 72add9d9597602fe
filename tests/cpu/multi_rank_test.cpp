// R = 1..5 sequence-parallel ranks as threads (comm::HostGroup), both schedules: every rank's
// outputs equal the single-device reference on the whole sequence (math.md section 3).
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {
template <class Decay, class Schedule>
void ranks_1_to_5(std::uint32_t seed) {
  using P = P16<Decay, Schedule>;
  for (int R = 1; R <= 5; ++R) {
    CAPTURE(R);
    ProblemSpec s;
    s.B = 2, s.N = 23, s.H = 2, s.D = 8, s.E = 12, s.R = R, s.scale = 0.75f, s.seed = seed + std::uint32_t(R);
    GlobalProblem<float> p(s);
    run_and_check<P>(p);
  }
}
}  // namespace

TEST_CASE("R=1..5, Chain: decay::None on every rank equals the whole-sequence reference") {
  ranks_1_to_5<decay::None, schedule::Chain>(200);
}
TEST_CASE("R=1..5, Chain: decay::PerHead on every rank equals the whole-sequence reference") {
  ranks_1_to_5<decay::PerHead, schedule::Chain>(210);
}
TEST_CASE("R=1..5, Chain: decay::Gate on every rank equals the whole-sequence reference") {
  ranks_1_to_5<decay::Gate, schedule::Chain>(220);
}
TEST_CASE("R=1..5, AllGather: decay::None on every rank equals the whole-sequence reference") {
  ranks_1_to_5<decay::None, schedule::AllGather>(230);
}
TEST_CASE("R=1..5, AllGather: decay::PerHead on every rank equals the whole-sequence reference") {
  ranks_1_to_5<decay::PerHead, schedule::AllGather>(240);
}
TEST_CASE("R=1..5, AllGather: decay::Gate on every rank equals the whole-sequence reference") {
  ranks_1_to_5<decay::Gate, schedule::AllGather>(250);
}

TEST_CASE("Chain and AllGather agree, and caching::Cache equals caching::Recompute") {
  ProblemSpec s;
  s.B = 1, s.N = 40, s.H = 3, s.D = 8, s.E = 8, s.R = 4, s.seed = 260;
  GlobalProblem<float> chain(s), gather(s), cached(s);
  run_and_check<P16<decay::Gate>>(chain);
  run_and_check<P16<decay::Gate, schedule::AllGather>>(gather);
  run_and_check<Policy<decay::Gate, schedule::Chain, caching::Cache, tile::Tile<16>>>(cached);
  CHECK(rel_err(gather.o(), chain.o()) <= 1e-6);
  CHECK(rel_err(gather.dq(), chain.dq()) <= 1e-6);
  CHECK(rel_err(gather.dk(), chain.dk()) <= 1e-6);
  CHECK(rel_err(gather.dv(), chain.dv()) <= 1e-6);
  CHECK(rel_err(gather.dg(), chain.dg()) <= 1e-6);
  CHECK(rel_err(gather.final_state(), chain.final_state()) <= 1e-6);
  CHECK(rel_err(gather.d_initial_state(), chain.d_initial_state()) <= 1e-6);
  CHECK(rel_err(cached.o(), chain.o()) <= 1e-6);
  CHECK(rel_err(cached.dg(), chain.dg()) <= 1e-6);
}

TEST_CASE("many ranks with one token each (N=1, R=5) and head-major, B>1, H>1") {
  for (Layout layout : {Layout::kTokenMajor, Layout::kHeadMajor}) {
    CAPTURE(to_string(layout));
    ProblemSpec s;
    s.B = 3, s.N = 1, s.H = 2, s.D = 4, s.E = 8, s.R = 5, s.layout = layout, s.seed = 270;
    GlobalProblem<float> a(s), b(s);
    run_and_check<P16<decay::Gate>>(a);
    run_and_check<P16<decay::PerHead, schedule::AllGather>>(b);
  }
}
