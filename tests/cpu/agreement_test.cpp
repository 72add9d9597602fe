// Agreed refusals (issue 10, item 2): a call refused on ONE rank of an SP group is refused on
// every rank with the same status, no rank waits for ever, nothing is written, and the next
// valid call on the same communicator is correct on every rank (no stale or shifted message).
// Every kind of check, on the first, a middle and the last rank, R = 2..4, Chain, AllGather and
// Auto, with and without a plan. Ranks are threads over ONE comm::HostGroup (with a timeout, so
// that a deadlock fails the test instead of hanging it).
//
// The same cases also run over `Deferred`, the host backend in the role of the CUDA backend: the
// verdict is not read on the host but recorded in the workspace header, the ranks that passed
// their checks run the whole call with their output writes skipped, and the refusing rank runs
// the call's messages from its workspace (driver.hpp's refuse()). That is the path device
// communicators take, run here on the CPU.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

/// The host backend in the role of a device backend (see the file comment).
struct Deferred : backend::host::Backend {
  using Base = backend::host::Backend;
  static constexpr bool kSyncVerdict = false;
  static std::uint32_t slot(const Ctx& c) { return c.lay.header[driver::kDeviceStatus]; }
  /// As kernel::Verdict: the lowest refusing rank's code, else kPeerMismatch where the ranks'
  /// layout modes (word 1) differ, shifted, into the slot; kSuccess.
  static Status verdict(const float* all, int R, std::uint32_t* s, host_stream h) {
    Status v = Base::verdict(all, R, nullptr, h);
    for (int j = 0; j < R && v == Status::kSuccess; ++j)
      if (all[std::size_t(j) * schedule::kStatusFloats + 1] != all[1]) v = Status::kPeerMismatch;
    *s = std::uint32_t(int(v)) << driver::kVerdictShift;
    return Status::kSuccess;
  }
  /// As the CUDA backend: the slot read on the host, and "staging" copies (host memory here).
  static Status read_verdict(const std::uint32_t* header, host_stream) {
    return driver::decode_verdict(header[driver::kDeviceStatus]);
  }
  static Status to_device(float* d, const float* src, std::size_t n, host_stream) {
    std::copy(src, src + n, d);
    return Status::kSuccess;
  }
  static Status to_host(float* d, const float* src, std::size_t n, host_stream) {
    std::copy(src, src + n, d);
    return Status::kSuccess;
  }
  template <class Policy, class T>
  static Status forward_outputs(const ForwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    return slot(c) ? Status::kSuccess : Base::forward_outputs<Policy>(a, P, c);
  }
  template <class Policy, class T>
  static Status backward_outputs(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, const float* G,
                                 const float* s_final, float* dc_total, Ctx& c) {
    return slot(c) ? Status::kSuccess : Base::backward_outputs<Policy>(a, P, G, s_final, dc_total, c);
  }
  template <class Policy, class T>
  static Status add_dg_suffix(const BackwardArgs<T, typename Policy::Decay>& a, const float* suffix, Ctx& c) {
    return slot(c) ? Status::kSuccess : Base::add_dg_suffix<Policy>(a, suffix, c);
  }
  static Status mark_forwarded(const Shape& s, Ctx& c) { return slot(c) ? Status::kSuccess : Base::mark_forwarded(s, c); }
};

/// Deferred without empty shards: a backend in the CUDA backend's place for N = 0 (refused with
/// kUnsupportedFeature; its regions are never carved for N < 1, as the CUDA backend's segment
/// split would divide by zero).
struct NoEmpty : Deferred {
  static constexpr bool kEmptyShards = false;
  template <class Policy, class T>
  static Regions carve(const Shape& s, Carver& reserve, Carver& scratch) {
    if (s.N < 1) std::abort();
    return Deferred::carve<Policy, T>(s, reserve, scratch);
  }
};

enum class Pass { kForward, kBackward };
enum class Where { kAny, kFirst, kLast };

/// One kind of bad input: applied to the arguments of one rank.
struct Kind {
  std::string name;
  Pass pass;
  Status want;               // without a plan
  Status want_with_plan;     // with one (a changed shape no longer matches the plan)
  Where where = Where::kAny;
  bool needs_workspace = false;  // breaks the refusing rank's workspace: device-style groups
                                 // cannot take part without one (README "Limits")
};

/// R ranks over one HostGroup, with their workspaces (and plans), calling forward/backward with
/// Policy through the public API (Backend = host) or the driver (Backend = Deferred).
template <class Policy, class Backend>
struct Group {
  using Decay = typename Policy::Decay;
  using Fwd = ForwardArgs<float, Decay>;
  using Bwd = BackwardArgs<float, Decay>;
  GlobalProblem<float>& p;
  const int R;
  const bool use_plan;
  comm::HostGroup group;
  std::vector<AlignedVec<unsigned char>> ws;
  std::vector<Plan<Policy, float>> plans;

  Group(GlobalProblem<float>& prob, bool plan)
      : p(prob), R(prob.spec.R), use_plan(plan), group(prob.spec.R, std::chrono::seconds(20)) {
    ws.resize(std::size_t(R));
    plans.resize(std::size_t(R));
    for (int r = 0; r < R; ++r) {
      // The test backend's own layout (a device-style backend carves the geometry staging too).
      ws[std::size_t(r)].resize(driver::sizes<Policy, Backend, float>(p.shape_of(r)).single());
      poison(ws[std::size_t(r)]);
    }
    if (use_plan) {
      const auto st = each([&](int r, auto& c) {
        return make_plan<Policy, float>(p.shape_of(r), p.template decay_params<Decay>(r), c, &plans[std::size_t(r)]);
      });
      for (Status s : st) REQUIRE(s == Status::kSuccess);
    }
  }
  /// f(r, comm) on every rank at once (threads); the statuses.
  template <class F>
  std::vector<Status> each(F&& f) {
    return on_ranks(group, f);
  }
  Fwd fwd_args(int r) {
    Fwd a{p.shape_of(r), p.view_q(r), p.view_k(r), p.view_v(r), p.view_o(r), p.spec.scale,
          p.template decay_params<Decay>(r)};
    if (r == 0) a.initial_state = p.init.data();
    if (r == R - 1) a.final_state = p.final_buf.data();
    return a;
  }
  Bwd bwd_args(int r) {
    Bwd a{p.shape_of(r), p.view_q(r), p.view_k(r), p.view_v(r), p.view_dout(r), p.view_dq(r), p.view_dk(r),
          p.view_dv(r), p.spec.scale, p.template decay_params<Decay>(r)};
    if constexpr (Decay::kHasGradient) a.dg = p.view_dg(r);
    if (r == R - 1) a.d_final_state = p.dfinal.data();
    if (r == 0) a.d_initial_state = p.dinit_buf.data();
    return a;
  }
  Workspace wsp(int r) { return {ws[std::size_t(r)].data(), ws[std::size_t(r)].size()}; }

  template <class Args, class C>
  Status call(int r, const Args& a, C& c, Workspace w) {
    const Plan<Policy, float>* plan = use_plan ? &plans[std::size_t(r)] : nullptr;
    constexpr bool kFwd = std::is_same_v<Args, Fwd>;
    if constexpr (std::is_same_v<Backend, backend::host::Backend>) {
      if constexpr (kFwd) return plan ? forward(*plan, a, c, w) : forward<Policy>(a, c, w);
      else return plan ? backward(*plan, a, c, w) : backward<Policy>(a, c, w);
    } else {
      if constexpr (kFwd) return driver::forward<Policy, Backend>(plan, a, c, w, host_stream{});
      else return driver::backward<Policy, Backend>(plan, a, c, w, host_stream{});
    }
  }
  /// Forward (or backward) on every rank; `bad(r, args, workspace)` may change one rank's.
  template <class Bad = std::nullptr_t>
  std::vector<Status> forward_all(Bad bad = nullptr) {
    return each([&](int r, auto& c) {
      Fwd a = fwd_args(r);
      Workspace w = wsp(r);
      if constexpr (!std::is_same_v<Bad, std::nullptr_t>) bad(r, a, w);
      return call(r, a, c, w);
    });
  }
  template <class Bad = std::nullptr_t>
  std::vector<Status> backward_all(Bad bad = nullptr) {
    return each([&](int r, auto& c) {
      Bwd a = bwd_args(r);
      Workspace w = wsp(r);
      if constexpr (!std::is_same_v<Bad, std::nullptr_t>) bad(r, a, w);
      return call(r, a, c, w);
    });
  }
  /// The verdict recorded in each rank's workspace header (Deferred).
  std::vector<Status> deferred() const {
    std::vector<Status> v;
    for (const auto& w : ws) {
      std::uint32_t s;
      std::memcpy(&s, w.data() + driver::kDeviceStatus * sizeof(std::uint32_t), sizeof s);
      v.push_back(driver::decode_verdict(s));
    }
    return v;
  }
};

bool all_eq(const std::vector<Status>& v, Status want) {
  for (Status s : v)
    if (s != want) return false;
  return true;
}

/// Statuses the ranks end a call with. Host backend: every rank returns `want`. Deferred: the
/// refusing rank returns `want`, the others kSuccess, and every rank's recorded verdict is `want`.
template <class G>
void check_agreed(const G& g, const std::vector<Status>& got, int bad, Status want, bool deferred) {
  for (int r = 0; r < g.R; ++r) {
    CAPTURE(r);
    const Status s = got[std::size_t(r)];
    if (!deferred || r == bad) CHECK(s == want);
    else CHECK(s == Status::kSuccess);
    if (deferred) CHECK(g.deferred()[std::size_t(r)] == want);
  }
}

/// One case: `kind` on rank `bad`, then the next valid call(s), checked against the reference.
template <class Policy, class Backend>
void run_case(const ProblemSpec& spec, const std::vector<float>& slopes, bool plan, const Kind& kind, int bad) {
  using Decay = typename Policy::Decay;
  constexpr bool kDeferred = !Backend::kSyncVerdict;
  GlobalProblem<float> p(spec);
  p.slopes = slopes;
  p.pack();
  Group<Policy, Backend> g(p, plan);
  const int R = spec.R;
  const Status want = plan ? kind.want_with_plan : kind.want;
  // Per-rank copies for the decay kinds, so that only rank `bad` sees them.
  std::vector<float> bad_slopes = p.slopes;
  bad_slopes[1] = kind.name == "weak slope after a single-hop plan" ? 0.01f : -0.5f;
  AlignedVec<float> bad_gates(p.g_buf.begin(), p.g_buf.end());
  bad_gates[p.lg.offset(0, p.t0(bad) + p.n_of(bad) - 1, 1)] = 0.25f;  // the segment's last gate > 0
  auto mutate = [&](auto& a, Workspace& w) {
    const std::string& n = kind.name;
    if (n == "null q") a.q.ptr = nullptr;
    if (n == "misaligned o") a.o.ptr += 1;
    if (n == "o over q") a.o.ptr = const_cast<float*>(a.q.ptr);
    if (n == "initial state over o") a.initial_state = a.o.ptr;
    if (n == "final state over q") a.final_state = const_cast<float*>(a.q.ptr);
    if (n == "negative slope" || n == "weak slope after a single-hop plan") {
      if constexpr (std::is_same_v<Decay, decay::PerHead>) a.decay.slopes = bad_slopes.data();
    }
    if (n == "positive gate") {
      if constexpr (std::is_same_v<Decay, decay::Gate>) a.decay.g = p.lg.cview(bad_gates.data(), p.t0(bad));
    }
    if (n == "workspace one byte short") w.bytes -= 1;
    if (n == "null workspace") w.ptr = nullptr;
    if (n == "R differs") a.shape.R = R + 1;
    if (n == "N = -1") a.shape.N = -1;
    if (n == "N = 0") a.shape.N = 0;
  };
  auto mutate_bwd = [&](auto& a, Workspace& w) {
    const std::string& n = kind.name;
    if (n == "null dq") a.dq.ptr = nullptr;
    if (n == "dk over dq") a.dk = a.dq;
    if (n == "d_initial_state over dq") a.d_initial_state = a.dq.ptr;
    if (n == "misaligned d_final_state") a.d_final_state += 1;
    if (n == "null dg") a.dg.ptr = nullptr;
    if (n == "N = 0") a.shape.N = 0;
    if (n == "negative slope") {
      if constexpr (std::is_same_v<Decay, decay::PerHead>) a.decay.slopes = bad_slopes.data();
    }
    if (n == "positive gate") {
      if constexpr (std::is_same_v<Decay, decay::Gate>) a.decay.g = p.lg.cview(bad_gates.data(), p.t0(bad));
    }
    if (n == "workspace one byte short") w.bytes -= 1;
  };
  const auto inputs = [&] {
    return std::vector<std::vector<unsigned char>>{snapshot(p.q_buf), snapshot(p.k_buf), snapshot(p.v_buf),
                                                   snapshot(p.dout_buf), snapshot(p.g_buf), snapshot(p.init),
                                                   snapshot(p.dfinal)};
  };
  const auto in0 = inputs();
  std::vector<Status> got;
  if (kind.pass == Pass::kForward) {
    p.poison_outputs();
    got = g.forward_all([&](int r, auto& a, Workspace& w) {
      if (r == bad) mutate(a, w);
    });
    // Nothing written anywhere: every output still holds the poison.
    CHECK(all_bytes(p.o_buf, kNaNByte));
    CHECK(all_bytes(p.final_buf, kNaNByte));
  } else {
    REQUIRE(all_eq(g.forward_all(), Status::kSuccess));
    const auto o = snapshot(p.o_buf), fin = snapshot(p.final_buf);
    if (kind.name == "not forwarded") std::memset(g.ws[std::size_t(bad)].data(), 0, 16);  // the forward's mark
    got = g.backward_all([&](int r, auto& a, Workspace& w) {
      if (r == bad) mutate_bwd(a, w);
    });
    CHECK(unchanged(p.o_buf, o));
    CHECK(unchanged(p.final_buf, fin));
    for (auto* b : {&p.dq_buf, &p.dk_buf, &p.dv_buf}) CHECK(all_bytes(*b, kNaNByte));
    CHECK(all_bytes(p.dg_buf, kNaNByte));
    CHECK(all_bytes(p.dinit_buf, kNaNByte));
  }
  check_agreed(g, got, bad, want, kDeferred);
  CHECK(inputs() == in0);
  REQUIRE(!g.group.broken());  // nobody waited for a peer that never came
  // The next valid calls on the same group, on new data (a message left over from the refused
  // call would carry the old data): correct on every rank.
  for (float& x : kind.pass == Pass::kForward || kind.name == "not forwarded" ? p.v : p.dout) x = -2.f * x;
  p.pack();
  if (kind.pass == Pass::kForward || kind.name == "not forwarded") {
    p.poison_outputs();
    CHECK(all_eq(g.forward_all(), Status::kSuccess));
  }
  CHECK(all_eq(g.backward_all(), Status::kSuccess));
  if (kDeferred) CHECK(all_eq(g.deferred(), Status::kSuccess));
  check_against_reference<Decay>(p, run_reference<Decay>(p), expect_for<float>());
}

std::vector<Kind> kinds_for(bool per_head, bool gate, bool single_hop_plan) {
  const Status M = Status::kPlanMismatch;
  std::vector<Kind> k = {
      {"null q", Pass::kForward, Status::kNullPointer, Status::kNullPointer},
      {"misaligned o", Pass::kForward, Status::kMisaligned, Status::kMisaligned},
      {"o over q", Pass::kForward, Status::kOverlap, Status::kOverlap},
      {"initial state over o", Pass::kForward, Status::kOverlap, Status::kOverlap, Where::kFirst},
      {"final state over q", Pass::kForward, Status::kOverlap, Status::kOverlap, Where::kLast},
      {"workspace one byte short", Pass::kForward, Status::kWorkspaceTooSmall, Status::kWorkspaceTooSmall, Where::kAny, true},
      {"null workspace", Pass::kForward, Status::kNullPointer, Status::kNullPointer, Where::kAny, true},
      {"R differs", Pass::kForward, Status::kSpSizeMismatch, M},
      {"N = -1", Pass::kForward, Status::kInvalidShape, M},
      {"null dq", Pass::kBackward, Status::kNullPointer, Status::kNullPointer},
      {"dk over dq", Pass::kBackward, Status::kOverlap, Status::kOverlap},
      {"d_initial_state over dq", Pass::kBackward, Status::kOverlap, Status::kOverlap, Where::kFirst},
      {"misaligned d_final_state", Pass::kBackward, Status::kMisaligned, Status::kMisaligned, Where::kLast},
      {"not forwarded", Pass::kBackward, Status::kNotForwarded, Status::kNotForwarded},
      {"workspace one byte short", Pass::kBackward, Status::kWorkspaceTooSmall, Status::kWorkspaceTooSmall, Where::kAny, true},
  };
  if (per_head) {
    k.push_back({"negative slope", Pass::kForward, Status::kInvalidDecay, Status::kInvalidDecay});
    k.push_back({"negative slope", Pass::kBackward, Status::kInvalidDecay, Status::kInvalidDecay});
  }
  if (single_hop_plan) k.push_back({"weak slope after a single-hop plan", Pass::kForward, M, M});
  if (gate) {
    k.push_back({"positive gate", Pass::kForward, Status::kInvalidDecay, Status::kInvalidDecay});
    k.push_back({"positive gate", Pass::kBackward, Status::kInvalidDecay, Status::kInvalidDecay});
    k.push_back({"null dg", Pass::kBackward, Status::kNullPointer, Status::kNullPointer});
  }
  return k;
}

/// Every kind, on the first, a middle and the last rank, R = 2..4, with and without a plan.
template <class Policy, class Backend>
void every_kind(std::uint32_t seed, const std::vector<float>& slopes, bool strong) {
  using Decay = typename Policy::Decay;
  constexpr bool kDeferred = !Backend::kSyncVerdict;
  for (int R = 2; R <= 4; ++R) {
    ProblemSpec s;
    s.B = 1, s.H = 2, s.D = 8, s.E = 8, s.R = R, s.scale = 0.5f, s.seed = seed + std::uint32_t(R);
    s.rank_N = std::vector<index_t>{19, 23, 20, 25};  // uneven; s N > 16.64 for slopes >= 1
    s.rank_N.resize(std::size_t(R));
    s.N = s.rank_N[0];
    for (bool plan : {false, true}) {
      const bool hop_plan = plan && strong && schedule::uses_group_hop<typename Policy::Schedule>::value;
      for (const Kind& k : kinds_for(std::is_same_v<Decay, decay::PerHead>, std::is_same_v<Decay, decay::Gate>, hop_plan)) {
        if (kDeferred && k.needs_workspace) continue;
        for (int bad : {0, R / 2, R - 1}) {
          if (bad == R / 2 && (R < 3)) continue;  // no middle rank
          if ((k.where == Where::kFirst && bad != 0) || (k.where == Where::kLast && bad != R - 1)) continue;
          INFO("R=", R, " plan=", plan, " refusing rank ", bad, ": ", k.name,
               k.pass == Pass::kForward ? " (forward)" : " (backward)", ", ", describe<Policy>());
          run_case<Policy, Backend>(s, slopes, plan, k, bad);
        }
      }
    }
  }
}

using Host = backend::host::Backend;
template <class Schedule>
using Head = P16<decay::PerHead, Schedule>;
template <class Schedule>
using Gated = P16<decay::Gate, Schedule>;
const std::vector<float> kStrong = {1.f, 2.f};  // every rank's s N > 16.64: a plan takes Auto's single hop

}  // namespace

TEST_CASE("agreement: a refusal on one rank is every rank's, nothing written, next call correct (Chain)") {
  every_kind<Head<schedule::Chain>, Host>(4000, kStrong, true);
  every_kind<Gated<schedule::Chain>, Host>(4100, kStrong, false);
}
TEST_CASE("agreement: a refusal on one rank is every rank's, nothing written, next call correct (AllGather)") {
  every_kind<Head<schedule::AllGather>, Host>(4200, kStrong, true);
  every_kind<Gated<schedule::AllGather>, Host>(4300, kStrong, false);
}
TEST_CASE("agreement: a refusal on one rank is every rank's, nothing written, next call correct (Auto)") {
  every_kind<Head<schedule::Auto>, Host>(4400, kStrong, true);                // plan: the single hop
  every_kind<Head<schedule::Auto>, Host>(4450, tnl_slopes(2), false);         // plan: all-gather
  every_kind<Gated<schedule::Auto>, Host>(4500, kStrong, false);
  every_kind<Head<schedule::Truncated<schedule::Chain>>, Host>(4550, kStrong, true);
}

TEST_CASE("agreement, device-style verdict (deferred): every rank records the refusal, writes nothing, next call correct") {
  every_kind<Head<schedule::Chain>, Deferred>(4600, kStrong, true);
  every_kind<Head<schedule::AllGather>, Deferred>(4700, kStrong, true);
  every_kind<Head<schedule::Auto>, Deferred>(4800, kStrong, true);
  every_kind<Gated<schedule::Chain>, Deferred>(4900, kStrong, false);
  every_kind<Gated<schedule::Auto>, Deferred>(5000, kStrong, false);
}

TEST_CASE("agreement: N = 0 on a backend without empty shards (the CUDA backend's case) is kUnsupportedFeature everywhere") {
  // Forward and backward without a plan: the empty rank refuses, its peers record the verdict,
  // nothing is written, the next call is correct.
  for (int R = 2; R <= 4; ++R) {
    ProblemSpec s;
    s.B = 1, s.H = 2, s.D = 8, s.E = 8, s.R = R, s.scale = 0.5f, s.seed = 5200 + std::uint32_t(R);
    s.rank_N = std::vector<index_t>{19, 23, 20, 25};
    s.rank_N.resize(std::size_t(R));
    s.N = s.rank_N[0];
    for (int bad : {0, R / 2, R - 1}) {
      INFO("R=", R, " empty rank ", bad);
      run_case<Head<schedule::Chain>, NoEmpty>(
          s, kStrong, false, {"N = 0", Pass::kForward, Status::kUnsupportedFeature, Status::kPlanMismatch}, bad);
      run_case<Gated<schedule::Auto>, NoEmpty>(
          s, kStrong, false, {"N = 0", Pass::kBackward, Status::kUnsupportedFeature, Status::kPlanMismatch}, bad);
    }
  }
  // make_plan's local status (the one every rank then agrees on), can_implement and the
  // workspace size, which is that of N = 1 (the host backend's own is that of N = 0).
  using P = Head<schedule::Chain>;
  const Shape empty{1, 0, 2, 8, 8, 1};
  Plan<P, float> plan;
  CHECK(lasp::detail::PlanAccess::local_status<P, NoEmpty, float>(empty, 0, 1, &plan) == Status::kUnsupportedFeature);
  CHECK(lasp::detail::PlanAccess::local_status<P, Host, float>(empty, 0, 1, &plan) == Status::kSuccess);
  Shape one = empty;
  one.N = 1;
  CHECK(driver::sizes<P, NoEmpty, float>(empty).single() == driver::sizes<P, NoEmpty, float>(one).single());
  AlignedVec<unsigned char> ws(driver::sizes<P, NoEmpty, float>(empty).single());
  std::vector<float> slopes = kStrong;
  const auto none = token_major<const float>(nullptr, 0, 2, 8);  // N = 0: null token tensors
  ForwardArgs<float, decay::PerHead> fa{empty, none, none, none, token_major<float>(nullptr, 0, 2, 8), 0.5f, {slopes.data()}};
  comm::HostSingle single;
  CHECK(driver::can_implement_forward<P, NoEmpty>(fa, single, Workspace{ws.data(), ws.size()}) == Status::kUnsupportedFeature);
  CHECK(driver::can_implement_forward<P, Host>(fa, single, Workspace{ws.data(), ws.size()}) == Status::kSuccess);
}

// The example: with Chain, a bad gate on rank 1 used to leave rank 0's message queued
// and the NEXT, valid step gave rank 1 a silently wrong output.
TEST_CASE("agreement: issue 10 example (R=2, bad gate on rank 1, Chain): refused on both, next step exact") {
  ProblemSpec s;
  s.B = 1, s.N = 40, s.H = 2, s.D = 8, s.E = 8, s.R = 2, s.seed = 5100;
  run_case<Gated<schedule::Chain>, Host>(s, tnl_slopes(2), false,
                                         {"positive gate", Pass::kForward, Status::kInvalidDecay, Status::kInvalidDecay}, 1);
  run_case<Gated<schedule::AllGather>, Host>(
      s, tnl_slopes(2), false, {"positive gate", Pass::kForward, Status::kInvalidDecay, Status::kInvalidDecay}, 1);
}
