// Bounded waits when a rank dies (issue 10): one process per GPU under mpirun; every rank runs
// lasp forward + backward steps over NCCL and waits for each step with
// lasp::comm::wait(comm, stream, timeout, {abort = true}). At --kill-step the --victim rank
// queues its forward and kills itself (SIGKILL: no destructor, no NCCL teardown, as a crash).
// The survivors' NCCL kernels then wait for it for ever; the wait must give up and abort the
// communicator, returning kCommError within timeout + slack (either the timeout or an
// asynchronous error NCCL raised on a transport that noticed the lost connection).
//
// MPI only bootstraps NCCL (rank 0's unique id is broadcast). After the kill no MPI call is
// made: each survivor prints its own line and leaves with _exit (MPI_Finalize would wait for the
// dead rank). mpirun must be told to let the survivors run after a rank died by a signal, and its
// exit code says nothing about the test; scripts/kill-test.sh runs it and counts the lines:
//
//   scripts/kill-test.sh ./lasp_mpi_kill_test 4          # = mpirun -np 4 ... (Open MPI 4.x:
//       --enable-recovery --mca orte_abort_on_non_zero_status 0)
//   options: --victim V (default 1), --kill-step K (>= 1, default 3; steps before it connect
//   NCCL's peers and must succeed), --timeout-ms T (default 10000), --slack-ms S (default 5000),
//   --n N (tokens per rank, default 4096), --schedule chain | allgather | chain-overlap
//   (chain-overlap runs backward's NCCL scan on the handle's side stream).
//
// Per rank: "kill_test rank R: PASS ..." or "kill_test rank R: FAIL ..." (survivors), and
// "kill_test rank V: killing itself ..." (victim). Exit code of a survivor: 0 PASS, 1 FAIL;
// 77 when no GPU is visible, 2 for bad arguments. A guard thread ends a survivor that hangs
// anyway (FAIL, exit 3) so that the run always ends.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <nccl.h>
#include <signal.h>
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <lasp/comm/nccl.cuh>
#include <lasp/lasp.cuh>
#include "../../examples/mpi_bootstrap.hpp"

namespace {

using Elem = __nv_bfloat16;
using std::chrono::milliseconds;
constexpr int B = 1, H = 4, D = 64, E = 64;

struct Options {
  int victim = 1, kill_step = 3;
  long long timeout_ms = 10000, slack_ms = 5000, n = 4096;
  std::string schedule = "chain";
};

int g_rank = 0;

/// Ends this process with a FAIL line (before the kill: set-up failures; MPI_Abort would also
/// take the others down, which is fine then).
[[noreturn]] void die(const char* what, const char* why) {
  std::printf("kill_test rank %d: FAIL (%s: %s)\n", g_rank, what, why);
  std::fflush(stdout);
  MPI_Abort(MPI_COMM_WORLD, 1);
  _exit(1);
}
#define KT_CUDA(x)                                       \
  do {                                                   \
    cudaError_t e_ = (x);                                \
    if (e_ != cudaSuccess) die(#x, cudaGetErrorString(e_)); \
  } while (0)
#define KT_NCCL(x)                                       \
  do {                                                   \
    ncclResult_t r_ = (x);                               \
    if (r_ != ncclSuccess) die(#x, ncclGetErrorString(r_)); \
  } while (0)

template <class T>
T* device_random(std::size_t n, std::mt19937& gen) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> h(n);
  for (auto& x : h) x = T(nd(gen));
  T* d = nullptr;
  KT_CUDA(cudaMalloc(&d, n * sizeof(T)));
  KT_CUDA(cudaMemcpy(d, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

const char* outcome_name(lasp::comm::WaitOutcome o) {
  switch (o) {
    case lasp::comm::WaitOutcome::kDone: return "done";
    case lasp::comm::WaitOutcome::kTimedOut: return "timed out";
    case lasp::comm::WaitOutcome::kAsyncError: return "NCCL asynchronous error";
    case lasp::comm::WaitOutcome::kCudaError: return "CUDA error";
    case lasp::comm::WaitOutcome::kRefused: return "refused";
  }
  return "?";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// The steps of one rank; returns the survivor's exit code (the victim never returns).
template <class Policy>
int run(const Options& o, ncclComm_t nccl, int world_rank) {
  lasp::comm::Nccl comm;
  {
    const lasp::Status s = lasp::comm::Nccl::make(nccl, &comm);
    if (s != lasp::Status::kSuccess) die("Nccl::make", lasp::to_string(s));
  }
  const int R = comm.size();
  const long long N = o.n;
  std::mt19937 gen(1234u + unsigned(world_rank));
  const std::size_t nqk = std::size_t(B * N * H * D), nvo = std::size_t(B * N * H * E);
  Elem *q = device_random<Elem>(nqk, gen), *k = device_random<Elem>(nqk, gen), *v = device_random<Elem>(nvo, gen);
  Elem *dout = device_random<Elem>(nvo, gen), *out = device_random<Elem>(nvo, gen);
  Elem *dq = device_random<Elem>(nqk, gen), *dk = device_random<Elem>(nqk, gen), *dv = device_random<Elem>(nvo, gen);
  std::vector<float> slopes;
  for (int h = 0; h < H; ++h) slopes.push_back(float(std::exp2(-8.0 * (h + 1) / H)));
  const lasp::Shape shape{B, N, H, D, E, R};
  const float scale = 1.f / std::sqrt(float(D));
  lasp::ForwardArgs<Elem, lasp::decay::PerHead> fa{shape,
                                                  lasp::token_major<const Elem>(q, N, H, D),
                                                  lasp::token_major<const Elem>(k, N, H, D),
                                                  lasp::token_major<const Elem>(v, N, H, E),
                                                  lasp::token_major(out, N, H, E),
                                                  scale,
                                                  {slopes.data()}};
  lasp::BackwardArgs<Elem, lasp::decay::PerHead> ba{shape,
                                                   fa.q,
                                                   fa.k,
                                                   fa.v,
                                                   lasp::token_major<const Elem>(dout, N, H, E),
                                                   lasp::token_major(dq, N, H, D),
                                                   lasp::token_major(dk, N, H, D),
                                                   lasp::token_major(dv, N, H, E),
                                                   scale,
                                                   {slopes.data()}};
  const std::size_t ws_bytes = lasp::workspace_size<Policy, Elem>(shape, comm);
  void* ws_ptr = nullptr;
  KT_CUDA(cudaMalloc(&ws_ptr, ws_bytes));
  const lasp::Workspace ws{ws_ptr, ws_bytes};
  cudaStream_t stream;
  KT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  lasp::comm::WaitOptions opts;
  opts.abort = true;  // this rank gives up its communicator when a step fails
  const milliseconds timeout(o.timeout_ms);
  const bool victim = comm.rank() == o.victim;
  for (int step = 0;; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const lasp::Status fwd = lasp::forward<Policy>(fa, comm, ws, stream);
    if (victim && step == o.kill_step) {
      std::printf("kill_test rank %d: killing itself at step %d (forward queued: %s)\n", comm.rank(), step,
                  lasp::to_string(fwd));
      std::fflush(stdout);
      raise(SIGKILL);
    }
    const lasp::Status bwd = lasp::backward<Policy>(ba, comm, ws, stream);
    lasp::comm::WaitReport rep;
    const lasp::Status st = lasp::comm::wait(comm, stream, timeout, opts, &rep);
    const double wall = ms_since(t0);
    if (step < o.kill_step) {
      if (fwd != lasp::Status::kSuccess || bwd != lasp::Status::kSuccess || st != lasp::Status::kSuccess) {
        std::printf("kill_test rank %d: FAIL (step %d before the kill: forward %s, backward %s, wait %s, %s)\n",
                    comm.rank(), step, lasp::to_string(fwd), lasp::to_string(bwd), lasp::to_string(st),
                    outcome_name(rep.outcome));
        return 1;
      }
      continue;
    }
    // The step of the kill: the survivors' lasp calls may have returned kCommError already (NCCL
    // noticed the dead peer before they were queued); the wait is what must bound the time.
    const double bound = double(o.timeout_ms + o.slack_ms);
    const bool in_time = wall <= bound;
    // After the abort NCCL's kernels exit and lasp's kernels behind them run: the stream drains.
    lasp::comm::WaitReport drain;
    const lasp::Status drained = lasp::comm::wait(stream, milliseconds(o.slack_ms), {}, &drain);
    const bool pass = st == lasp::Status::kCommError && rep.aborted && in_time && drained == lasp::Status::kSuccess;
    std::printf(
        "kill_test rank %d: %s (step %d: wait %s [%s], aborted %s, %.0f ms from the step's start, %.0f ms in the "
        "wait, bound %.0f ms = timeout %lld + slack %lld; forward %s, backward %s; stream drained: %s in %.0f ms)\n",
        comm.rank(), pass ? "PASS" : "FAIL", step, lasp::to_string(st), outcome_name(rep.outcome),
        rep.aborted ? "yes" : "no", wall, double(rep.elapsed.count()) / 1000.0, bound, o.timeout_ms, o.slack_ms,
        lasp::to_string(fwd), lasp::to_string(bwd), drained == lasp::Status::kSuccess ? "yes" : lasp::to_string(drained),
        double(drain.elapsed.count()) / 1000.0);
    return pass ? 0 : 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  Options o;
  bool bad = false;
  for (int i = 1; i < argc; ++i) {
    const bool has = i + 1 < argc;
    if (!std::strcmp(argv[i], "--victim") && has) o.victim = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--kill-step") && has) o.kill_step = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--timeout-ms") && has) o.timeout_ms = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--slack-ms") && has) o.slack_ms = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--n") && has) o.n = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--schedule") && has) o.schedule = argv[++i];
    else bad = true;
  }
  if (o.schedule != "chain" && o.schedule != "allgather" && o.schedule != "chain-overlap") bad = true;
  if (bad || world_size < 2 || o.victim < 0 || o.victim >= world_size || o.kill_step < 1 || o.timeout_ms < 1 ||
      o.slack_ms < 0 || o.n < 64) {
    if (g_rank == 0)
      std::fprintf(stderr,
                   "usage: mpirun -np W (>= 2) %s [--victim V] [--kill-step K >= 1] [--timeout-ms T] [--slack-ms S] "
                   "[--n N >= 64] [--schedule chain|allgather|chain-overlap]\n",
                   argv[0]);
    MPI_Finalize();
    return 2;
  }

  // One GPU per process: the local rank on this node picks the device.
  if (lasp_example::mpi_pick_device(g_rank) < 0) {
    if (g_rank == 0) std::printf("kill_test: skipped (no CUDA device visible)\n");
    MPI_Finalize();
    return 77;
  }

  // The guard: a survivor that hangs despite the bounded wait (a host call blocking inside NCCL,
  // say) still ends, as a FAIL, so the run never needs an outside timeout to finish.
  const long long guard_ms = o.timeout_ms * (o.kill_step + 2) + o.slack_ms * 2 + 60000;
  std::thread([guard_ms] {
    std::this_thread::sleep_for(milliseconds(guard_ms));
    std::printf("kill_test rank %d: FAIL (still running after %lld ms: the guard ends it)\n", g_rank, guard_ms);
    std::fflush(stdout);
    _exit(3);
  }).detach();

  ncclComm_t nccl = nullptr;
  KT_NCCL(lasp_example::mpi_nccl_world(g_rank, world_size, &nccl));
  if (g_rank == 0) {
    int v = 0;
    ncclGetVersion(&v);
    std::printf("kill_test: %d ranks, NCCL %d, schedule %s, N=%lld per rank, rank %d dies at step %d, timeout %lld ms, "
                "slack %lld ms\n",
                world_size, v, o.schedule.c_str(), o.n, o.victim, o.kill_step, o.timeout_ms, o.slack_ms);
    std::fflush(stdout);
  }
  // Every rank reaches the loop before anyone can die (the id exchange is the last MPI call).
  MPI_Barrier(MPI_COMM_WORLD);

  using lasp::decay::PerHead;
  int rc = 1;
  if (o.schedule == "chain") rc = run<lasp::Policy<PerHead, lasp::schedule::Chain>>(o, nccl, g_rank);
  else if (o.schedule == "allgather") rc = run<lasp::Policy<PerHead, lasp::schedule::AllGather>>(o, nccl, g_rank);
  else rc = run<lasp::Policy<PerHead, lasp::schedule::ChainOverlap>>(o, nccl, g_rank);
  // No MPI_Finalize (it would wait for the dead rank), no ncclCommDestroy (the wait aborted it,
  // or this rank failed before the kill and the others will abort theirs); CUDA memory goes with
  // the process.
  std::fflush(stdout);
  _exit(rc);
}
