#pragma once
// Runs lasp's host backend over the R ranks of a GlobalProblem: one thread per rank, each with
// its comm::HostGroup communicator (or comm::HostSingle for R = 1), forward then backward.
// Plain C++17 + threads, no test framework.
#include <chrono>
#include <thread>
#include <vector>
#include <lasp/lasp.hpp>
#include "buffer.hpp"
#include "problem.hpp"

namespace lasp_test {

struct RunOptions {
  bool backward = true;
  /// Make a lasp::Plan on every rank first (make_plan, collective) and call forward/backward
  /// with it; RunResult::plan holds make_plan's statuses.
  bool plan = false;
  /// comm::HostGroup's receive timeout: a rank left waiting (a deadlock) turns into kCommError on
  /// every rank instead of a hung test.
  std::chrono::milliseconds timeout{20000};
  bool want_d_initial = true;   // pass d_initial_state (rank 0)
  /// Give EVERY rank state pointers. Ranks that do not own them get decoys: initial_state and
  /// d_final_state full of NaN (must not be read), final_state and d_initial_state full of a
  /// sentinel (must not be written). RunResult::decoys_intact says whether they were respected.
  bool decoy_states = false;
  /// Split workspaces: each rank keeps a reserve of workspace_sizes().reserve bytes from forward
  /// to backward, and forward and backward each get a DIFFERENT scratch region (poisoned), as
  /// when layers share one scratch that other work reuses between the calls.
  bool split_workspace = false;
};

struct RunResult {
  std::vector<lasp::Status> plan, fwd, bwd;  // per rank (plan: empty without RunOptions::plan)
  bool decoys_intact = true;
  double fwd_ms = 0, bwd_ms = 0;       // wall time of the forward / backward phase over all ranks
  bool ok() const {
    for (auto s : plan)
      if (s != lasp::Status::kSuccess) return false;
    for (auto s : fwd)
      if (s != lasp::Status::kSuccess) return false;
    for (auto s : bwd)
      if (s != lasp::Status::kSuccess) return false;
    return true;
  }
  /// First non-success status (for messages), or kSuccess.
  lasp::Status first_error() const {
    for (auto s : plan)
      if (s != lasp::Status::kSuccess) return s;
    for (auto s : fwd)
      if (s != lasp::Status::kSuccess) return s;
    for (auto s : bwd)
      if (s != lasp::Status::kSuccess) return s;
    return lasp::Status::kSuccess;
  }
};

namespace detail {
template <class F>
double run_threads(int R, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> th;
  th.reserve(std::size_t(R));
  for (int r = 0; r < R; ++r) th.emplace_back([&f, r] { f(r); });
  for (auto& t : th) t.join();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace detail

/// f(r, comm) on every rank of `group` at once (one thread each); the statuses, by rank.
template <class F>
std::vector<lasp::Status> on_ranks(lasp::comm::HostGroup& group, F&& f) {
  const int R = group.size();
  std::vector<lasp::Status> st(std::size_t(R), lasp::Status::kInternalError);
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      auto c = group.comm(r);
      st[std::size_t(r)] = f(r, c);
    });
  for (auto& t : th) t.join();
  return st;
}
/// Are all statuses `want`?
inline bool all_are(const std::vector<lasp::Status>& v, lasp::Status want) {
  for (lasp::Status s : v)
    if (s != want) return false;
  return true;
}

namespace detail {
/// The body of run_host / run_host_single; `comm_of(r)` gives rank r's communicator.
template <class Policy, class Elem, class CommOf>
RunResult run_ranks(GlobalProblem<Elem>& p, const RunOptions& opt, CommOf&& comm_of) {
  using Decay = typename Policy::Decay;
  const int R = p.spec.R;
  const std::size_t nst = p.final_buf.size();
  p.poison_outputs();
  RunResult res;
  res.fwd.assign(std::size_t(R), lasp::Status::kInternalError);
  res.bwd.assign(std::size_t(R), opt.backward ? lasp::Status::kInternalError : lasp::Status::kSuccess);
  if (opt.plan) res.plan.assign(std::size_t(R), lasp::Status::kInternalError);
  std::vector<lasp::Plan<Policy, Elem>> plans(static_cast<std::size_t>(R));

  AlignedVec<float> decoy_in(nst), decoy_out(nst * std::size_t(R));
  poison(decoy_in);
  fill_bytes(decoy_out, kSentinelByte);
  auto decoy_out_of = [&](int r) { return decoy_out.data() + std::size_t(r) * nst; };

  std::vector<AlignedVec<unsigned char>> ws(static_cast<std::size_t>(R)), scratch_f(ws.size()), scratch_b(ws.size());
  for (int r = 0; r < R; ++r) {
    const lasp::WorkspaceSizes z = lasp::workspace_sizes<Policy, Elem>(p.shape_of(r), comm_of(r));
    ws[std::size_t(r)].resize(opt.split_workspace ? z.reserve : lasp::workspace_size<Policy, Elem>(p.shape_of(r), comm_of(r)));
    poison(ws[std::size_t(r)]);  // the library must not rely on a zeroed workspace
    if (opt.split_workspace) {
      scratch_f[std::size_t(r)].resize(z.scratch), scratch_b[std::size_t(r)].resize(z.scratch);
      poison(scratch_f[std::size_t(r)]), poison(scratch_b[std::size_t(r)]);
    }
  }
  auto workspace_of = [&](int r, bool forward) {
    auto& w = ws[std::size_t(r)];
    if (!opt.split_workspace) return lasp::Workspace{w.data(), w.size()};
    auto& sc = forward ? scratch_f[std::size_t(r)] : scratch_b[std::size_t(r)];
    return lasp::Workspace{w.data(), w.size(), sc.data(), sc.size()};
  };

  auto fwd = [&](int r) {
    const bool first = r == 0, last = r == R - 1;
    auto comm = comm_of(r);
    auto& plan = plans[std::size_t(r)];
    if (opt.plan) {
      res.plan[std::size_t(r)] =
          lasp::make_plan<Policy, Elem>(p.shape_of(r), p.template decay_params<Decay>(r), comm, &plan);
      if (res.plan[std::size_t(r)] != lasp::Status::kSuccess) return;
    }
    lasp::ForwardArgs<Elem, Decay> a{p.shape_of(r), p.view_q(r), p.view_k(r), p.view_v(r), p.view_o(r), p.spec.scale,
                                     p.template decay_params<Decay>(r)};
    if (p.spec.initial_state) a.initial_state = first ? p.init.data() : (opt.decoy_states ? decoy_in.data() : nullptr);
    if (p.spec.final_state) a.final_state = last ? p.final_buf.data() : (opt.decoy_states ? decoy_out_of(r) : nullptr);
    const lasp::Workspace wsp = workspace_of(r, true);
    res.fwd[std::size_t(r)] = opt.plan ? lasp::forward(plan, a, comm, wsp) : lasp::forward<Policy>(a, comm, wsp);
  };
  auto bwd = [&](int r) {
    const bool first = r == 0, last = r == R - 1;
    lasp::BackwardArgs<Elem, Decay> a{p.shape_of(r), p.view_q(r), p.view_k(r), p.view_v(r), p.view_dout(r),
                                      p.view_dq(r), p.view_dk(r), p.view_dv(r), p.spec.scale,
                                      p.template decay_params<Decay>(r)};
    if constexpr (Decay::kHasGradient) a.dg = p.view_dg(r);
    if (p.spec.final_state) a.d_final_state = last ? p.dfinal.data() : (opt.decoy_states ? decoy_in.data() : nullptr);
    if (opt.want_d_initial) a.d_initial_state = first ? p.dinit_buf.data() : (opt.decoy_states ? decoy_out_of(r) : nullptr);
    auto comm = comm_of(r);
    const lasp::Workspace wsp = workspace_of(r, false);
    res.bwd[std::size_t(r)] = opt.plan ? lasp::backward(plans[std::size_t(r)], a, comm, wsp)
                                       : lasp::backward<Policy>(a, comm, wsp);
  };

  res.fwd_ms = run_threads(R, fwd);
  if (opt.backward) res.bwd_ms = run_threads(R, bwd);
  res.decoys_intact = all_bytes(decoy_out, kSentinelByte);
  return res;
}
}  // namespace detail

/// Forward (and backward) of every rank through lasp::forward/backward with Policy: one thread
/// per rank with a comm::HostGroup of p.spec.R. Outputs land in p's output buffers, which are
/// poisoned (NaN) first; workspaces are poisoned too.
template <class Policy, class Elem>
RunResult run_host(GlobalProblem<Elem>& p, const RunOptions& opt = {}) {
  lasp::comm::HostGroup group(p.spec.R, opt.timeout);
  return detail::run_ranks<Policy>(p, opt, [&](int r) { return group.comm(r); });
}

/// The same with comm::HostSingle (p.spec.R must be 1).
template <class Policy, class Elem>
RunResult run_host_single(GlobalProblem<Elem>& p, const RunOptions& opt = {}) {
  return detail::run_ranks<Policy>(p, opt, [](int) { return lasp::comm::HostSingle{}; });
}

}  // namespace lasp_test
