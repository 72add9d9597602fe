#pragma once
// doctest helpers shared by the CPU suite (tests/common/* stay framework-free for the GPU suites).
#include <doctest/doctest.h>
#include <string>
#include <lasp/lasp.hpp>
#include "common/compare.hpp"
#include "common/host_runner.hpp"
#include "common/problem.hpp"
#include "common/tolerance.hpp"

// doctest prints enums as their underlying integer; found by ADL, this prints a Status by name.
namespace lasp {
inline doctest::String toString(Status s) { return doctest::String(to_string(s)); }
}  // namespace lasp

namespace lasp_test {

/// The policies most cases use (each distinct policy re-instantiates the host backend: sharing
/// them keeps the suite's compile time down). C = 16 so that small problems span several chunks.
template <class Decay, class Schedule = lasp::schedule::Chain>
using P16 = lasp::Policy<Decay, Schedule, lasp::caching::Recompute, lasp::tile::Tile<16>>;
template <class Decay, class Schedule = lasp::schedule::Chain>
using P64 = lasp::Policy<Decay, Schedule, lasp::caching::Recompute, lasp::tile::Tile<64>>;

/// Short names for the common policies (macro arguments cannot hold template commas).
namespace pol {
using None = P16<lasp::decay::None>;
using Head = P16<lasp::decay::PerHead>;
using Gate = P16<lasp::decay::Gate>;
using NoneAG = P16<lasp::decay::None, lasp::schedule::AllGather>;
using HeadAG = P16<lasp::decay::PerHead, lasp::schedule::AllGather>;
using GateAG = P16<lasp::decay::Gate, lasp::schedule::AllGather>;
}  // namespace pol

/// Which outputs a check covers.
struct Expect {
  double out = kTolF32;      // o, dq, dk, dv (element type)
  double state = kTolF32;    // final state, d_initial_state
  double dg = kTolDg;        // dg (gates)
  bool dg_normwise = true;   // false: the caller checks dg its own way
  bool backward = true;
  bool per_rank = true;      // also check each rank's slice
};

template <class Elem>
Expect expect_for() {
  Expect e;
  e.out = output_tolerance<Elem>();
  e.state = state_tolerance();
  return e;
}

/// Every output of the run (whole sequence, then each rank's segment) against the reference;
/// padding untouched; everything written (no NaN left from the poison).
template <class Decay, class Elem>
void check_against_reference(const GlobalProblem<Elem>& p, const RefResult& ref, const Expect& e = expect_for<Elem>()) {
  const ProblemSpec& s = p.spec;
  INFO("B=", s.B, " N=", s.N, std::string(s.rank_N.empty() ? "" : " (uneven)"), " H=", s.H, " D=", s.D, " E=", s.E, " R=", s.R, " scale=", s.scale);
  const auto o = p.o();
  CHECK(rel_err(o, ref.o) <= e.out);
  CHECK(p.padding_intact());
  if (s.final_state) CHECK(rel_err(p.final_state(), ref.final_state) <= e.state);
  std::vector<double> dq, dk, dv, dg;
  if (e.backward) {
    dq = p.dq(), dk = p.dk(), dv = p.dv();
    CHECK(rel_err(dq, ref.dq) <= e.out);
    CHECK(rel_err(dk, ref.dk) <= e.out);
    CHECK(rel_err(dv, ref.dv) <= e.out);
    CHECK(rel_err(p.d_initial_state(), ref.dinit) <= e.state);
    if constexpr (Decay::kHasGradient) {
      dg = p.dg();
      if (e.dg_normwise) CHECK(rel_err(dg, ref.dlog) <= e.dg);
    }
  }
  if (!e.per_rank) return;
  for (int r = 0; r < s.R; ++r) {
    CAPTURE(r);
    const index_t t0 = p.t0(r), t1 = t0 + p.n_of(r);
    auto sl = [&](const std::vector<double>& a, index_t X) { return slice_tokens(a, s.B, p.T, s.H, X, t0, t1); };
    CHECK(rel_err(sl(o, s.E), sl(ref.o, s.E)) <= e.out);
    if (e.backward) {
      CHECK(rel_err(sl(dq, s.D), sl(ref.dq, s.D)) <= e.out);
      CHECK(rel_err(sl(dk, s.D), sl(ref.dk, s.D)) <= e.out);
      CHECK(rel_err(sl(dv, s.E), sl(ref.dv, s.E)) <= e.out);
      if constexpr (Decay::kHasGradient)
        if (e.dg_normwise) CHECK(rel_err(sl(dg, 1), sl(ref.dlog, 1)) <= e.dg);
    }
  }
}

/// Run Policy on the host over p.spec.R ranks (comm::HostGroup), run the reference, check
/// everything (with `plan`: make_plan first, then forward/backward with the plan). Returns the
/// run result.
template <class Policy, class Elem>
RunResult run_and_check(GlobalProblem<Elem>& p, const Expect& e = expect_for<Elem>(), bool plan = false) {
  RunOptions o;
  o.backward = e.backward;
  o.plan = plan;
  RunResult rr = run_host<Policy>(p, o);
  INFO("policy: ", lasp::describe<Policy>(), ", layout: ", std::string(to_string(p.spec.layout)),
       std::string(plan ? ", with a plan" : ""));
  REQUIRE(rr.first_error() == lasp::Status::kSuccess);
  check_against_reference<typename Policy::Decay>(p, run_reference<typename Policy::Decay>(p, e.backward), e);
  return rr;
}

/// The same on one rank through comm::HostSingle.
template <class Policy, class Elem>
RunResult run_and_check_single(GlobalProblem<Elem>& p, const Expect& e = expect_for<Elem>()) {
  REQUIRE(p.spec.R == 1);
  RunOptions o;
  o.backward = e.backward;
  RunResult rr = run_host_single<Policy>(p, o);
  INFO("policy: ", lasp::describe<Policy>(), ", layout: ", std::string(to_string(p.spec.layout)));
  REQUIRE(rr.first_error() == lasp::Status::kSuccess);
  check_against_reference<typename Policy::Decay>(p, run_reference<typename Policy::Decay>(p, e.backward), e);
  return rr;
}

// Compile time: the host backend is instantiated per (Policy, element type), and most files
// use the same few. They are instantiated once, in instances_*.cpp, and declared extern here
// (any other combination is still instantiated implicitly where it is used).
#define LASP_TEST_RUN_INSTANCES_F32(X) \
  X(pol::None, float) X(pol::Head, float) X(pol::Gate, float) X(pol::NoneAG, float) X(pol::HeadAG, float) X(pol::GateAG, float)
#define LASP_TEST_RUN_INSTANCES_16(X)                                                                  \
  X(pol::None, lasp::bf16) X(pol::Head, lasp::bf16) X(pol::Gate, lasp::bf16) X(pol::None, lasp::fp16) \
  X(pol::Head, lasp::fp16) X(pol::Gate, lasp::fp16)
#define LASP_TEST_REF_INSTANCES(X)                                                                      \
  X(lasp::decay::None, float) X(lasp::decay::PerHead, float) X(lasp::decay::Gate, float)                  \
  X(lasp::decay::None, lasp::bf16) X(lasp::decay::PerHead, lasp::bf16) X(lasp::decay::Gate, lasp::bf16)   \
  X(lasp::decay::None, lasp::fp16) X(lasp::decay::PerHead, lasp::fp16) X(lasp::decay::Gate, lasp::fp16)

#define LASP_TEST_RUN_INSTANCE(P, E) LASP_TEST_EXTERN template RunResult run_host<P, E>(GlobalProblem<E>&, const RunOptions&);
#define LASP_TEST_REF_INSTANCE(D, E)                                                                \
  LASP_TEST_EXTERN template RefResult run_reference<D, E>(const GlobalProblem<E>&, bool);             \
  LASP_TEST_EXTERN template void check_against_reference<D, E>(const GlobalProblem<E>&, const RefResult&, \
                                                              const Expect&);
#ifndef LASP_TEST_EXTERN
#define LASP_TEST_EXTERN extern
LASP_TEST_RUN_INSTANCES_F32(LASP_TEST_RUN_INSTANCE)
LASP_TEST_RUN_INSTANCES_16(LASP_TEST_RUN_INSTANCE)
LASP_TEST_REF_INSTANCES(LASP_TEST_REF_INSTANCE)
#endif

}  // namespace lasp_test
