// Sequence parallelism over NCCL, one process driving R GPUs (one thread and one stream per
// rank): every rank's forward + backward through comm::Nccl equals the double reference on the
// whole sequence (math.md section 3). Both schedules, every decay, bf16 (and fp16), D = E = 128
// and D != E, a local N that is not a multiple of the chunk, B > 1, H > 1, head-major, initial
// and final states; and SP x DP = 2 x 2 on 4 GPUs, two SP groups running different problems at
// the same time. Outputs are poisoned first; each rank must write only its own segment.
#include "support.cuh"

using namespace lasp_test;
using lasp::Policy;
namespace decay = lasp::decay;
namespace schedule = lasp::schedule;

namespace {

/// Every decay, both schedules, bf16, on a clique of R GPUs.
void all_decays_and_schedules(int R, std::uint32_t seed) {
  Clique cq(R);
  using bf16 = lasp::bf16;
  run_sp_case<Policy<decay::None, schedule::Chain>, bf16>(cq, base_spec(seed + 0));
  run_sp_case<Policy<decay::PerHead, schedule::Chain>, bf16>(cq, base_spec(seed + 1));
  run_sp_case<Policy<decay::Gate, schedule::Chain>, bf16>(cq, base_spec(seed + 2));
  run_sp_case<Policy<decay::None, schedule::AllGather>, bf16>(cq, base_spec(seed + 3));
  run_sp_case<Policy<decay::PerHead, schedule::AllGather>, bf16>(cq, base_spec(seed + 4));
  run_sp_case<Policy<decay::Gate, schedule::AllGather>, bf16>(cq, base_spec(seed + 5));
}

}  // namespace

TEST_CASE("multigpu SP, R=2: every decay x {Chain, AllGather}, bf16, D=E=128, N=200, B=2, H=3, states") {
  if (skip_unless_gpus(2, "SP R=2")) return;
  all_decays_and_schedules(2, 1000);
}

TEST_CASE("multigpu SP, R=4: every decay x {Chain, AllGather}, bf16, D=E=128, N=200, B=2, H=3, states") {
  if (skip_unless_gpus(4, "SP R=4")) return;
  all_decays_and_schedules(4, 1100);
}

// The overlapped schedules run backward's reverse scan on comm::Nccl's side stream, concurrently
// with the dq kernel: the same results as the plain schedules, every decay (issue 10: untested
// against the reference before).
TEST_CASE("multigpu SP, R=2 and 4: ChainOverlap and AllGatherOverlap against the reference") {
  for (int R : {2, 4}) {
    if (skip_unless_gpus(R, "SP overlap schedules")) return;
    Clique cq(R);
    run_sp_case<Policy<decay::PerHead, schedule::ChainOverlap>, lasp::bf16>(cq, base_spec(1500 + std::uint32_t(R)));
    run_sp_case<Policy<decay::Gate, schedule::ChainOverlap>, lasp::bf16>(cq, base_spec(1510 + std::uint32_t(R)));
    run_sp_case<Policy<decay::None, schedule::AllGatherOverlap>, lasp::bf16>(cq, base_spec(1520 + std::uint32_t(R)));
    run_sp_case<Policy<decay::Gate, schedule::AllGatherOverlap>, lasp::bf16>(cq, base_spec(1530 + std::uint32_t(R)));
  }
}

// schedule::LogScan over NCCL (ceil(log2 R) grouped sendrecv rounds): every decay, states.
TEST_CASE("multigpu SP, R=2 and 4: schedule::LogScan, every decay") {
  for (int R : {2, 4}) {
    if (skip_unless_gpus(R, "SP LogScan")) return;
    Clique cq(R);
    run_sp_case<Policy<decay::None, schedule::LogScan>, lasp::bf16>(cq, base_spec(1400 + std::uint32_t(R)));
    run_sp_case<Policy<decay::PerHead, schedule::LogScan>, lasp::bf16>(cq, base_spec(1410 + std::uint32_t(R)));
    run_sp_case<Policy<decay::Gate, schedule::LogScan>, lasp::bf16>(cq, base_spec(1420 + std::uint32_t(R)));
  }
}

// schedule::Hierarchical over NCCL, emulating nodes of 2 GPUs on one host (comm::Nccl's node_size):
// R = 4 runs the in-node Kogge-Stone, the leaders' scan over 2 nodes and the broadcast; R = 2 with
// nodes of 2 is the one-node fallback. Compiled; not run yet.
TEST_CASE("multigpu SP, R=2 and 4: schedule::Hierarchical on nodes of 2, every decay") {
  for (int R : {2, 4}) {
    if (skip_unless_gpus(R, "SP Hierarchical")) return;
    Clique cq(R);
    using HL = schedule::Hierarchical<schedule::LogScan, schedule::LogScan>;
    using HC = schedule::Hierarchical<schedule::AllGather, schedule::Chain>;
    run_sp_case<Policy<decay::None, HL>, lasp::bf16>(cq, base_spec(1430 + std::uint32_t(R)), {}, false, 2);
    run_sp_case<Policy<decay::PerHead, HL>, lasp::bf16>(cq, base_spec(1440 + std::uint32_t(R)), {}, true, 2);
    run_sp_case<Policy<decay::Gate, HC>, lasp::bf16>(cq, base_spec(1450 + std::uint32_t(R)), {}, false, 2);
  }
}

// schedule::Truncated over NCCL: strong decay (s N > 24 ln 2 on every head: one grouped
// neighbour shift, sendrecv) and one weak head (falls back to the chain / all-gather).
TEST_CASE("multigpu SP, R=2 and 4: schedule::Truncated, single hop and fallback") {
  for (int R : {2, 4}) {
    if (skip_unless_gpus(R, "SP Truncated")) return;
    Clique cq(R);
    const std::vector<float> strong = {0.1f, 0.2f, 0.5f}, weak = {0.1f, 0.01f, 0.5f};  // N = 200
    run_sp_case<Policy<decay::PerHead, schedule::Truncated<schedule::Chain>>, lasp::bf16>(cq, base_spec(1300), strong);
    run_sp_case<Policy<decay::PerHead, schedule::Truncated<schedule::Chain>>, lasp::bf16>(cq, base_spec(1301), weak);
    run_sp_case<Policy<decay::PerHead, schedule::Truncated<schedule::AllGather>>, lasp::bf16>(cq, base_spec(1302), strong);
    // Over AllGather the single hop needs the group's plan (without one, the call above all-gathers).
    run_sp_case<Policy<decay::PerHead, schedule::Truncated<schedule::AllGather>>, lasp::bf16>(cq, base_spec(1303), strong,
                                                                                            true);
  }
}

// Ranks with different N (Shape: any N >= 1), through a plan: every schedule, and Auto where
// some ranks qualify for the single hop and others do not (the plan then all-gathers).
TEST_CASE("multigpu SP, R=2 and 4: uneven N with a plan, Chain, AllGather, Truncated, Auto") {
  for (int R : {2, 4}) {
    if (skip_unless_gpus(R, "SP uneven N")) return;
    Clique cq(R);
    ProblemSpec s = base_spec(1400);
    s.rank_N = R == 2 ? std::vector<index_t>{200, 37} : std::vector<index_t>{64, 300, 1, 129};
    s.N = s.rank_N[0];
    const std::vector<float> slopes = {0.1f, 0.2f, 0.5f};  // N = 200, 300 strong; 37, 64, 1, 129 not all
    run_sp_case<Policy<decay::PerHead, schedule::Chain>, lasp::bf16>(cq, s, slopes, true);
    run_sp_case<Policy<decay::Gate, schedule::AllGather>, lasp::bf16>(cq, s, {}, true);
    run_sp_case<Policy<decay::PerHead, schedule::Truncated<schedule::Chain>>, lasp::bf16>(cq, s, slopes, false);
    run_sp_case<Policy<decay::PerHead, schedule::Auto>, lasp::bf16>(cq, s, slopes, true);
    run_sp_case<Policy<decay::PerHead, schedule::Auto>, lasp::bf16>(cq, s, slopes, false);
  }
}

TEST_CASE("multigpu SP, R=2: head-major, fp16, D != E, no states, state caching") {
  if (skip_unless_gpus(2, "SP R=2 variants")) return;
  Clique cq(2);
  {  // head-major [B,H,N,X] views with gates, Chain
    ProblemSpec s = base_spec(1200);
    s.layout = Layout::kHeadMajor;
    run_sp_case<Policy<decay::Gate, schedule::Chain>, lasp::bf16>(cq, s);
  }
  {  // fp16, gates, AllGather
    run_sp_case<Policy<decay::Gate, schedule::AllGather>, lasp::fp16>(cq, base_spec(1201));
  }
  {  // D = 64, E = 128, per-head decay, Chain
    ProblemSpec s = base_spec(1202);
    s.D = 64;
    run_sp_case<Policy<decay::PerHead, schedule::Chain>, lasp::bf16>(cq, s);
  }
  {  // no initial state, no final state / dS_final; odd N; B = 1
    ProblemSpec s = base_spec(1203);
    s.initial_state = s.final_state = false;
    s.B = 1, s.N = 137;
    run_sp_case<Policy<decay::Gate, schedule::Chain>, lasp::bf16>(cq, s);
  }
  {  // forward caches the segment states (caching::Cache), AllGather
    run_sp_case<Policy<decay::PerHead, schedule::AllGather, lasp::caching::Cache>, lasp::bf16>(cq, base_spec(1204));
  }
}

TEST_CASE("multigpu SP, R=4: head-major gates with D=64, E=128 (Chain) and fp16 (AllGather)") {
  if (skip_unless_gpus(4, "SP R=4 variants")) return;
  Clique cq(4);
  ProblemSpec s = base_spec(1300);
  s.layout = Layout::kHeadMajor;
  s.D = 64;
  run_sp_case<Policy<decay::Gate, schedule::Chain>, lasp::bf16>(cq, s);
  ProblemSpec f = base_spec(1301);
  f.N = 150;
  run_sp_case<Policy<decay::PerHead, schedule::AllGather>, lasp::fp16>(cq, f);
}

namespace {

/// SP x DP on 4 GPUs: the world clique is split into SP groups (0,1), (2,3) and DP groups
/// (0,2), (1,3) by comm::split_sp_dp; SP group c runs problem c (its own seed) at the same time
/// as the other group. Also checks the DP communicators with an all-reduce.
template <class Policy, class Elem>
void sp_dp_2x2(std::uint32_t seed) {
  constexpr int W = 4, SP = 2;
  Clique world(W);
  ProblemSpec s0 = base_spec(seed), s1 = base_spec(seed + 1);
  s0.R = s1.R = SP;
  s1.N = 160;  // the groups need not run the same shape
  GlobalProblem<Elem> p0(s0), p1(s1);
  GlobalProblem<Elem>* probs[2] = {&p0, &p1};
  std::vector<RankOut<Elem>> outs[2] = {std::vector<RankOut<Elem>>(SP), std::vector<RankOut<Elem>>(SP)};
  std::vector<lasp::Status> split(W, lasp::Status::kInternalError);
  std::vector<int> sp_rank(W, -1), sp_size(W, -1), dp_rank(W, -1), dp_size(W, -1);
  std::vector<float> dp_sum(W, -1.f);
  std::atomic<bool> failed[2] = {{false}, {false}};
  Barrier start0(SP), start1(SP);
  Barrier* start[2] = {&start0, &start1};

  on_gpu_threads(W, [&](int w) {
    ncclComm_t spc = nullptr, dpc = nullptr;
    split[std::size_t(w)] = lasp::comm::split_sp_dp(world.comms[std::size_t(w)], SP, &spc, &dpc);
    if (split[std::size_t(w)] != lasp::Status::kSuccess) return;  // every rank fails alike (same W, SP)
    ncclCommUserRank(spc, &sp_rank[std::size_t(w)]);
    ncclCommCount(spc, &sp_size[std::size_t(w)]);
    ncclCommUserRank(dpc, &dp_rank[std::size_t(w)]);
    ncclCommCount(dpc, &dp_size[std::size_t(w)]);
    // DP all-reduce of the world rank: group (c, c + SP) sums to 2c + SP.
    {
      DeviceBuf<float> x(std::size_t{1});
      const float v = float(w);
      LASP_TEST_CUDA(cudaMemcpy(x.ptr, &v, sizeof v, cudaMemcpyHostToDevice));
      LASP_TEST_NCCL(ncclAllReduce(x.ptr, x.ptr, 1, ncclFloat, ncclSum, dpc, nullptr));
      LASP_TEST_CUDA(cudaStreamSynchronize(nullptr));
      LASP_TEST_CUDA(cudaMemcpy(&dp_sum[std::size_t(w)], x.ptr, sizeof(float), cudaMemcpyDeviceToHost));
    }
    const int color = lasp::comm::sp_color(w, SP), r = lasp::comm::sp_rank(w, SP);
    auto& out = outs[color][std::size_t(r)];
    out = run_rank<Policy>(*probs[color], r, spc, failed[color], *start[color]);
    if (out.aborted) {
      world.dead = true;  // the group failed: abort the world comms at exit, never destroy them
      ncclCommAbort(dpc);
      return;
    }
    ncclCommDestroy(dpc);
    ncclCommDestroy(spc);
  });

  for (int w = 0; w < W; ++w) {
    CAPTURE(w);
    REQUIRE(split[std::size_t(w)] == lasp::Status::kSuccess);
    CHECK(sp_rank[std::size_t(w)] == lasp::comm::sp_rank(w, SP));
    CHECK(sp_size[std::size_t(w)] == SP);
    CHECK(dp_rank[std::size_t(w)] == lasp::comm::dp_rank(w, SP));
    CHECK(dp_size[std::size_t(w)] == W / SP);
    CHECK(dp_sum[std::size_t(w)] == float(2 * lasp::comm::dp_color(w, SP) + SP));
  }
  check_against_reference<Policy>(p0, outs[0], "SPxDP 2x2 group 0: " + describe_case<Policy, Elem>(s0));
  check_against_reference<Policy>(p1, outs[1], "SPxDP 2x2 group 1: " + describe_case<Policy, Elem>(s1));
}

}  // namespace

TEST_CASE("multigpu SP x DP = 2 x 2: split_sp_dp, two SP groups run different problems at once") {
  if (skip_unless_gpus(4, "SP x DP 2x2")) return;
  sp_dp_2x2<Policy<decay::Gate, schedule::Chain>, lasp::bf16>(1400);
  sp_dp_2x2<Policy<decay::PerHead, schedule::AllGather>, lasp::bf16>(1410);
}
