#pragma once
// Helpers of the multi-GPU suite: NCCL cliques over devices 0..n-1, one thread per rank with a
// barrier, and one SP rank's forward+backward on its own GPU with outputs brought back to the
// host. Aborting checks are fine here (tests); doctest assertions are made on the main thread.
#include <doctest/doctest.h>
#include <nccl.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <lasp/comm/check.cuh>
#include <lasp/comm/device_group.cuh>
#include <lasp/comm/wait.cuh>
#include <lasp/comm/nccl.cuh>
#include <lasp/lasp.cuh>
#include "common/barrier.hpp"
#include "common/device.hpp"

#define LASP_TEST_NCCL(expr)                                                                      \
  do {                                                                                            \
    ncclResult_t r_ = (expr);                                                                     \
    if (r_ != ncclSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, ncclGetErrorString(r_)); \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)

namespace doctest {
template <>
struct StringMaker<lasp::Status> {
  static String convert(lasp::Status s) { return String(lasp::to_string(s)); }
};
}  // namespace doctest

namespace lasp_test {

inline int gpu_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

/// True (and a doctest MESSAGE saying why) when fewer than `need` GPUs are visible.
inline bool skip_unless_gpus(int need, const char* what) {
  const int n = gpu_count();
  if (n >= need) return false;
  MESSAGE("skipped: ", std::string(what), " needs ", need, " GPUs, found ", n);
  std::printf("  [skipped] %s: needs %d GPUs, found %d\n", what, need, n);
  return true;
}

/// Runs f(r) on R threads, thread r with device `device_of(r)` current, and joins them.
template <class F>
void on_gpu_threads(int R, F&& f) {
  std::vector<std::thread> th;
  th.reserve(std::size_t(R));
  for (int r = 0; r < R; ++r)
    th.emplace_back([&f, r] {
      LASP_TEST_CUDA(cudaSetDevice(r));
      f(r);
    });
  for (auto& t : th) t.join();
}

/// NCCL communicators of devices 0..n-1 (ncclCommInitAll); rank r is device r. Destroyed by one
/// thread per rank at scope exit. A rank that aborted its communicator marks it `aborted` (the
/// handle is gone); the others are then aborted too instead of destroyed (their peer is dead).
struct Clique {
  std::vector<ncclComm_t> comms;
  std::vector<char> aborted;       // rank r's handle was aborted (gone)
  std::atomic<bool> dead{false};   // a communicator derived from the clique failed: abort, never destroy
  explicit Clique(int n) : comms(std::size_t(n)), aborted(std::size_t(n), 0) {
    std::vector<int> devs(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) devs[std::size_t(i)] = i;
    LASP_TEST_NCCL(ncclCommInitAll(comms.data(), n, devs.data()));
  }
  Clique(const Clique&) = delete;
  Clique& operator=(const Clique&) = delete;
  ~Clique() {
    const bool ok = alive();
    on_gpu_threads(size(), [&](int r) {
      if (aborted[std::size_t(r)]) return;
      if (ok) ncclCommDestroy(comms[std::size_t(r)]);
      else ncclCommAbort(comms[std::size_t(r)]);
    });
  }
  int size() const { return int(comms.size()); }
  /// No rank has aborted: the clique can run another case.
  bool alive() const {
    if (dead) return false;
    for (char a : aborted)
      if (a) return false;
    return true;
  }
};

/// Waits for `stream`, polling the communicator. Returns false (after aborting the comm) when a
/// peer reported a failure through `failed`, NCCL reports an error, or `timeout_s` passes: a
/// failed rank must fail the test, not hang it.
inline bool wait_or_abort(cudaStream_t stream, lasp::comm::Nccl& comm, std::atomic<bool>& failed,
                          double timeout_s = 120.0) {
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const cudaError_t q = cudaStreamQuery(stream);
    if (q == cudaSuccess) return true;
    const bool timed_out =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s;
    if (q != cudaErrorNotReady || failed.load() || comm.check() != lasp::Status::kSuccess || timed_out) {
      failed = true;
      ncclCommAbort(comm.handle());
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

/// What one SP rank brings back: its statuses and whole copies of the device output buffers
/// (only its own segment may have been written).
template <class Elem>
struct RankOut {
  lasp::Status make = lasp::Status::kInternalError, fwd = lasp::Status::kInternalError,
               bwd = lasp::Status::kInternalError, deferred = lasp::Status::kInternalError;
  bool completed = false;  // the stream finished
  bool aborted = false;    // the rank aborted its communicator (it must not be used again)
  int nccl_rank = -1, nccl_size = -1;
  AlignedVec<Elem> o, dq, dk, dv;
  AlignedVec<float> dg, fin, dinit;
  bool ok() const {
    return completed && make == lasp::Status::kSuccess && fwd == lasp::Status::kSuccess &&
           bwd == lasp::Status::kSuccess && deferred == lasp::Status::kSuccess;
  }
  /// After the stream completed: the deferred verdict of workspace `w` and whole copies of the
  /// device outputs `dp` of problem `p`.
  template <class DP, class P>
  void collect(const DP& dp, const P& p, const lasp::Workspace& w, cudaStream_t st) {
    deferred = lasp::cuda::deferred_status(w, st);
    auto get = [](const auto& d, auto& h, std::size_t n) {
      h.resize(n);
      d.download(h);
    };
    get(dp.o, o, p.o_buf.size()), get(dp.dq, dq, p.dq_buf.size()), get(dp.dk, dk, p.dk_buf.size());
    get(dp.dv, dv, p.dv_buf.size()), get(dp.dg, dg, p.dg_buf.size());
    get(dp.fin, fin, p.final_buf.size()), get(dp.dinit, dinit, p.dinit_buf.size());
  }
};

/// SP rank r of problem p through the communicator `comm` (already made; `made` is how that
/// went): forward then backward with Policy on the current device and a stream of its own. Every
/// rank holds device copies of the WHOLE problem (outputs poisoned) and works on the views of its
/// segment. `start` is passed by all ranks of the group once their buffers exist (no allocation
/// while collectives run). With `plan`, every rank makes the plan of its shape first (make_plan,
/// collective) and calls forward/backward with it (`out.make` is then make_plan's status).
/// `fail()` is called when this rank stops early (its peers must not wait for it); `wait(st)`
/// waits for the stream and returns false when it gave up (the rank counts as aborted).
template <class Policy, class Elem, class Comm, class Fail, class Wait>
RankOut<Elem> run_rank_on(GlobalProblem<Elem>& p, int r, Comm& comm, lasp::Status made, Barrier& start, bool plan,
                          Fail&& fail, Wait&& wait) {
  using Decay = typename Policy::Decay;
  RankOut<Elem> out;
  out.make = made;
  out.nccl_rank = comm.rank();
  out.nccl_size = comm.size();
  DeviceProblem<Elem> dp(p);
  const lasp::Shape shape = p.shape_of(r);
  DeviceBuf<float> staging(lasp::plan_staging_floats(p.spec.R));
  lasp::Plan<Policy, Elem> pl;
  const std::size_t wsb = lasp::workspace_size<Policy, Elem>(shape, comm);
  DeviceBuf<unsigned char> ws(wsb);
  LASP_TEST_CUDA(cudaMemset(ws.ptr, 0xFF, wsb));  // lasp must not rely on a zeroed workspace
  const lasp::Workspace w{ws.ptr, wsb};
  cudaStream_t st;
  LASP_TEST_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  LASP_TEST_CUDA(cudaDeviceSynchronize());
  start.arrive_and_wait();
  if (out.make == lasp::Status::kSuccess && plan) {
    out.make = lasp::make_plan<Policy, Elem>(shape, dp.template decay_params<Decay>(r), comm, staging.ptr, st, &pl);
    if (out.make == lasp::Status::kSuccess && pl.workspace_size() > wsb) out.make = lasp::Status::kWorkspaceTooSmall;
  }
  if (out.make == lasp::Status::kSuccess) {
    auto fa = dp.template forward_args<Decay>(r);
    out.fwd = plan ? lasp::forward(pl, fa, comm, w, st) : lasp::forward<Policy>(fa, comm, w, st);
    if (out.fwd == lasp::Status::kSuccess) {
      auto ba = dp.template backward_args<Decay>(r);
      out.bwd = plan ? lasp::backward(pl, ba, comm, w, st) : lasp::backward<Policy>(ba, comm, w, st);
    }
  }
  // A rank that stopped early leaves its peers waiting: tell them.
  if (out.make != lasp::Status::kSuccess || out.fwd != lasp::Status::kSuccess || out.bwd != lasp::Status::kSuccess)
    fail();
  if (out.make == lasp::Status::kSuccess) {
    out.completed = wait(st);
    out.aborted = !out.completed;
  }
  if (out.completed) out.collect(dp, p, w, st);
  cudaStreamDestroy(st);
  return out;
}

/// SP rank r of problem p through comm::Nccl over `nc` (run_rank_on). A rank that fails sets
/// `failed`, which its peers' wait_or_abort polls.
template <class Policy, class Elem>
RankOut<Elem> run_rank(GlobalProblem<Elem>& p, int r, ncclComm_t nc, std::atomic<bool>& failed, Barrier& start,
                       bool plan = false, int node_size = 0) {
  lasp::comm::Nccl comm;
  const lasp::Status made = lasp::comm::Nccl::make(nc, node_size, &comm);  // node_size: schedule::Hierarchical
  return run_rank_on<Policy>(
      p, r, comm, made, start, plan, [&] { failed = true; },
      [&](cudaStream_t st) { return wait_or_abort(st, comm, failed); });
}

/// Runs body(r, comm, made, fail, wait) on R rank threads, one group:
/// - cq != nullptr: over the NCCL clique (rank r = device r, comm::Nccl; `made` is how making it
///   went; `fail()` sets a flag the peers' waits poll; `wait(st)` is wait_or_abort and marks the
///   rank aborted in the clique when it gives up);
/// - cq == nullptr: R threads on device 0 over a fresh comm::DeviceGroup (`fail()` aborts the
///   group so that blocked receives return; `wait(st)` is comm::wait with a 120 s limit).
/// node_size: emulated nodes for schedule::Hierarchical (0 = none).
template <class Body>
void on_ranks(Clique* cq, int R, int node_size, Body&& body) {
  if (cq) {
    std::atomic<bool> failed{false};
    on_gpu_threads(R, [&](int r) {
      lasp::comm::Nccl comm;
      const lasp::Status made = lasp::comm::Nccl::make(cq->comms[std::size_t(r)], node_size, &comm);
      body(r, comm, made, [&] { failed = true; },
           [&](cudaStream_t st) {
             const bool ok = wait_or_abort(st, comm, failed);
             if (!ok) cq->aborted[std::size_t(r)] = 1;
             return ok;
           });
    });
    return;
  }
  lasp::comm::DeviceGroup g(R, std::chrono::seconds(60));
  g.set_node_size(node_size);
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      LASP_TEST_CUDA(cudaSetDevice(0));
      auto comm = g.comm(r);
      body(r, comm, lasp::Status::kSuccess, [&] { g.abort(); },
           [&](cudaStream_t st) {
             return lasp::comm::wait(st, std::chrono::seconds(120), lasp::comm::WaitOptions{}, nullptr) ==
                    lasp::Status::kSuccess;
           });
    });
  for (auto& t : th) t.join();
}

/// Copies the elements of tokens [t0, t0+N) (x < X, padding excluded) from src to dst.
template <class T>
void merge_tokens(const SeqLayout& l, const AlignedVec<T>& src, AlignedVec<T>& dst, index_t t0, index_t N) {
  for (index_t b = 0; b < l.B; ++b)
    for (index_t t = t0; t < t0 + N; ++t)
      for (index_t h = 0; h < l.H; ++h)
        for (index_t x = 0; x < l.X; ++x) dst[l.offset(b, t, h) + std::size_t(x)] = src[l.offset(b, t, h) + std::size_t(x)];
}
/// Every element of `buf` outside tokens [t0, t0+N) and every padding element still holds the
/// poison bytes: the rank wrote nothing outside its segment.
template <class T>
bool untouched_outside(const SeqLayout& l, const AlignedVec<T>& buf, index_t t0, index_t N) {
  const auto* p = reinterpret_cast<const unsigned char*>(buf.data());
  for (index_t b = 0; b < l.B; ++b)
    for (index_t t = 0; t < l.T; ++t)
      for (index_t h = 0; h < l.H; ++h)
        for (index_t x = 0; x < l.pitch; ++x) {
          if (t >= t0 && t < t0 + N && x < l.X) continue;
          const std::size_t i = l.offset(b, t, h) + std::size_t(x);
          for (std::size_t j = 0; j < sizeof(T); ++j)
            if (p[i * sizeof(T) + j] != kNaNByte) return false;
        }
  return true;
}
/// The gate layout as a SeqLayout with X = pitch = 1 (same offsets).
inline SeqLayout as_seq(const GateLayout& g) { return {g.B, g.T, g.H, 1, 1, g.layout}; }

template <class Elem> struct Limits;
// As in tests/gpu/test_chunk_kernels.cu: norm-wise relative errors against the double reference
// on the rounded inputs; dg (a cancelling reverse cumulative sum) gets twice the limit.
template <> struct Limits<lasp::bf16> { static constexpr double kOut = 1.6e-2, kDg = 3.2e-2; };
template <> struct Limits<lasp::fp16> { static constexpr double kOut = 2.5e-3, kDg = 5e-3; };

/// Checks the R ranks' results of problem p (statuses, writes confined to each rank's segment,
/// ownership of the states), merges them into p's host buffers and compares with the double
/// reference on the whole sequence. `label` names the case in messages.
template <class Policy, class Elem>
void check_against_reference(GlobalProblem<Elem>& p, std::vector<RankOut<Elem>>& outs, const std::string& label) {
  using Decay = typename Policy::Decay;
  const int R = p.spec.R;
  INFO(label);
  REQUIRE(int(outs.size()) == R);
  for (int r = 0; r < R; ++r) {
    const RankOut<Elem>& o = outs[std::size_t(r)];
    CAPTURE(r);
    CHECK(o.make == lasp::Status::kSuccess);
    CHECK(o.fwd == lasp::Status::kSuccess);
    CHECK(o.bwd == lasp::Status::kSuccess);
    CHECK(o.completed);
    CHECK(o.deferred == lasp::Status::kSuccess);
    CHECK(o.nccl_rank == r);
    CHECK(o.nccl_size == R);
  }
  for (const auto& o : outs)
    if (!o.ok()) return;
  p.poison_outputs();
  for (int r = 0; r < R; ++r) {
    CAPTURE(r);
    const RankOut<Elem>& o = outs[std::size_t(r)];
    const index_t t0 = p.t0(r), N = p.n_of(r);
    CHECK(untouched_outside(p.lv, o.o, t0, N));
    CHECK(untouched_outside(p.lq, o.dq, t0, N));
    CHECK(untouched_outside(p.lq, o.dk, t0, N));
    CHECK(untouched_outside(p.lv, o.dv, t0, N));
    merge_tokens(p.lv, o.o, p.o_buf, t0, N);
    merge_tokens(p.lq, o.dq, p.dq_buf, t0, N);
    merge_tokens(p.lq, o.dk, p.dk_buf, t0, N);
    merge_tokens(p.lv, o.dv, p.dv_buf, t0, N);
    if constexpr (Decay::kHasGradient) {
      CHECK(untouched_outside(as_seq(p.lg), o.dg, t0, N));
      merge_tokens(as_seq(p.lg), o.dg, p.dg_buf, t0, N);
    }
    // final_state is written by the last rank only, d_initial_state by rank 0 only.
    if (r != R - 1) CHECK(all_bytes(o.fin, kNaNByte));
    if (r != 0) CHECK(all_bytes(o.dinit, kNaNByte));
  }
  p.final_buf = outs[std::size_t(R - 1)].fin;
  p.dinit_buf = outs[0].dinit;
  const RefResult ref = run_reference<Decay>(p);
  const double eo = rel_err(p.o(), ref.o), edq = rel_err(p.dq(), ref.dq), edk = rel_err(p.dk(), ref.dk),
               edv = rel_err(p.dv(), ref.dv);
  CHECK(eo < Limits<Elem>::kOut);
  CHECK(edq < Limits<Elem>::kOut);
  CHECK(edk < Limits<Elem>::kOut);
  CHECK(edv < Limits<Elem>::kOut);
  double efin = 0, edinit = 0, edg = 0;
  if (p.spec.final_state) {
    efin = rel_err(p.final_state(), ref.final_state);
    CHECK(efin < Limits<Elem>::kOut);
  } else {
    CHECK(all_bytes(p.final_buf, kNaNByte));
  }
  if (p.spec.initial_state) {
    edinit = rel_err(p.d_initial_state(), ref.dinit);
    CHECK(edinit < Limits<Elem>::kOut);
  } else {
    CHECK(all_bytes(p.dinit_buf, kNaNByte));
  }
  if constexpr (Decay::kHasGradient) {
    edg = rel_err(p.dg(), ref.dlog);
    CHECK(edg < Limits<Elem>::kDg);
  }
  std::printf("  %-70s o %.2e dq %.2e dk %.2e dv %.2e fin %.2e dinit %.2e dg %.2e\n", label.c_str(), eo, edq, edk,
              edv, efin, edinit, edg);
}

/// Describes a problem for messages.
template <class Policy, class Elem>
std::string describe_case(const ProblemSpec& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "R=%d %s %s B=%lld N=%lld H=%lld D=%lld E=%lld %s states=%d", s.R,
                lasp::describe<Policy>().c_str(), lasp::to_string(lasp::dtype_of<Elem>::value), (long long)s.B,
                (long long)s.N, (long long)s.H, (long long)s.D, (long long)s.E, to_string(s.layout),
                int(s.initial_state));
  return buf;
}

/// B = 2, N = 200 per rank (3 full chunks + a tail of 8), H = 3, D = E = 128, states on.
inline ProblemSpec base_spec(std::uint32_t seed) {
  ProblemSpec s;
  s.B = 2, s.N = 200, s.H = 3, s.D = 128, s.E = 128;
  s.scale = 0.0884f;  // ~ 1/sqrt(128)
  s.initial_state = s.final_state = true;
  s.seed = seed;
  return s;
}

/// One SP group over the clique `cq` (rank r = device r), or, with cq == nullptr, R threads on
/// ONE GPU exchanging through comm::DeviceGroup (on_ranks): forward + backward of a random
/// problem with spec s, checked against the whole-sequence reference.
template <class Policy, class Elem>
void run_case_on(Clique* cq, int R, ProblemSpec s, const std::vector<float>& slopes, bool plan, int node_size) {
  s.R = R;
  if (cq) REQUIRE_MESSAGE(cq->alive(), "an earlier case of this test aborted the NCCL communicators");
  GlobalProblem<Elem> p(s);
  if (!slopes.empty()) p.slopes = slopes;  // per-head decay: the problem's slopes (H values)
  std::vector<RankOut<Elem>> outs(std::size_t(s.R));
  Barrier start(s.R);
  on_ranks(cq, R, node_size, [&](int r, auto& comm, lasp::Status made, auto&& fail, auto&& wait) {
    outs[std::size_t(r)] = run_rank_on<Policy>(p, r, comm, made, start, plan, fail, wait);
  });
  check_against_reference<Policy>(p, outs,
                                  std::string(cq ? "" : "threads on 1 GPU: ") + describe_case<Policy, Elem>(s) +
                                      (plan ? " (plan)" : "") +
                                      (node_size > 0 ? " nodes of " + std::to_string(node_size) : ""));
}

/// Over NCCL: the clique's R GPUs.
template <class Policy, class Elem>
void run_sp_case(Clique& cq, ProblemSpec s, const std::vector<float>& slopes = {}, bool plan = false,
                 int node_size = 0) {
  run_case_on<Policy, Elem>(&cq, cq.size(), s, slopes, plan, node_size);
}

/// R ranks as threads of this process on ONE GPU (device 0) through comm::DeviceGroup: every
/// schedule's device path, plans, uneven N and the kernels' multi-rank inputs run where no
/// second GPU is lent. A rank that fails aborts the group (its peers' receives return
/// kCommError); a receive that waits 60 s breaks the group.
template <class Policy, class Elem>
void run_group_case(int R, ProblemSpec s, const std::vector<float>& slopes = {}, bool plan = false,
                    int node_size = 0) {
  run_case_on<Policy, Elem>(nullptr, R, s, slopes, plan, node_size);
}

}  // namespace lasp_test
