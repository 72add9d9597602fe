// Plans (lasp::make_plan) and ranks that hold different N (issue 10, item 1). Shape documents
// "any N >= 1", so every schedule must give the whole-sequence result with uneven segments, with
// and without a plan, and none may deadlock: the default schedule::Auto used to decide its single
// hop on each rank alone, so with slopes {0.3, 0.05} and N = {400, 64} rank 0 shifted while rank 1
// all-gathered. The ranks' HostGroup has a timeout, so such a deadlock fails instead of hanging.
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

template <class Schedule, class Decay = decay::PerHead>
using P = P16<Decay, Schedule>;

ProblemSpec uneven(std::vector<index_t> ns, std::uint32_t seed) {
  ProblemSpec s;
  s.B = 1, s.H = 2, s.D = 8, s.E = 8, s.scale = 0.5f, s.seed = seed;
  s.R = int(ns.size());
  s.N = ns[0];
  s.rank_N = std::move(ns);
  return s;
}

/// A HostGroup communicator that logs, per rank, 'S' for each send, 'R' for each recv, 'G' for
/// each all-gather.
struct Recording {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  comm::HostGroup::Comm inner;
  std::vector<std::string>* log;
  std::mutex* mu;
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  void note(char c) {
    std::lock_guard<std::mutex> lk(*mu);
    (*log)[std::size_t(rank())] += c;
  }
  Status send(const float* b, std::size_t n, int peer, stream_type s) { return note('S'), inner.send(b, n, peer, s); }
  Status recv(float* b, std::size_t n, int peer, stream_type s) { return note('R'), inner.recv(b, n, peer, s); }
  Status all_gather(const float* a, float* b, std::size_t n, stream_type s) {
    return note('G'), inner.all_gather(a, b, n, s);
  }
};

/// Runs Policy (with or without a plan) over Recording communicators, checks against the
/// reference; the log of each rank.
template <class Policy>
std::vector<std::string> run_recorded(GlobalProblem<float>& p, bool plan) {
  comm::HostGroup group(p.spec.R, std::chrono::seconds(20));
  std::vector<std::string> log(std::size_t(p.spec.R));
  std::mutex mu;
  RunOptions o;
  o.plan = plan;
  const RunResult rr =
      lasp_test::detail::run_ranks<Policy>(p, o, [&](int r) { return Recording{group.comm(r), &log, &mu}; });
  REQUIRE(rr.first_error() == Status::kSuccess);
  check_against_reference<typename Policy::Decay>(p, run_reference<typename Policy::Decay>(p), expect_for<float>());
  return log;
}

/// f(r, comm) on every rank of a fresh HostGroup (20 s timeout) at once; the statuses.
template <class F>
std::vector<Status> on_ranks(int R, F&& f) {
  comm::HostGroup group(R, std::chrono::seconds(20));
  return lasp_test::on_ranks(group, f);
}

}  // namespace

TEST_CASE("uneven N (issue 10 item 1): slopes {0.3, 0.05}, N = {400, 64} and {64, 400}: Auto and Truncated agree, no deadlock") {
  for (auto ns : {std::vector<index_t>{400, 64}, std::vector<index_t>{64, 400}}) {
    CAPTURE(ns[0]);
    for (bool plan : {false, true}) {
      CAPTURE(plan);
      ProblemSpec s = uneven(ns, 6000);
      GlobalProblem<float> a(s), b(s), c(s);
      for (auto* p : {&a, &b, &c}) p->slopes = {0.3f, 0.05f};  // N = 400 qualifies (0.05 x 400 = 20), 64 does not
      run_and_check<P<schedule::Auto>>(a, expect_for<float>(), plan);
      run_and_check<P<schedule::Truncated<schedule::AllGather>>>(b, expect_for<float>(), plan);
      run_and_check<P<schedule::Truncated<schedule::Chain>>>(c, expect_for<float>(), plan);
    }
  }
}

namespace {
template <class Decay>
void every_schedule_uneven(const std::vector<std::vector<index_t>>& lists, const std::vector<float>& slopes,
                           std::uint32_t seed) {
  for (const auto& ns : lists) {
    for (bool plan : {false, true}) {
      INFO("R=", ns.size(), " plan=", plan);
      ProblemSpec s = uneven(ns, seed + std::uint32_t(ns.size()));
      auto go = [&](auto policy) {
        using Pol = decltype(policy);
        GlobalProblem<float> p(s);
        p.slopes = slopes;
        run_and_check<Pol>(p, expect_for<float>(), plan);
      };
      go(P<schedule::Chain, Decay>{});
      go(P<schedule::AllGather, Decay>{});
      go(P<schedule::ChainOverlap, Decay>{});
      go(P<schedule::AllGatherOverlap, Decay>{});
      go(P<schedule::Truncated<schedule::Chain>, Decay>{});
      go(P<schedule::Auto, Decay>{});
    }
  }
}
}  // namespace

TEST_CASE("uneven N, R = 2..4: every schedule, with and without a plan, equals the whole-sequence reference") {
  // Slopes {0.5, 2}: a rank is strong (s N > 16.64 on both heads) from N = 34 on, so some ranks
  // of each group qualify for the single hop and others do not.
  const std::vector<std::vector<index_t>> lists = {{23, 5}, {1, 40, 17}, {33, 50, 2, 40}};
  every_schedule_uneven<decay::PerHead>(lists, {0.5f, 2.f}, 6100);
  every_schedule_uneven<decay::PerHead>(lists, tnl_slopes(2), 6200);
  // Gates: dg of a rank of one token is a sum over the whole sequence, conditioned beyond the
  // per-rank tolerance (multi_rank_test covers N = 1 with equal segments): no rank that short.
  every_schedule_uneven<decay::Gate>({{23, 5}, {12, 40, 17}, {33, 50, 6, 40}}, {}, 6300);
}

TEST_CASE("Truncated<Chain>: ranks that qualify send before they receive, the others chain, uneven N") {
  // Slopes {1, 2}: N = 40 and 30 qualify, N = 5 does not.
  ProblemSpec s = uneven({40, 5, 30, 40}, 6400);
  GlobalProblem<float> p(s);
  p.slopes = {1.f, 2.f};
  const auto log = run_recorded<P<schedule::Truncated<schedule::Chain>>>(p, false);
  // Forward then backward, after each call's agreement ('G'): rank 1 (weak) receives before it
  // sends in forward, rank 2 (strong) sends first; in backward the roles follow the same rule.
  CHECK(log[1] == "GRSGRS");
  CHECK(log[2] == "GSRGSR");
  CHECK(log[0] == "GSGR");
  CHECK(log[3] == "GRGS");
}

TEST_CASE("plan: Auto takes the single hop only when EVERY rank qualifies, and only with a plan") {
  const std::vector<float> slopes = {1.f, 2.f};
  {  // every rank strong: a plan shifts (one send and one receive per middle rank and pass)
    ProblemSpec s = uneven({40, 35, 50}, 6500);
    GlobalProblem<float> p(s), q(s);
    p.slopes = q.slopes = slopes;
    const auto with = run_recorded<P<schedule::Auto>>(p, true);
    CHECK(with[0] == "G" "G" "S" "G" "R");  // make_plan's exchange, then forward and backward
    CHECK(with[1] == "G" "G" "SR" "G" "SR");
    CHECK(with[2] == "G" "G" "R" "G" "S");
    const auto without = run_recorded<P<schedule::Auto>>(q, false);  // no plan: the all-gather
    for (const auto& l : without) CHECK(l == "GGGG");
  }
  {  // rank 1 weak (N = 10): the whole group all-gathers
    ProblemSpec s = uneven({40, 10, 50}, 6600);
    GlobalProblem<float> p(s);
    p.slopes = slopes;
    const auto log = run_recorded<P<schedule::Auto>>(p, true);
    for (const auto& l : log) CHECK(l == "G" "GG" "GG");
  }
  {  // the plan says so on every rank
    const std::vector<index_t> ns = {40, 10, 50};
    std::vector<Plan<P<schedule::Auto>, float>> plans(3);
    CHECK(all_are(on_ranks(3,
                           [&](int r, auto& c) {
                             const Shape sh{1, ns[std::size_t(r)], 2, 8, 8, 3};
                             return make_plan<P<schedule::Auto>, float>(sh, {slopes.data()}, c, &plans[std::size_t(r)]);
                           }),
                  Status::kSuccess));
    for (int r = 0; r < 3; ++r) {
      CHECK(plans[std::size_t(r)].valid());
      CHECK(!plans[std::size_t(r)].single_hop());
      CHECK(plans[std::size_t(r)].rank() == r);
      CHECK(plans[std::size_t(r)].size() == 3);
      CHECK(plans[std::size_t(r)].shape().N == ns[std::size_t(r)]);
      CHECK(plans[std::size_t(r)].total_tokens() == 100);
    }
    CHECK(plans[0].token_offset() == 0);
    CHECK(plans[1].token_offset() == 40);
    CHECK(plans[2].token_offset() == 50);
  }
}

TEST_CASE("make_plan: the same status on every rank; N may differ, nothing else may") {
  using PA = P<schedule::Auto>;
  const std::vector<float> slopes = tnl_slopes(2);
  constexpr int R = 3;
  auto shape = [](int r) { return Shape{2, 10 + 7 * r, 2, 8, 8, R}; };
  auto plan_all = [&](auto&& tweak) {
    std::vector<Plan<PA, float>> plans(R);
    return on_ranks(R, [&](int r, auto& c) {
      Shape s = shape(r);
      return tweak(r, s, c, plans[std::size_t(r)]);
    });
  };
  auto plain = [&](int, Shape& s, auto& c, Plan<PA, float>& pl) {
    return make_plan<PA, float>(s, {slopes.data()}, c, &pl);
  };
  CHECK(all_are(plan_all(plain), Status::kSuccess));
  // D differs on one rank.
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) {
                  if (r == 1) s.D = 16;
                  return plain(r, s, c, pl);
                }),
                Status::kPeerMismatch));
  // B differs on the last rank, E on the first.
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) {
                  if (r == 2) s.B = 1;
                  if (r == 0) s.E = 16;
                  return plain(r, s, c, pl);
                }),
                Status::kPeerMismatch));
  // Another policy, another element type.
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) -> Status {
                  if (r == 1) {
                    Plan<P<schedule::Chain>, float> other;
                    return make_plan<P<schedule::Chain>, float>(s, {slopes.data()}, c, &other);
                  }
                  return plain(r, s, c, pl);
                }),
                Status::kPeerMismatch));
  // Truncated over another fallback (different messages): its name differs, so the plans do.
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) -> Status {
                  if (r == 2) {
                    Plan<P<schedule::Truncated<schedule::Chain>>, float> other;
                    return make_plan<P<schedule::Truncated<schedule::Chain>>, float>(s, {slopes.data()}, c, &other);
                  }
                  return plain(r, s, c, pl);
                }),
                Status::kPeerMismatch));
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) -> Status {
                  if (r == 0) {
                    Plan<PA, bf16> other;
                    return make_plan<PA, bf16>(s, {slopes.data()}, c, &other);
                  }
                  return plain(r, s, c, pl);
                }),
                Status::kPeerMismatch));
  // A rank refuses on its own: its status is everybody's (the lowest refusing rank's).
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) {
                  if (r == 1) s.B = 0;
                  return plain(r, s, c, pl);
                }),
                Status::kInvalidShape));
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) {
                  if (r == 2) s.R = 2;
                  return plain(r, s, c, pl);
                }),
                Status::kSpSizeMismatch));
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) {
                  if (r == 2) s.E = 2000;  // beyond the host backend's 1024
                  if (r == 1) s.N = -1;  // (N = 0 is an empty shard: accepted)
                  return plain(r, s, c, pl);
                }),
                Status::kInvalidShape));
  CHECK(all_are(plan_all([&](int r, Shape& s, auto& c, Plan<PA, float>& pl) {
                  return r == 0 ? make_plan<PA, float>(s, {slopes.data()}, c, nullptr) : plain(r, s, c, pl);
                }),
                Status::kNullPointer));
  // Decay parameters never fail a plan: without slopes it just does not take the single hop.
  std::vector<Plan<PA, float>> plans(R);
  CHECK(all_are(on_ranks(R,
                         [&](int r, auto& c) {
                           return make_plan<PA, float>(Shape{1, 100, 2, 8, 8, R}, {}, c, &plans[std::size_t(r)]);
                         }),
                Status::kSuccess));
  for (const auto& pl : plans) CHECK(!pl.single_hop());
}

TEST_CASE("plan: workspace size, one rank (HostSingle), and calls that do not match the plan") {
  using PC = P<schedule::Chain>;
  comm::HostSingle single;
  const Shape s{2, 30, 2, 8, 8, 1};
  Plan<PC, float> plan;
  REQUIRE(make_plan<PC, float>(s, {nullptr}, single, &plan) == Status::kSuccess);
  CHECK(plan.workspace_size() == workspace_size<PC, float>(s, single));
  CHECK(plan.workspace_sizes().reserve == workspace_sizes<PC, float>(s, single).reserve);
  CHECK(!plan.single_hop());
  CHECK(!Plan<PC, float>{}.valid());

  ProblemSpec spec;
  spec.B = 2, spec.N = 30, spec.H = 2, spec.D = 8, spec.E = 8, spec.R = 1, spec.seed = 6700;
  GlobalProblem<float> p(spec);
  AlignedVec<unsigned char> ws(plan.workspace_size());
  ForwardArgs<float, decay::PerHead> a{p.shape(), p.view_q(0), p.view_k(0), p.view_v(0), p.view_o(0), 1.f,
                                       p.decay_params<decay::PerHead>(0)};
  const Workspace w{ws.data(), ws.size()};
  CHECK(can_implement(plan, a, single, w) == Status::kSuccess);
  ForwardArgs<float, decay::PerHead> b = a;
  b.shape.N = 29;
  CHECK(can_implement(plan, b, single, w) == Status::kPlanMismatch);
  CHECK(forward(plan, b, single, w) == Status::kPlanMismatch);
  CHECK(forward(Plan<PC, float>{}, a, single, w) == Status::kPlanMismatch);
  CHECK(all_bytes(p.o_buf, kNaNByte));
  CHECK(forward(plan, a, single, w) == Status::kSuccess);
}

TEST_CASE("plan: slopes weakened after a single-hop plan are refused on every rank (kPlanMismatch)") {
  using PA = P<schedule::Auto>;
  ProblemSpec s = uneven({40, 35, 50}, 6800);
  GlobalProblem<float> p(s);
  p.slopes = {1.f, 2.f};
  const std::vector<float> weak = {0.01f, 2.f};
  std::vector<Plan<PA, float>> plans(3);
  std::vector<AlignedVec<unsigned char>> ws(3);
  for (int r = 0; r < 3; ++r) ws[std::size_t(r)].resize(workspace_size<PA, float>(p.shape_of(r), comm::HostSingle{}));
  comm::HostGroup group(3, std::chrono::seconds(20));
  std::vector<Status> made(3), fwd(3);
  std::vector<std::thread> th;
  for (int r = 0; r < 3; ++r)
    th.emplace_back([&, r] {
      auto c = group.comm(r);
      auto& pl = plans[std::size_t(r)];
      made[std::size_t(r)] = make_plan<PA, float>(p.shape_of(r), {p.slopes.data()}, c, &pl);
      ForwardArgs<float, decay::PerHead> a{p.shape_of(r), p.view_q(r), p.view_k(r), p.view_v(r), p.view_o(r), 1.f,
                                           {r == 1 ? weak.data() : p.slopes.data()}};
      fwd[std::size_t(r)] = forward(pl, a, c, Workspace{ws[std::size_t(r)].data(), ws[std::size_t(r)].size()});
    });
  for (auto& t : th) t.join();
  CHECK(all_are(made, Status::kSuccess));
  CHECK(plans[0].single_hop());
  CHECK(all_are(fwd, Status::kPlanMismatch));
  CHECK(all_bytes(p.o_buf, kNaNByte));
}
