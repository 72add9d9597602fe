// Shapes, layouts, scale and element types: tails (N not a multiple of C), D != E, B > 1, H > 1,
// token-major and head-major views, padded rows, scale != 1, fp32 / bf16 / fp16.
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {
ProblemSpec spec(index_t B, index_t N, index_t H, index_t D, index_t E, int R, std::uint32_t seed) {
  ProblemSpec s;
  s.B = B, s.N = N, s.H = H, s.D = D, s.E = E, s.R = R, s.seed = seed;
  return s;
}
}  // namespace

TEST_CASE("tails with C = 16: N = 1, 15, 17, 33, 100 tokens per rank") {
  for (index_t N : {1, 15, 17, 33, 100}) {
    CAPTURE(N);
    GlobalProblem<float> a(spec(2, N, 2, 8, 8, 2, 400 + std::uint32_t(N)));
    run_and_check<P16<decay::Gate>>(a);
    GlobalProblem<float> b(spec(1, N, 2, 8, 8, 3, 450 + std::uint32_t(N)));
    run_and_check<P16<decay::PerHead, schedule::AllGather>>(b);
  }
}

TEST_CASE("tails with C = 64: N = 1, 17, 63, 65, 100 tokens per rank") {
  for (index_t N : {1, 17, 63, 65, 100}) {
    CAPTURE(N);
    GlobalProblem<float> a(spec(1, N, 2, 8, 8, 2, 500 + std::uint32_t(N)));
    run_and_check<P64<decay::Gate>>(a);
  }
}

TEST_CASE("D != E: (D, E) = (8, 12), (16, 4), (4, 16) for every decay") {
  for (auto de : {std::pair<index_t, index_t>{8, 12}, {16, 4}, {4, 16}}) {
    INFO("D=", de.first, " E=", de.second);
    GlobalProblem<float> a(spec(2, 19, 2, de.first, de.second, 3, 600));
    run_and_check<P16<decay::None>>(a);
    GlobalProblem<float> b(spec(2, 19, 2, de.first, de.second, 3, 601));
    run_and_check<P16<decay::PerHead>>(b);
    GlobalProblem<float> c(spec(2, 19, 2, de.first, de.second, 3, 602));
    run_and_check<P16<decay::Gate>>(c);
  }
}

TEST_CASE("B > 1 and H > 1 in token-major and head-major layouts, both schedules") {
  for (Layout layout : {Layout::kTokenMajor, Layout::kHeadMajor}) {
    CAPTURE(to_string(layout));
    ProblemSpec s = spec(3, 21, 4, 8, 4, 2, 700);
    s.layout = layout;
    GlobalProblem<float> a(s), b(s);
    run_and_check<P16<decay::Gate>>(a);
    run_and_check<P16<decay::Gate, schedule::AllGather>>(b);
    // The head-major views really are head-major: stride_h = T*pitch, stride_n = pitch.
    if (layout == Layout::kHeadMajor) {
      CHECK(a.view_q(1).stride_n == a.lq.pitch);
      CHECK(a.view_q(1).stride_h == a.T * a.lq.pitch);
    } else {
      CHECK(a.view_q(1).stride_h == a.lq.pitch);
      CHECK(a.view_q(1).stride_n == s.H * a.lq.pitch);
    }
  }
}

TEST_CASE("padded rows (pitch > X): padding is neither read (NaN there) nor written") {
  for (Layout layout : {Layout::kTokenMajor, Layout::kHeadMajor}) {
    CAPTURE(to_string(layout));
    ProblemSpec s = spec(2, 18, 3, 8, 12, 2, 750);
    s.layout = layout, s.pad = 5;  // rows of 8 + 8 and 12 + 8 floats
    GlobalProblem<float> a(s);
    CHECK(a.lq.pitch == 16);
    CHECK(a.lv.pitch == 20);
    run_and_check<P16<decay::Gate>>(a);  // checks padding_intact() and that no NaN leaked
    ProblemSpec sb = s;
    sb.D = 12;  // bf16 rows of 12 (24 bytes) need a pitch of 16 elements
    sb.pad = 0;
    GlobalProblem<bf16> b(sb);
    CHECK(b.lq.pitch == 16);
    run_and_check<P16<decay::Gate>>(b);
  }
}

TEST_CASE("scale != 1 (0.125, -2.5, 3) scales o and the gradients consistently") {
  for (float scale : {0.125f, -2.5f, 3.f}) {
    CAPTURE(scale);
    ProblemSpec s = spec(1, 25, 2, 8, 8, 2, 800);
    s.scale = scale;
    GlobalProblem<float> a(s);
    run_and_check<P16<decay::Gate>>(a);
  }
}

TEST_CASE("bf16 inputs and outputs: within u(bf16) of the reference on the rounded inputs") {
  for (Layout layout : {Layout::kTokenMajor, Layout::kHeadMajor}) {
    CAPTURE(to_string(layout));
    ProblemSpec s = spec(2, 29, 2, 16, 8, 3, 900);
    s.layout = layout, s.scale = 0.25f;
    GlobalProblem<bf16> a(s), b(s), c(s);
    run_and_check<P16<decay::None>>(a);
    run_and_check<P16<decay::PerHead>>(b);
    run_and_check<P16<decay::Gate>>(c);
  }
}

TEST_CASE("fp16 inputs and outputs: within u(fp16) of the reference on the rounded inputs") {
  for (Layout layout : {Layout::kTokenMajor, Layout::kHeadMajor}) {
    CAPTURE(to_string(layout));
    ProblemSpec s = spec(2, 29, 2, 8, 16, 3, 950);
    s.layout = layout, s.scale = 0.25f;
    GlobalProblem<fp16> a(s), b(s), c(s);
    run_and_check<P16<decay::None>>(a);
    run_and_check<P16<decay::PerHead>>(b);
    run_and_check<P16<decay::Gate>>(c);
  }
}

TEST_CASE("the rounding error of 16-bit outputs is real: bf16 is measurably worse than fp16") {
  // Guards the tolerances above: if the 16-bit outputs were compared against themselves or not
  // rounded, both errors would be ~1e-7.
  ProblemSpec s = spec(1, 40, 2, 16, 16, 2, 980);
  GlobalProblem<bf16> a(s);
  GlobalProblem<fp16> b(s);
  REQUIRE(run_host<P16<decay::Gate>>(a).ok());
  REQUIRE(run_host<P16<decay::Gate>>(b).ok());
  const double ea = rel_err(a.o(), run_reference<decay::Gate>(a, false).o);
  const double eb = rel_err(b.o(), run_reference<decay::Gate>(b, false).o);
  CHECK(ea > 0.1 * unit_roundoff<bf16>());
  CHECK(ea < unit_roundoff<bf16>());
  CHECK(eb > 0.1 * unit_roundoff<fp16>());
  CHECK(eb < unit_roundoff<fp16>());
}

TEST_CASE("D = E = 64 (fp32 and bf16 head-major) with small T") {
  GlobalProblem<float> a(spec(1, 48, 2, 64, 64, 2, 1000));
  run_and_check<P16<decay::Gate>>(a);
  GlobalProblem<float> b(spec(1, 40, 2, 64, 64, 2, 1001));
  run_and_check<P64<decay::Gate>>(b);
  ProblemSpec s = spec(1, 32, 2, 64, 64, 3, 1002);
  s.layout = Layout::kHeadMajor;
  GlobalProblem<bf16> c(s);
  run_and_check<P16<decay::PerHead, schedule::AllGather>>(c);
}

TEST_CASE("inputs broadcast over heads (k, v with stride_h = 0: multi-query) are accepted and correct") {
  // Only outputs need disjoint rows; an input view may repeat rows. The reference sees the same
  // k, v replicated to every head.
  using P = P16<decay::PerHead>;
  ProblemSpec s = spec(2, 37, 3, 8, 8, 1, 1100);
  GlobalProblem<float> p(s);
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < p.T; ++t)
      for (index_t h = 1; h < s.H; ++h)
        for (index_t x = 0; x < s.D; ++x) {
          p.k[std::size_t(((b * p.T + t) * s.H + h) * s.D + x)] = p.k[std::size_t(((b * p.T + t) * s.H) * s.D + x)];
          p.v[std::size_t(((b * p.T + t) * s.H + h) * s.E + x)] = p.v[std::size_t(((b * p.T + t) * s.H) * s.E + x)];
        }
  p.pack();
  auto k = p.view_k(0), v = p.view_v(0);
  k.stride_h = 0, v.stride_h = 0;  // every head reads head 0's row
  comm::HostSingle single;
  AlignedVec<unsigned char> ws(workspace_size<P, float>(p.shape(), single));
  const ForwardArgs<float, decay::PerHead> fa{p.shape(), p.view_q(0), k, v, p.view_o(0), s.scale,
                                              {p.slopes.data()}, p.init.data(), p.final_buf.data()};
  const BackwardArgs<float, decay::PerHead> ba{p.shape(), p.view_q(0), k, v, p.view_dout(0), p.view_dq(0),
                                               p.view_dk(0), p.view_dv(0), s.scale, {p.slopes.data()},
                                               {}, p.dfinal.data(), p.dinit_buf.data()};
  REQUIRE(forward<P>(fa, single, {ws.data(), ws.size()}) == Status::kSuccess);
  REQUIRE(backward<P>(ba, single, {ws.data(), ws.size()}) == Status::kSuccess);
  check_against_reference<decay::PerHead>(p, run_reference<decay::PerHead>(p));
}
