// Agreed refusals over NCCL (driver.hpp, "Agreement"): a call refused by a host-side check on ONE
// rank returns that status there; every other rank returns kSuccess but writes no output, and
// cuda::deferred_status gives the same status on every rank. No rank hangs (the refusing rank
// still takes part in the call's messages from its own workspace), and the next valid call on
// the same communicators is correct everywhere. Chain, AllGather and Auto (with a plan that
// takes the single hop), refusing rank first and last. The CPU suite runs the same path over the
// host backend in the role of the CUDA backend (tests/cpu/agreement_test.cpp).
#include <functional>
#include "support.cuh"

using namespace lasp_test;
using lasp::Policy;
namespace decay = lasp::decay;
namespace schedule = lasp::schedule;

namespace {

template <class Elem>
struct AgreeOut {
  lasp::Status bad = lasp::Status::kInternalError, bad_deferred = lasp::Status::kInternalError;
  bool untouched = false;  // o and the final state still hold the poison after the refused call
  RankOut<Elem> next;      // the valid forward + backward that follows
};

/// Rank r: forward with `bad` applied to rank `bad_rank`'s arguments, then a valid forward +
/// backward, all on the same communicator and workspace.
/// comm, made, fail, wait: as on_ranks (support.cuh) hands them out.
template <class Policy, class Elem, class Comm, class Fail, class Wait>
AgreeOut<Elem> agree_rank(GlobalProblem<Elem>& p, int r, int bad_rank, Comm& comm, lasp::Status made, Fail&& fail,
                          Wait&& wait, Barrier& start, bool plan,
                          const std::function<void(lasp::ForwardArgs<Elem, typename Policy::Decay>&)>& bad) {
  using Decay = typename Policy::Decay;
  AgreeOut<Elem> out;
  RankOut<Elem>& nx = out.next;
  nx.make = made;
  nx.nccl_rank = comm.rank();
  nx.nccl_size = comm.size();
  DeviceProblem<Elem> dp(p);
  const lasp::Shape shape = p.shape_of(r);
  DeviceBuf<float> staging(lasp::plan_staging_floats(p.spec.R));
  lasp::Plan<Policy, Elem> pl;
  const std::size_t wsb = lasp::workspace_size<Policy, Elem>(shape, comm);
  DeviceBuf<unsigned char> ws(wsb);
  LASP_TEST_CUDA(cudaMemset(ws.ptr, 0xFF, wsb));
  const lasp::Workspace w{ws.ptr, wsb};
  cudaStream_t st;
  LASP_TEST_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  LASP_TEST_CUDA(cudaDeviceSynchronize());
  start.arrive_and_wait();
  if (nx.make == lasp::Status::kSuccess && plan)
    nx.make = lasp::make_plan<Policy, Elem>(shape, dp.template decay_params<Decay>(r), comm, staging.ptr, st, &pl);
  if (nx.make != lasp::Status::kSuccess) {
    fail();
    cudaStreamDestroy(st);
    return out;
  }
  auto fwd = [&](lasp::ForwardArgs<Elem, Decay>& a) {
    return plan ? lasp::forward(pl, a, comm, w, st) : lasp::forward<Policy>(a, comm, w, st);
  };
  {  // 1. The refused call.
    auto fa = dp.template forward_args<Decay>(r);
    if (r == bad_rank) bad(fa);
    out.bad = fwd(fa);
    nx.completed = wait(st);
    nx.aborted = !nx.completed;
    if (!nx.completed) {
      cudaStreamDestroy(st);
      return out;
    }
    out.bad_deferred = lasp::cuda::deferred_status(w, st);
    AlignedVec<Elem> o(p.o_buf.size());
    AlignedVec<float> fin(p.final_buf.size());
    dp.o.download(o);
    dp.fin.download(fin);
    out.untouched = all_bytes(o, kNaNByte) && all_bytes(fin, kNaNByte);
  }
  // 2. The next, valid call.
  auto fa = dp.template forward_args<Decay>(r);
  nx.fwd = fwd(fa);
  if (nx.fwd == lasp::Status::kSuccess) {
    auto ba = dp.template backward_args<Decay>(r);
    nx.bwd = plan ? lasp::backward(pl, ba, comm, w, st) : lasp::backward<Policy>(ba, comm, w, st);
  }
  if (nx.fwd != lasp::Status::kSuccess || nx.bwd != lasp::Status::kSuccess) fail();
  nx.completed = wait(st);
  nx.aborted = !nx.completed;
  if (nx.completed) nx.collect(dp, p, w, st);
  cudaStreamDestroy(st);
  return out;
}

/// Over the NCCL clique cq, or (cq == nullptr) R threads on one GPU (comm::DeviceGroup).
template <class Policy>
void agree_case(Clique* cq, int R, std::uint32_t seed, bool plan, int bad_rank, const char* what, lasp::Status want,
                const std::function<void(lasp::ForwardArgs<lasp::bf16, typename Policy::Decay>&)>& bad) {
  using Elem = lasp::bf16;
  if (cq) REQUIRE_MESSAGE(cq->alive(), "an earlier case of this test aborted the NCCL communicators");
  ProblemSpec s;
  s.B = 1, s.N = 200, s.H = 3, s.D = 64, s.E = 64, s.R = R, s.scale = 0.125f, s.seed = seed;
  GlobalProblem<Elem> p(s);
  p.slopes = {0.1f, 0.2f, 0.5f};  // s N >= 20: a plan of Auto takes the single hop
  std::vector<AgreeOut<Elem>> outs(static_cast<std::size_t>(R));
  Barrier start(R);
  on_ranks(cq, R, 0, [&](int r, auto& comm, lasp::Status made, auto&& fail, auto&& wait) {
    outs[std::size_t(r)] = agree_rank<Policy, Elem>(p, r, bad_rank, comm, made, fail, wait, start, plan, bad);
  });
  const std::string label = std::string(cq ? "" : "threads on 1 GPU: ") + describe_case<Policy, Elem>(s) + (plan ? " (plan)" : "") + ", rank " +
                            std::to_string(bad_rank) + ": " + what;
  INFO(label);
  std::vector<RankOut<Elem>> next;
  for (int r = 0; r < R; ++r) {
    CAPTURE(r);
    const AgreeOut<Elem>& o = outs[std::size_t(r)];
    CHECK(o.bad == (r == bad_rank ? want : lasp::Status::kSuccess));
    CHECK(o.bad_deferred == want);
    CHECK(o.untouched);
    next.push_back(o.next);
  }
  check_against_reference<Policy>(p, next, label + ", then a valid call");
}

template <class Policy>
void every_refusal(Clique* cq, int R, std::uint32_t seed, bool plan) {
  using A = lasp::ForwardArgs<lasp::bf16, typename Policy::Decay>;
  const lasp::Status shape_status = plan ? lasp::Status::kPlanMismatch : lasp::Status::kSpSizeMismatch;
  static const std::vector<float> negative = {0.1f, -0.5f, 0.5f};
  for (int bad : {0, R - 1}) {
    agree_case<Policy>(cq, R, seed + 1, plan, bad, "null q", lasp::Status::kNullPointer, [](A& a) { a.q.ptr = nullptr; });
    agree_case<Policy>(cq, R, seed + 2, plan, bad, "misaligned o", lasp::Status::kMisaligned, [](A& a) { a.o.ptr += 1; });
    agree_case<Policy>(cq, R, seed + 3, plan, bad, "o over q", lasp::Status::kOverlap,
                       [](A& a) { a.o.ptr = const_cast<lasp::bf16*>(a.q.ptr); });
    agree_case<Policy>(cq, R, seed + 4, plan, bad, "R differs", shape_status, [R](A& a) { a.shape.R = R + 1; });
    agree_case<Policy>(cq, R, seed + 5, plan, bad, "negative slope", lasp::Status::kInvalidDecay,
                       [](A& a) { a.decay.slopes = negative.data(); });
  }
}

}  // namespace

TEST_CASE("multigpu agreement, R=2 and 4: a refusal on one rank is every rank's deferred status, next call exact") {
  for (int R : {2, 4}) {
    if (skip_unless_gpus(R, "SP agreement")) return;
    Clique cq(R);
    every_refusal<Policy<decay::PerHead, schedule::Chain>>(&cq, R, 1500, false);
    every_refusal<Policy<decay::PerHead, schedule::AllGather>>(&cq, R, 1510, false);
    every_refusal<Policy<decay::PerHead, schedule::Auto>>(&cq, R, 1520, true);  // the single hop
    every_refusal<Policy<decay::PerHead, schedule::Chain>>(&cq, R, 1530, true);
  }
}

// The same over R threads on one GPU (comm::DeviceGroup), also with LogScan (3 ranks: a
// partial second round).
TEST_CASE("1-GPU groups: agreement, R = 2 and 3: a refusal on one rank is every rank's deferred status, next call exact") {
  if (skip_unless_gpus(1, "thread groups agreement")) return;
  for (int R : {2, 3}) {
    every_refusal<Policy<decay::PerHead, schedule::Chain>>(nullptr, R, 1600, false);
    every_refusal<Policy<decay::PerHead, schedule::AllGather>>(nullptr, R, 1610, false);
    every_refusal<Policy<decay::PerHead, schedule::Auto>>(nullptr, R, 1620, true);
    every_refusal<Policy<decay::PerHead, schedule::LogScan>>(nullptr, R, 1630, true);
  }
}
