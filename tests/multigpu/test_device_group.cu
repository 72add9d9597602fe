// Sequence parallelism with R ranks as threads on ONE GPU (comm::DeviceGroup, no NCCL): the
// CUDA backend's multi-rank paths against the double reference on the whole sequence, where the
// NCCL cases of this suite need R GPUs. Each rank has its own stream and workspace; states move
// through stream-ordered device copies. R = 2..8 (odd and non-power-of-two groups for LogScan's
// rounds and Hierarchical's nodes), every decay and every schedule without a side stream,
// plans, uneven N (including a rank of 1 token), head-major, fp16, D != E, no states, caching.
// What this does NOT cover: NCCL itself, and ranks on different devices (test_sp.cu does both).
#include "support.cuh"

using namespace lasp_test;
using lasp::Policy;
namespace decay = lasp::decay;
namespace schedule = lasp::schedule;

TEST_CASE("1-GPU groups: every decay x {Chain, AllGather, LogScan}, R = 2, 3, 5") {
  if (skip_unless_gpus(1, "thread groups")) return;
  using bf16 = lasp::bf16;
  for (int R : {2, 3, 5}) {
    const std::uint32_t k = 3000 + 16 * std::uint32_t(R);
    run_group_case<Policy<decay::None, schedule::Chain>, bf16>(R, base_spec(k + 0));
    run_group_case<Policy<decay::PerHead, schedule::Chain>, bf16>(R, base_spec(k + 1));
    run_group_case<Policy<decay::Gate, schedule::Chain>, bf16>(R, base_spec(k + 2));
    run_group_case<Policy<decay::None, schedule::AllGather>, bf16>(R, base_spec(k + 3));
    run_group_case<Policy<decay::PerHead, schedule::AllGather>, bf16>(R, base_spec(k + 4));
    run_group_case<Policy<decay::Gate, schedule::AllGather>, bf16>(R, base_spec(k + 5));
    run_group_case<Policy<decay::None, schedule::LogScan>, bf16>(R, base_spec(k + 6));
    run_group_case<Policy<decay::PerHead, schedule::LogScan>, bf16>(R, base_spec(k + 7));
    run_group_case<Policy<decay::Gate, schedule::LogScan>, bf16>(R, base_spec(k + 8));
  }
}

TEST_CASE("1-GPU groups: LogScan at R = 8 (three rounds), with and without a plan") {
  if (skip_unless_gpus(1, "thread groups")) return;
  run_group_case<Policy<decay::Gate, schedule::LogScan>, lasp::bf16>(8, base_spec(3200));
  run_group_case<Policy<decay::PerHead, schedule::LogScan>, lasp::bf16>(8, base_spec(3201), {}, true);
}

TEST_CASE("1-GPU groups: schedule::Hierarchical on emulated nodes (4 = 2 x 2, 6 = 3 x 2, 8 = 2 x 4)") {
  if (skip_unless_gpus(1, "thread groups")) return;
  using HL = schedule::Hierarchical<schedule::LogScan, schedule::LogScan>;
  using HC = schedule::Hierarchical<schedule::AllGather, schedule::Chain>;
  run_group_case<Policy<decay::None, HL>, lasp::bf16>(4, base_spec(3300), {}, false, 2);
  run_group_case<Policy<decay::PerHead, HL>, lasp::bf16>(4, base_spec(3301), {}, true, 2);
  run_group_case<Policy<decay::Gate, HC>, lasp::bf16>(4, base_spec(3302), {}, false, 2);
  run_group_case<Policy<decay::Gate, HL>, lasp::bf16>(6, base_spec(3303), {}, false, 3);
  run_group_case<Policy<decay::PerHead, HC>, lasp::bf16>(8, base_spec(3304), {}, true, 4);
  // node size that does not divide the group: the inner scan over the whole group
  run_group_case<Policy<decay::PerHead, HL>, lasp::bf16>(5, base_spec(3305), {}, false, 2);
}

TEST_CASE("1-GPU groups: schedule::Truncated, single hop and fallback, R = 3") {
  if (skip_unless_gpus(1, "thread groups")) return;
  const std::vector<float> strong = {0.1f, 0.2f, 0.5f}, weak = {0.1f, 0.01f, 0.5f};  // N = 200
  using TC = Policy<decay::PerHead, schedule::Truncated<schedule::Chain>>;
  using TA = Policy<decay::PerHead, schedule::Truncated<schedule::AllGather>>;
  run_group_case<TC, lasp::bf16>(3, base_spec(3400), strong);
  run_group_case<TC, lasp::bf16>(3, base_spec(3401), weak);
  run_group_case<TA, lasp::bf16>(3, base_spec(3402), strong);
  run_group_case<TA, lasp::bf16>(3, base_spec(3403), strong, true);
  run_group_case<TA, lasp::bf16>(3, base_spec(3404), weak, true);
}

TEST_CASE("1-GPU groups: uneven N with a plan (a rank of one token), every schedule and Auto") {
  if (skip_unless_gpus(1, "thread groups")) return;
  ProblemSpec s = base_spec(3500);
  s.rank_N = {64, 300, 1, 129, 200};
  s.N = s.rank_N[0];
  const std::vector<float> slopes = {0.1f, 0.2f, 0.5f};
  run_group_case<Policy<decay::PerHead, schedule::Chain>, lasp::bf16>(5, s, slopes, true);
  run_group_case<Policy<decay::Gate, schedule::AllGather>, lasp::bf16>(5, s, {}, true);
  run_group_case<Policy<decay::Gate, schedule::LogScan>, lasp::bf16>(5, s, {}, true);
  run_group_case<Policy<decay::PerHead, schedule::Truncated<schedule::Chain>>, lasp::bf16>(5, s, slopes, false);
  run_group_case<Policy<decay::PerHead, schedule::Auto>, lasp::bf16>(5, s, slopes, true);
  run_group_case<Policy<decay::PerHead, schedule::Auto>, lasp::bf16>(5, s, slopes, false);
}

TEST_CASE("1-GPU groups, R = 3: head-major, fp16, D != E, no states, state caching") {
  if (skip_unless_gpus(1, "thread groups")) return;
  {
    ProblemSpec s = base_spec(3600);
    s.layout = Layout::kHeadMajor;
    run_group_case<Policy<decay::Gate, schedule::LogScan>, lasp::bf16>(3, s);
  }
  run_group_case<Policy<decay::Gate, schedule::AllGather>, lasp::fp16>(3, base_spec(3601));
  {
    ProblemSpec s = base_spec(3602);
    s.D = 64;
    run_group_case<Policy<decay::PerHead, schedule::Chain>, lasp::bf16>(3, s);
  }
  {
    ProblemSpec s = base_spec(3603);
    s.initial_state = s.final_state = false;
    s.B = 1, s.N = 137;
    run_group_case<Policy<decay::Gate, schedule::Chain>, lasp::bf16>(3, s);
  }
  run_group_case<Policy<decay::PerHead, schedule::AllGather, lasp::caching::Cache>, lasp::bf16>(3, base_spec(3604));
  run_group_case<Policy<decay::Gate, schedule::LogScan, lasp::caching::Cache>, lasp::bf16>(3, base_spec(3605));
}

TEST_CASE("1-GPU groups: a rank that stops early aborts the group; no rank hangs") {
  if (skip_unless_gpus(1, "thread groups")) return;
  // Rank 1 never calls: rank 0 (Chain, its final state goes nowhere but its summary is sent) and
  // rank 2 (waits for rank 1's state) must return, rank 2 with kCommError, once the group is aborted.
  lasp::comm::DeviceGroup g(3, std::chrono::seconds(60));
  std::vector<lasp::Status> st(3, lasp::Status::kInternalError);
  std::vector<std::thread> th;
  ProblemSpec s = base_spec(3700);
  s.R = 3;
  GlobalProblem<lasp::bf16> p(s);
  using P = Policy<decay::PerHead, schedule::Chain>;
  for (int r = 0; r < 3; ++r)
    th.emplace_back([&, r] {
      LASP_TEST_CUDA(cudaSetDevice(0));
      if (r == 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        g.abort();
        st[1] = lasp::Status::kCommError;
        return;
      }
      auto comm = g.comm(r);
      DeviceProblem<lasp::bf16> dp(p);
      const std::size_t wsb = lasp::workspace_size<P, lasp::bf16>(p.shape_of(r), comm);
      DeviceBuf<unsigned char> ws(wsb);
      cudaStream_t cs;
      LASP_TEST_CUDA(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
      auto fa = dp.template forward_args<decay::PerHead>(r);
      st[std::size_t(r)] = lasp::forward<P>(fa, comm, {ws.ptr, wsb}, cs);
      LASP_TEST_CUDA(cudaStreamSynchronize(cs));
      cudaStreamDestroy(cs);
    });
  for (auto& t : th) t.join();
  CHECK(g.broken());
  CHECK(st[2] == lasp::Status::kCommError);  // its receive was cut off
}
