#pragma once
// Helpers of the CPU tests of packed documents, the zigzag layout and empty shards
// (packed_test.cpp, empty_shard_test.cpp): the global problem and its double reference
// (common/packed_problem.hpp, shared with the GPU suites), a run of every rank through
// comm::HostGroup and the checks against the reference.
#include <functional>
#include <string>
#include "common/packed_problem.hpp"
#include "support.hpp"

namespace lasp_test {
namespace packed {

using namespace lasp;
namespace ref = lasp::reference;

template <class Decay, class Schedule>
using PP = lasp::Policy<Decay, Schedule, caching::Recompute, tile::Tile<64>>;

struct POpts {
  bool plan = false;
  /// Changes rank r's arguments before the call (bad offsets, ...).
  std::function<void(int, Shape&, Packed&, Sharding&)> tweak;
  int node_size = 0;  // comm::HostGroup::set_node_size (schedule::Hierarchical)
};
struct PRun {
  std::vector<Status> plan, fwd, bwd;
  bool untouched = true;  // a refused call wrote nothing (outputs still poisoned)
};

/// Every rank's forward then backward (thread ranks, comm::HostGroup), each with its own
/// buffers holding its rows (zigzag: front then back); outputs gathered into p's results.
template <class Policy>
PRun run_packed(PProblem& p, const POpts& opt = {}) {
  using Decay = typename Policy::Decay;
  const PSpec& s = p.s;
  const int R = p.R;
  struct Rank {
    AlignedVec<float> q, k, v, dout, o, dq, dk, dv, g, dg;
    AlignedVec<unsigned char> ws;
    Shape shape;
    Packed pk;
    Sharding sh = Sharding::kContiguous;
    Plan<Policy, float> plan;
  };
  std::vector<Rank> rk(static_cast<std::size_t>(R));
  comm::HostGroup group(R, std::chrono::milliseconds(20000));
  group.set_node_size(opt.node_size);
  poison(p.fin_buf), poison(p.dinit_buf);
  for (int r = 0; r < R; ++r) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = p.n_of(r);
    x.shape = Shape{s.B, N, s.H, s.D, s.E, R};
    x.sh = s.zigzag ? Sharding::kZigzag : Sharding::kContiguous;
    if (p.packed()) x.pk = p.packed_args();
    if (opt.tweak) opt.tweak(r, x.shape, x.pk, x.sh);
    auto fill = [&](AlignedVec<float>& buf, const std::vector<float>& src, index_t X) {
      buf.assign(std::size_t(s.B * N * s.H * X), 0.f);
      for (index_t b = 0; b < s.B; ++b)
        for (index_t n = 0; n < N; ++n)
          for (index_t i = 0; i < s.H * X; ++i)
            buf[std::size_t((b * N + n) * s.H * X + i)] = src[std::size_t((b * p.T + p.pos(r, n)) * s.H * X + i)];
    };
    fill(x.q, p.q, s.D), fill(x.k, p.k, s.D), fill(x.v, p.v, s.E), fill(x.dout, p.dout, s.E), fill(x.g, p.gates, 1);
    x.o.resize(x.v.size()), x.dv.resize(x.v.size()), x.dq.resize(x.q.size()), x.dk.resize(x.q.size()),
        x.dg.resize(x.g.size());
    poison(x.o), poison(x.dv), poison(x.dq), poison(x.dk), poison(x.dg);
    x.ws.resize(workspace_size<Policy, float>(x.shape, group.comm(r)) + 64);
    poison(x.ws);
  }
  auto params = [&](Rank& x) -> typename Decay::Params {
    if constexpr (std::is_same_v<Decay, decay::PerHead>) return {p.slopes.data()};
    else if constexpr (std::is_same_v<Decay, decay::Gate>) return {gates_token_major(static_cast<const float*>(x.g.data()), x.shape.N, s.H)};
    else return {};
  };
  PRun res;
  const index_t N0 = 0;
  (void)N0;
  if (opt.plan)
    res.plan = on_ranks(group, [&](int r, auto& c) {
      Rank& x = rk[std::size_t(r)];
      return make_plan<Policy, float>(x.shape, params(x), c, &x.plan);
    });
  const bool whole = !p.packed();
  const int final_owner = s.zigzag ? 0 : R - 1;
  res.fwd = on_ranks(group, [&](int r, auto& c) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = x.shape.N;
    ForwardArgs<float, Decay> a{x.shape, token_major<const float>(x.q.data(), N, s.H, s.D),
                                token_major<const float>(x.k.data(), N, s.H, s.D),
                                token_major<const float>(x.v.data(), N, s.H, s.E), token_major(x.o.data(), N, s.H, s.E),
                                s.scale, params(x)};
    a.packed = x.pk;
    a.sharding = x.sh;
    if (p.packed() && s.final) a.packed.final_states = p.fin_buf.data();
    if (whole && s.init && r == 0) a.initial_state = p.init_whole.data();
    if (whole && s.final && r == final_owner) a.final_state = p.fin_buf.data();
    const Workspace w{x.ws.data(), x.ws.size()};
    return opt.plan ? forward(x.plan, a, c, w) : forward<Policy>(a, c, w);
  });
  res.bwd = on_ranks(group, [&](int r, auto& c) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = x.shape.N;
    BackwardArgs<float, Decay> a{x.shape, token_major<const float>(x.q.data(), N, s.H, s.D),
                                 token_major<const float>(x.k.data(), N, s.H, s.D),
                                 token_major<const float>(x.v.data(), N, s.H, s.E),
                                 token_major<const float>(x.dout.data(), N, s.H, s.E),
                                 token_major(x.dq.data(), N, s.H, s.D), token_major(x.dk.data(), N, s.H, s.D),
                                 token_major(x.dv.data(), N, s.H, s.E), s.scale, params(x)};
    if constexpr (Decay::kHasGradient) a.dg = gates_token_major(x.dg.data(), N, s.H);
    a.packed = x.pk;
    a.sharding = x.sh;
    if (p.packed()) {
      if (s.final) a.packed.d_final_states = p.dF.data();
      a.packed.d_initial_states = p.dinit_buf.data();
    }
    if (whole && s.final && r == final_owner) a.d_final_state = p.dfinal_whole.data();
    if (whole && r == 0) a.d_initial_state = p.dinit_buf.data();
    const Workspace w{x.ws.data(), x.ws.size()};
    return opt.plan ? backward(x.plan, a, c, w) : backward<Policy>(a, c, w);
  });
  // Gather every rank's rows into the global results.
  p.o.assign(p.v.size(), 0), p.dv = p.o, p.dq.assign(p.q.size(), 0), p.dk = p.dq, p.dg.assign(p.gates.size(), 0);
  for (int r = 0; r < R; ++r) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = p.n_of(r);
    res.untouched = res.untouched && all_bytes(x.o, kNaNByte) && all_bytes(x.dq, kNaNByte) &&
                    all_bytes(x.dk, kNaNByte) && all_bytes(x.dv, kNaNByte) && all_bytes(x.dg, kNaNByte);
    auto back = [&](const AlignedVec<float>& buf, std::vector<double>& dst, index_t X) {
      for (index_t b = 0; b < s.B; ++b)
        for (index_t n = 0; n < N; ++n)
          for (index_t i = 0; i < s.H * X; ++i)
            dst[std::size_t((b * p.T + p.pos(r, n)) * s.H * X + i)] = buf[std::size_t((b * N + n) * s.H * X + i)];
    };
    back(x.o, p.o, s.E), back(x.dq, p.dq, s.D), back(x.dk, p.dk, s.D), back(x.dv, p.dv, s.E), back(x.dg, p.dg, 1);
  }
  res.untouched = res.untouched && all_bytes(p.fin_buf, kNaNByte) && all_bytes(p.dinit_buf, kNaNByte);
  p.fin.assign(p.fin_buf.begin(), p.fin_buf.end());
  p.dinit.assign(p.dinit_buf.begin(), p.dinit_buf.end());
  return res;
}

/// Every output against the reference: whole arrays, and each document on its own (so that a
/// wrong one-token document is not hidden by the norm of the long ones).
template <class Decay>
void check_packed(const PProblem& p, const PRef& r) {
  const PSpec& s = p.s;
  CHECK(rel_err(p.o, r.o) <= kTolF32);
  CHECK(rel_err(p.dq, r.dq) <= kTolF32);
  CHECK(rel_err(p.dk, r.dk) <= kTolF32);
  CHECK(rel_err(p.dv, r.dv) <= kTolF32);
  if constexpr (Decay::kHasGradient) CHECK(rel_err(p.dg, r.dg) <= kTolDg);
  if (s.final) CHECK(rel_err(p.fin, r.fin) <= kTolF32);
  CHECK(rel_err(p.dinit, r.dinit) <= kTolF32);
  if (!p.packed()) return;
  const index_t st = s.H * s.D * s.E;
  for (index_t i = 0; i < p.ndocs; ++i) {
    const index_t t0 = p.off64[std::size_t(i)], L = p.off64[std::size_t(i + 1)] - t0;
    CAPTURE(i);
    CAPTURE(L);
    if (L > 0) {
      CHECK(rel_err(doc_slice(p.o, s.H, s.E, t0, L), doc_slice(r.o, s.H, s.E, t0, L)) <= kTolF32);
      CHECK(rel_err(doc_slice(p.dq, s.H, s.D, t0, L), doc_slice(r.dq, s.H, s.D, t0, L)) <= kTolF32);
      CHECK(rel_err(doc_slice(p.dk, s.H, s.D, t0, L), doc_slice(r.dk, s.H, s.D, t0, L)) <= kTolF32);
      CHECK(rel_err(doc_slice(p.dv, s.H, s.E, t0, L), doc_slice(r.dv, s.H, s.E, t0, L)) <= kTolF32);
      if constexpr (Decay::kHasGradient)
        CHECK(rel_err(doc_slice(p.dg, s.H, 1, t0, L), doc_slice(r.dg, s.H, 1, t0, L)) <= kTolDg);
    }
    auto st_slice = [&](const std::vector<double>& a) {
      return std::vector<double>(a.begin() + i * st, a.begin() + (i + 1) * st);
    };
    if (s.final) CHECK(rel_err(st_slice(p.fin), st_slice(r.fin)) <= kTolF32);
    CHECK(rel_err(st_slice(p.dinit), st_slice(r.dinit)) <= kTolF32);
  }
}

template <class Policy>
void run_and_check_packed(PProblem& p, const PRef& r, bool plan = false, int node_size = 0) {
  INFO("policy: ", describe<Policy>(), std::string(p.s.zigzag ? ", zigzag" : ", contiguous"),
       std::string(plan ? ", with a plan" : ""), ", R=", p.R, ", node size ", node_size);
  const PRun rr = run_packed<Policy>(p, POpts{plan, {}, node_size});
  for (Status st : rr.plan) REQUIRE(st == Status::kSuccess);
  for (Status st : rr.fwd) REQUIRE(st == Status::kSuccess);
  for (Status st : rr.bwd) REQUIRE(st == Status::kSuccess);
  check_packed<typename Policy::Decay>(p, r);
}

}  // namespace packed
}  // namespace lasp_test
