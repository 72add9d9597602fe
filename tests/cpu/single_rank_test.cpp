// The chunked host backend on one rank (comm::HostSingle) against the naive reference.
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {
template <class Decay, class Tile>
using P1 = Policy<Decay, schedule::Chain, caching::Recompute, Tile>;

ProblemSpec one_rank_spec(std::uint32_t seed) {
  ProblemSpec s;
  s.B = 2, s.N = 75, s.H = 3, s.D = 8, s.E = 12, s.R = 1, s.scale = 0.5f, s.seed = seed;
  return s;
}

/// Chunk 16 (several chunks and a tail of 11) and chunk 64 (one full chunk and a tail of 11).
template <class Decay>
void single_rank_case(std::uint32_t seed) {
  SUBCASE("Tile<16>") {
    GlobalProblem<float> p(one_rank_spec(seed));
    run_and_check_single<P1<Decay, tile::Tile<16>>>(p);
  }
  SUBCASE("tile::Auto (C = 64 on the host)") {
    GlobalProblem<float> p(one_rank_spec(seed));
    run_and_check_single<P1<Decay, tile::Auto>>(p);
  }
}
}  // namespace

TEST_CASE("R=1 (HostSingle): decay::None matches the reference, forward and backward") {
  single_rank_case<decay::None>(101);
}

TEST_CASE("R=1 (HostSingle): decay::PerHead matches the reference, forward and backward") {
  single_rank_case<decay::PerHead>(102);
}

TEST_CASE("R=1 (HostSingle): decay::Gate matches the reference, forward and backward (dg included)") {
  single_rank_case<decay::Gate>(103);
}

TEST_CASE("R=1: HostSingle and a HostGroup of one give bit-identical outputs; reruns are bit-identical") {
  using P = P1<decay::Gate, tile::Tile<16>>;
  GlobalProblem<float> a(one_rank_spec(7)), b(one_rank_spec(7));
  REQUIRE(run_host_single<P>(a).ok());
  REQUIRE(run_host<P>(b).ok());
  CHECK(snapshot(a.o_buf) == snapshot(b.o_buf));
  CHECK(snapshot(a.dq_buf) == snapshot(b.dq_buf));
  CHECK(snapshot(a.dk_buf) == snapshot(b.dk_buf));
  CHECK(snapshot(a.dv_buf) == snapshot(b.dv_buf));
  CHECK(snapshot(a.dg_buf) == snapshot(b.dg_buf));
  CHECK(snapshot(a.final_buf) == snapshot(b.final_buf));
  CHECK(snapshot(a.dinit_buf) == snapshot(b.dinit_buf));
  const auto o1 = snapshot(a.o_buf), dg1 = snapshot(a.dg_buf);
  REQUIRE(run_host_single<P>(a).ok());
  CHECK(snapshot(a.o_buf) == o1);
  CHECK(snapshot(a.dg_buf) == dg1);
}

TEST_CASE("the chunk length C (16, 32, 64, 128) changes rounding only") {
  ProblemSpec s = one_rank_spec(9);
  s.N = 150;
  GlobalProblem<float> p16(s), p32(s), p64(s), p128(s);
  run_and_check<P1<decay::Gate, tile::Tile<16>>>(p16);
  run_and_check<P1<decay::Gate, tile::Tile<32>>>(p32);
  run_and_check<P1<decay::Gate, tile::Tile<64>>>(p64);
  run_and_check<P1<decay::Gate, tile::Tile<128>>>(p128);
  for (auto* q : {&p32, &p64, &p128}) {
    CHECK(rel_err(q->o(), p16.o()) <= kTolF32);
    CHECK(rel_err(q->dq(), p16.dq()) <= kTolF32);
    CHECK(rel_err(q->dk(), p16.dk()) <= kTolF32);
    CHECK(rel_err(q->dv(), p16.dv()) <= kTolF32);
    CHECK(rel_err(q->dg(), p16.dg()) <= kTolDg);
  }
}
