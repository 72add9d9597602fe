// Initial and final states and their gradients: who reads and writes them (rank 0 reads S_init
// and writes dS_init; the last rank writes S_final and reads dS_final), optional pointers, and a
// sequence split into two calls chained through the states.
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {
ProblemSpec spec(int R, std::uint32_t seed) {
  ProblemSpec s;
  s.B = 2, s.N = 19, s.H = 2, s.D = 8, s.E = 4, s.R = R, s.seed = seed;
  return s;
}

/// Every rank gets state pointers; non-owners get NaN inputs / sentinel outputs (decoys).
template <class Policy>
void run_with_decoys(std::uint32_t seed, bool backward) {
  GlobalProblem<float> p(spec(3, seed));
  RunOptions opt;
  opt.decoy_states = true;
  opt.backward = backward;
  const RunResult rr = run_host<Policy>(p, opt);
  INFO(describe<Policy>());
  REQUIRE(rr.ok());
  CHECK(rr.decoys_intact);  // final_state / d_initial_state of non-owner ranks never written
  Expect e;
  e.backward = backward;
  // A NaN S_init / dS_final read on the wrong rank would poison every later output.
  check_against_reference<typename Policy::Decay>(p, run_reference<typename Policy::Decay>(p, backward), e);
}
}  // namespace

TEST_CASE("initial_state is read on rank 0 only and final_state written on the last rank only") {
  run_with_decoys<P16<decay::Gate>>(2000, false);
  run_with_decoys<P16<decay::PerHead, schedule::AllGather>>(2001, false);
  run_with_decoys<P16<decay::None>>(2002, false);
}

TEST_CASE("d_final_state is read on the last rank only and d_initial_state written on rank 0 only") {
  run_with_decoys<P16<decay::Gate>>(2010, true);
  run_with_decoys<P16<decay::Gate, schedule::AllGather>>(2011, true);
  run_with_decoys<P16<decay::PerHead>>(2012, true);
}

TEST_CASE("initial_state = nullptr is a zero state (bit-identical to passing zeros)") {
  ProblemSpec s = spec(3, 2020);
  s.initial_state = false;
  GlobalProblem<float> a(s);
  run_and_check<P16<decay::Gate>>(a);
  ProblemSpec sz = spec(3, 2020);
  GlobalProblem<float> b(sz);
  std::fill(b.init.begin(), b.init.end(), 0.f);
  run_and_check<P16<decay::Gate>>(b);
  CHECK(snapshot(a.o_buf) == snapshot(b.o_buf));
  CHECK(snapshot(a.dq_buf) == snapshot(b.dq_buf));
  CHECK(snapshot(a.dk_buf) == snapshot(b.dk_buf));
  CHECK(snapshot(a.dv_buf) == snapshot(b.dv_buf));
  CHECK(snapshot(a.dg_buf) == snapshot(b.dg_buf));
  CHECK(snapshot(a.final_buf) == snapshot(b.final_buf));
  CHECK(snapshot(a.dinit_buf) == snapshot(b.dinit_buf));
}

TEST_CASE("final_state = nullptr and d_final_state = nullptr: no state output, zero state gradient") {
  ProblemSpec s = spec(3, 2030);
  s.final_state = false;
  GlobalProblem<float> a(s), b(s);
  run_and_check<P16<decay::Gate>>(a);
  run_and_check<P16<decay::PerHead, schedule::AllGather>>(b);
  CHECK(all_bytes(a.final_buf, kNaNByte));  // nothing written where nothing was asked
}

TEST_CASE("d_initial_state = nullptr is allowed and changes no other gradient") {
  GlobalProblem<float> a(spec(2, 2040)), b(spec(2, 2040));
  RunOptions no_dinit;
  no_dinit.want_d_initial = false;
  REQUIRE(run_host<P16<decay::Gate>>(a, no_dinit).ok());
  REQUIRE(run_host<P16<decay::Gate>>(b).ok());
  CHECK(all_bytes(a.dinit_buf, kNaNByte));
  CHECK(snapshot(a.dq_buf) == snapshot(b.dq_buf));
  CHECK(snapshot(a.dk_buf) == snapshot(b.dk_buf));
  CHECK(snapshot(a.dv_buf) == snapshot(b.dv_buf));
  CHECK(snapshot(a.dg_buf) == snapshot(b.dg_buf));
}

TEST_CASE("two calls chained through final_state -> initial_state (and dS_init -> dS_final) equal one") {
  // The halves of a sequence as two independent single-rank problems: the first hands its final
  // state to the second; in backward the second hands d_initial_state to the first as its
  // d_final_state. Together they must give the whole sequence's outputs and gradients, dg
  // included (the first half's dg then comes from <dS_final, S_final>).
  using P = P16<decay::Gate>;
  GlobalProblem<float> p(spec(2, 2050));  // two "ranks" = the two halves
  const RefResult ref = run_reference<decay::Gate>(p);
  Shape half = p.shape();
  half.R = 1;
  comm::HostSingle single;
  const std::size_t nst = p.init.size();
  AlignedVec<float> mid(nst), dmid(nst);
  poison(mid), poison(dmid);
  AlignedVec<unsigned char> ws0(workspace_size<P, float>(half, single)), ws1(ws0.size());
  auto fwd_args = [&](int r, const float* init, float* fin) {
    return ForwardArgs<float, decay::Gate>{half, p.view_q(r), p.view_k(r), p.view_v(r), p.view_o(r), p.spec.scale,
                                           {p.view_g(r)}, init, fin};
  };
  auto bwd_args = [&](int r, const float* dfin, float* dinit) {
    return BackwardArgs<float, decay::Gate>{half, p.view_q(r), p.view_k(r), p.view_v(r), p.view_dout(r),
                                            p.view_dq(r), p.view_dk(r), p.view_dv(r), p.spec.scale,
                                            {p.view_g(r)}, p.view_dg(r), dfin, dinit};
  };
  REQUIRE(forward<P>(fwd_args(0, p.init.data(), mid.data()), single, {ws0.data(), ws0.size()}) == Status::kSuccess);
  REQUIRE(forward<P>(fwd_args(1, mid.data(), p.final_buf.data()), single, {ws1.data(), ws1.size()}) == Status::kSuccess);
  REQUIRE(backward<P>(bwd_args(1, p.dfinal.data(), dmid.data()), single, {ws1.data(), ws1.size()}) == Status::kSuccess);
  REQUIRE(backward<P>(bwd_args(0, dmid.data(), p.dinit_buf.data()), single, {ws0.data(), ws0.size()}) == Status::kSuccess);
  check_against_reference<decay::Gate>(p, ref);
}

TEST_CASE("backward can be repeated on one forward's workspace, with bit-identical results") {
  // The reserve (P_r, A_r, L_r) survives backward, e.g. for activation recomputation schemes.
  using P = P16<decay::Gate>;
  GlobalProblem<float> p(spec(1, 2060));
  Shape s = p.shape();
  comm::HostSingle single;
  AlignedVec<unsigned char> ws(workspace_size<P, float>(s, single));
  const ForwardArgs<float, decay::Gate> fa{s, p.view_q(0), p.view_k(0), p.view_v(0), p.view_o(0), p.spec.scale,
                                           {p.view_g(0)}, p.init.data(), p.final_buf.data()};
  const BackwardArgs<float, decay::Gate> ba{s, p.view_q(0), p.view_k(0), p.view_v(0), p.view_dout(0),
                                            p.view_dq(0), p.view_dk(0), p.view_dv(0), p.spec.scale,
                                            {p.view_g(0)}, p.view_dg(0), p.dfinal.data(), p.dinit_buf.data()};
  REQUIRE(forward<P>(fa, single, {ws.data(), ws.size()}) == Status::kSuccess);
  REQUIRE(backward<P>(ba, single, {ws.data(), ws.size()}) == Status::kSuccess);
  const auto dq = snapshot(p.dq_buf), dk = snapshot(p.dk_buf), dv = snapshot(p.dv_buf), dg = snapshot(p.dg_buf),
             di = snapshot(p.dinit_buf);
  p.poison_outputs();
  REQUIRE(backward<P>(ba, single, {ws.data(), ws.size()}) == Status::kSuccess);
  CHECK(unchanged(p.dq_buf, dq));
  CHECK(unchanged(p.dk_buf, dk));
  CHECK(unchanged(p.dv_buf, dv));
  CHECK(unchanged(p.dg_buf, dg));
  CHECK(unchanged(p.dinit_buf, di));
  const RefResult ref = run_reference<decay::Gate>(p);
  CHECK(rel_err(p.dq(), ref.dq) <= kTolF32);
  CHECK(rel_err(p.dg(), ref.dlog) <= kTolDg);
}
