// lasp over MPI + NCCL: one process per GPU, launched by mpirun/srun (single or multi node).
// MPI only bootstraps NCCL (rank 0's ncclUniqueId is broadcast) and gathers the error table;
// NCCL carries the traffic. Every rank builds the same random global problem deterministically,
// runs forward + backward of its own segment with lasp, and compares it with a double-precision
// reference of the whole sequence (the recurrent form, O(T D E), computed on the host).
//
//   mpirun -np 4 ./lasp_mpi_example                # one SP group of 4 ranks, N = 1024 per rank
//   mpirun -np 8 ./lasp_mpi_example --sp 4         # SP x DP = 4 x 2: two SP groups, other samples
//   options: --sp S (SP group size, default all ranks), --n N (tokens per rank), --iters K (timed)
//
// Problem: B = 1, H = 4, D = E = 128, bf16, per-head decay (TransNormerLLM slopes), scale
// 1/sqrt(D), initial state and final state on. With --sp < world size the world communicator is
// split (lasp::comm::split_sp_dp); a learned initial state is then a parameter replicated on all
// ranks, and its gradient is reduced over ALL world ranks (math.md section 5), as DDP would.
// Exit code 0 when every error is within the bf16 limits, 1 otherwise (the same on every rank),
// 77 when no GPU is visible.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
// The C API only (MPI's deprecated C++ bindings are not needed).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <nccl.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#include <lasp/comm/check.cuh>
#include <lasp/comm/groups.hpp>
#include <lasp/comm/nccl.cuh>
#include <lasp/lasp.cuh>
#include "mpi_bootstrap.hpp"

// Aborting checks: fine in an example (the library itself only returns statuses).
#define CHECK_CUDA(x)                                                                              \
  do {                                                                                             \
    cudaError_t e_ = (x);                                                                          \
    if (e_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));      \
      MPI_Abort(MPI_COMM_WORLD, 2);                                                                \
    }                                                                                              \
  } while (0)
#define CHECK_NCCL(x)                                                                              \
  do {                                                                                             \
    ncclResult_t r_ = (x);                                                                         \
    if (r_ != ncclSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, ncclGetErrorString(r_));      \
      MPI_Abort(MPI_COMM_WORLD, 2);                                                                \
    }                                                                                              \
  } while (0)
#define CHECK_LASP(x)                                                                              \
  do {                                                                                             \
    lasp::Status s_ = (x);                                                                         \
    if (s_ != lasp::Status::kSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, lasp::to_string(s_));        \
      MPI_Abort(MPI_COMM_WORLD, 3);                                                                \
    }                                                                                              \
  } while (0)

namespace {

using Elem = __nv_bfloat16;
using Policy = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
constexpr int B = 1, H = 4, D = 128, E = 128;
constexpr double kLimit = 1.6e-2;  // bf16 outputs (and fp32 states), norm-wise relative error

/// The global problem of one SP group: T = R*N tokens, token-major (B,T,H,X), inputs rounded to
/// bf16 (the values lasp reads), fp32 slopes, initial state and dS_final (B,H,D,E).
struct Global {
  long long T;
  std::vector<float> q, k, v, dout, init, dfinal, slopes;
  Global(long long T_, unsigned seed) : T(T_) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    auto fill = [&](std::vector<float>& x, std::size_t n, bool round) {
      x.resize(n);
      for (float& y : x) y = round ? __bfloat162float(__float2bfloat16_rn(nd(gen))) : nd(gen);
    };
    fill(q, std::size_t(B * T * H * D), true), fill(k, std::size_t(B * T * H * D), true);
    fill(v, std::size_t(B * T * H * E), true), fill(dout, std::size_t(B * T * H * E), true);
    fill(init, std::size_t(B * H * D * E), false), fill(dfinal, std::size_t(B * H * D * E), false);
    for (int h = 0; h < H; ++h) slopes.push_back(float(std::exp2(-8.0 * (h + 1) / H)));  // TNL slopes
  }
  std::size_t qk(long long b, long long t, int h) const { return std::size_t(((b * T + t) * H + h) * D); }
  std::size_t vo(long long b, long long t, int h) const { return std::size_t(((b * T + t) * H + h) * E); }
};

/// Reference outputs of tokens [t0, t0+N) (token-major (B,N,H,X) like lasp's local buffers), in
/// double, by the recurrence S_t = a S_{t-1} + k_t v_t^T, o_t = scale S_t^T q_t forward and
/// dS_t = scale q_t do_t^T + a dS_{t+1} backward. Final state only if last, dS_init only if first.
struct Ref {
  std::vector<double> o, dq, dk, dv, fin, dinit;
};
Ref reference(const Global& g, long long t0, long long N, double scale, bool first, bool last) {
  Ref r;
  r.o.assign(std::size_t(B * N * H * E), 0), r.dv.assign(r.o.size(), 0);
  r.dq.assign(std::size_t(B * N * H * D), 0), r.dk.assign(r.dq.size(), 0);
  if (last) r.fin.assign(std::size_t(B * H * D * E), 0);
  if (first) r.dinit.assign(std::size_t(B * H * D * E), 0);
  std::vector<double> S(std::size_t(D * E));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const double a = std::exp(-double(g.slopes[std::size_t(h)]));
      const std::size_t st = std::size_t((b * H + h) * D * E);
      // Forward over [0, t0 + N): o and dq of the local tokens.
      for (std::size_t i = 0; i < S.size(); ++i) S[i] = g.init[st + i];
      for (long long t = 0; t < t0 + N; ++t) {
        const float *kt = &g.k[g.qk(b, t, h)], *vt = &g.v[g.vo(b, t, h)];
        for (int d = 0; d < D; ++d)
          for (int e = 0; e < E; ++e) S[std::size_t(d * E + e)] = a * S[std::size_t(d * E + e)] + double(kt[d]) * vt[e];
        if (t < t0) continue;
        const float *qt = &g.q[g.qk(b, t, h)], *dot = &g.dout[g.vo(b, t, h)];
        double* ot = &r.o[std::size_t(((b * N + (t - t0)) * H + h) * E)];
        double* dqt = &r.dq[std::size_t(((b * N + (t - t0)) * H + h) * D)];
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int e = 0; e < E; ++e) {
            ot[e] += scale * S[std::size_t(d * E + e)] * qt[d];
            acc += S[std::size_t(d * E + e)] * dot[e];
          }
          dqt[d] = scale * acc;
        }
      }
      if (last)
        for (std::size_t i = 0; i < S.size(); ++i) r.fin[st + i] = S[i];
      // Backward over [t0, T) from dS_final: dk, dv of the local tokens.
      for (std::size_t i = 0; i < S.size(); ++i) S[i] = g.dfinal[st + i];
      for (long long t = g.T - 1; t >= t0; --t) {
        const float *qt = &g.q[g.qk(b, t, h)], *dot = &g.dout[g.vo(b, t, h)];
        for (int d = 0; d < D; ++d)
          for (int e = 0; e < E; ++e) S[std::size_t(d * E + e)] += scale * double(qt[d]) * dot[e];
        if (t < t0 + N) {
          const float *kt = &g.k[g.qk(b, t, h)], *vt = &g.v[g.vo(b, t, h)];
          double* dkt = &r.dk[std::size_t(((b * N + (t - t0)) * H + h) * D)];
          double* dvt = &r.dv[std::size_t(((b * N + (t - t0)) * H + h) * E)];
          for (int d = 0; d < D; ++d) {
            double acc = 0;
            for (int e = 0; e < E; ++e) {
              acc += S[std::size_t(d * E + e)] * vt[e];
              dvt[e] += S[std::size_t(d * E + e)] * kt[d];
            }
            dkt[d] = acc;
          }
        }
        for (double& x : S) x *= a;
      }
      if (first)
        for (std::size_t i = 0; i < S.size(); ++i) r.dinit[st + i] = S[i];
    }
  return r;
}

/// Sums of squares for a norm-wise relative error: {sum (x - ref)^2, sum ref^2}.
struct Err {
  double num = 0, den = 0;
  template <class X>
  void add(const X& x, const std::vector<double>& ref) {
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const double d = double(x[i]) - ref[i];
      num += d * d;
      den += ref[i] * ref[i];
    }
  }
  double rel() const { return std::isnan(num) ? NAN : den > 0 ? std::sqrt(num / den) : std::sqrt(num); }
};

std::vector<float> to_float(const std::vector<Elem>& x) {
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = __bfloat162float(x[i]);
  return y;
}

template <class T>
T* device_copy(const std::vector<T>& h) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<std::size_t>(h.size(), 1) * sizeof(T)));
  if (!h.empty()) CHECK_CUDA(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <class T>
std::vector<T> host_copy(const T* d, std::size_t n) {
  std::vector<T> h(n);
  CHECK_CUDA(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
/// Tokens [t0, t0+N) of a token-major (B,T,H,X) array as bf16 (B,N,H,X).
std::vector<Elem> slice_bf16(const std::vector<float>& x, long long T, long long t0, long long N, int X) {
  std::vector<Elem> y;
  y.reserve(std::size_t(B * N * H * X));
  for (long long b = 0; b < B; ++b)
    for (long long t = t0; t < t0 + N; ++t)
      for (long long i = 0; i < H * X; ++i) y.push_back(__float2bfloat16_rn(x[std::size_t((b * T + t) * H * X + i)]));
  return y;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  int sp = world_size, iters = 5;
  long long N = 1024;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--sp")) sp = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--n")) N = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  }
  lasp::comm::GroupRanks grp;
  if (lasp::comm::GroupRanks::make(world_rank, world_size, sp, &grp) != lasp::Status::kSuccess || N < 1) {
    if (world_rank == 0)
      std::fprintf(stderr, "usage: mpirun -np W %s [--sp S] [--n N] [--iters K]: W %% S must be 0 (W=%d, S=%d)\n",
                   argv[0], world_size, sp);
    MPI_Finalize();
    return 1;
  }

  // One GPU per process: the local rank on this node picks the device.
  const int device = lasp_example::mpi_pick_device(world_rank);
  if (device < 0) {
    if (world_rank == 0) std::printf("lasp MPI example: skipped (no CUDA device visible)\n");
    MPI_Finalize();
    return 77;
  }

  ncclComm_t world = nullptr, sp_comm = nullptr, dp_comm = nullptr;
  CHECK_NCCL(lasp_example::mpi_nccl_world(world_rank, world_size, &world));
  if (sp < world_size) {
    CHECK_LASP(lasp::comm::split_sp_dp(world, sp, &sp_comm, &dp_comm));  // owned by us
  } else {
    sp_comm = world;  // one SP group: the world is the SP group
  }
  lasp::comm::Nccl comm;
  CHECK_LASP(lasp::comm::Nccl::make(sp_comm, &comm));
  const int r = comm.rank(), R = comm.size();
  const bool first = r == 0, last = r == R - 1;

  // Every rank of SP group c builds the same global problem (seed 1234 + c), keeps its segment.
  const long long T = N * R, t0 = N * r;
  const Global g(T, 1234u + unsigned(grp.sp_color));
  const float scale = 1.f / std::sqrt(float(D));
  Elem *dq_in = device_copy(slice_bf16(g.q, T, t0, N, D)), *dk_in = device_copy(slice_bf16(g.k, T, t0, N, D));
  Elem *dv_in = device_copy(slice_bf16(g.v, T, t0, N, E)), *ddo = device_copy(slice_bf16(g.dout, T, t0, N, E));
  Elem *d_o = device_copy(std::vector<Elem>(std::size_t(B * N * H * E))),
       *d_dq = device_copy(std::vector<Elem>(std::size_t(B * N * H * D))),
       *d_dk = device_copy(std::vector<Elem>(std::size_t(B * N * H * D))),
       *d_dv = device_copy(std::vector<Elem>(std::size_t(B * N * H * E)));
  const std::size_t nst = std::size_t(B * H * D * E);
  float *d_init = device_copy(g.init), *d_dfinal = device_copy(g.dfinal);
  float *d_fin = device_copy(std::vector<float>(nst)), *d_dinit = device_copy(std::vector<float>(nst));

  const lasp::Shape shape{B, N, H, D, E, R};
  lasp::ForwardArgs<Elem, lasp::decay::PerHead> fa{shape,
                                                  lasp::token_major<const Elem>(dq_in, N, H, D),
                                                  lasp::token_major<const Elem>(dk_in, N, H, D),
                                                  lasp::token_major<const Elem>(dv_in, N, H, E),
                                                  lasp::token_major(d_o, N, H, E),
                                                  scale,
                                                  {g.slopes.data()}};
  fa.initial_state = first ? d_init : nullptr;  // read on SP rank 0 only
  fa.final_state = last ? d_fin : nullptr;      // written on the last SP rank only
  lasp::BackwardArgs<Elem, lasp::decay::PerHead> ba{shape,
                                                   fa.q,
                                                   fa.k,
                                                   fa.v,
                                                   lasp::token_major<const Elem>(ddo, N, H, E),
                                                   lasp::token_major(d_dq, N, H, D),
                                                   lasp::token_major(d_dk, N, H, D),
                                                   lasp::token_major(d_dv, N, H, E),
                                                   scale,
                                                   {g.slopes.data()}};
  ba.d_final_state = last ? d_dfinal : nullptr;
  ba.d_initial_state = first ? d_dinit : nullptr;

  const std::size_t ws_bytes = lasp::workspace_size<Policy, Elem>(shape, comm);
  void* ws_ptr = nullptr;
  CHECK_CUDA(cudaMalloc(&ws_ptr, ws_bytes));
  const lasp::Workspace ws{ws_ptr, ws_bytes};
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // Set-up: the checking mode (synchronises; same answer on every rank) and can_implement.
  float* scratch = nullptr;
  CHECK_CUDA(cudaMalloc(&scratch, lasp::comm::check_peers_scratch_floats(R) * sizeof(float)));
  CHECK_LASP((lasp::comm::check_peers<Policy, Elem>(shape, comm, scratch, stream)));
  CHECK_LASP((lasp::can_implement<Policy, Elem>(fa, comm, ws)));

  // Warm-up, then `iters` timed forward + backward pairs (the outputs are the same every time).
  cudaEvent_t ev[3];
  for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  CHECK_LASP(lasp::forward<Policy>(fa, comm, ws, stream));
  CHECK_LASP(lasp::backward<Policy>(ba, comm, ws, stream));
  float fwd_ms = 0, bwd_ms = 0;
  for (int it = 0; it < iters; ++it) {
    CHECK_CUDA(cudaEventRecord(ev[0], stream));
    CHECK_LASP(lasp::forward<Policy>(fa, comm, ws, stream));
    CHECK_CUDA(cudaEventRecord(ev[1], stream));
    CHECK_LASP(lasp::backward<Policy>(ba, comm, ws, stream));
    CHECK_CUDA(cudaEventRecord(ev[2], stream));
    CHECK_CUDA(cudaEventSynchronize(ev[2]));
    float f = 0, b = 0;
    CHECK_CUDA(cudaEventElapsedTime(&f, ev[0], ev[1]));
    CHECK_CUDA(cudaEventElapsedTime(&b, ev[1], ev[2]));
    fwd_ms += f / float(iters), bwd_ms += b / float(iters);
  }
  CHECK_LASP(lasp::cuda::deferred_status(ws, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));

  // Gradient of a learned initial state: a parameter replicated on all W ranks, non-zero only on
  // SP rank 0 of each group -> sum over ALL world ranks (not only DP). Also reduce the reference
  // the same way, to check the reduced value.
  const Ref ref = reference(g, t0, N, double(scale), first, last);
  double dinit_reduced_err = 0;
  {
    std::vector<float> mine(nst, 0.f), ref_mine(nst, 0.f);
    if (first) {
      mine = host_copy(d_dinit, nst);
      for (std::size_t i = 0; i < nst; ++i) ref_mine[i] = float(ref.dinit[i]);
    }
    float *dm = device_copy(mine), *dr = device_copy(ref_mine);
    CHECK_NCCL(ncclGroupStart());
    CHECK_NCCL(ncclAllReduce(dm, dm, nst, ncclFloat, ncclSum, world, stream));
    CHECK_NCCL(ncclAllReduce(dr, dr, nst, ncclFloat, ncclSum, world, stream));
    CHECK_NCCL(ncclGroupEnd());
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const std::vector<float> a = host_copy(dm, nst), b = host_copy(dr, nst);
    Err e;
    e.add(a, std::vector<double>(b.begin(), b.end()));
    dinit_reduced_err = e.rel();
    CHECK_CUDA(cudaFree(dm));
    CHECK_CUDA(cudaFree(dr));
  }

  // Errors of this rank's segment; norm-wise over the whole world by summing the squares.
  enum { kO, kDq, kDk, kDv, kFin, kDinit, kCount };
  Err err[kCount];
  err[kO].add(to_float(host_copy(d_o, ref.o.size())), ref.o);
  err[kDq].add(to_float(host_copy(d_dq, ref.dq.size())), ref.dq);
  err[kDk].add(to_float(host_copy(d_dk, ref.dk.size())), ref.dk);
  err[kDv].add(to_float(host_copy(d_dv, ref.dv.size())), ref.dv);
  if (last) err[kFin].add(host_copy(d_fin, nst), ref.fin);
  if (first) err[kDinit].add(host_copy(d_dinit, nst), ref.dinit);
  double row[kCount + 3];
  for (int i = 0; i < kCount; ++i) row[i] = err[i].rel();
  row[kCount] = fwd_ms, row[kCount + 1] = bwd_ms, row[kCount + 2] = dinit_reduced_err;
  std::vector<double> table(std::size_t(world_size) * (kCount + 3));
  MPI_Gather(row, kCount + 3, MPI_DOUBLE, table.data(), kCount + 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  double sums[2 * kCount], tot[2 * kCount];
  for (int i = 0; i < kCount; ++i) sums[2 * i] = err[i].num, sums[2 * i + 1] = err[i].den;
  MPI_Reduce(sums, tot, 2 * kCount, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);

  int fail = 0;
  if (world_rank == 0) {
    int nccl_version = 0;
    ncclGetVersion(&nccl_version);
    std::printf("lasp %d.%d.%d MPI+NCCL example: W=%d ranks (SP=%d x DP=%d), NCCL %d, NCCL_NVLS_ENABLE=%s\n",
                lasp::kVersionMajor, lasp::kVersionMinor, lasp::kVersionPatch, world_size, sp, world_size / sp,
                nccl_version, std::getenv("NCCL_NVLS_ENABLE"));
    std::printf("%s, bf16, B=%d H=%d D=%d E=%d N=%lld per rank (T=%lld per SP group), %d timed iterations\n",
                lasp::describe<Policy>().c_str(), B, H, D, E, N, T, iters);
    std::printf("%5s %3s %3s | %9s %9s %9s %9s %9s %9s | %8s %8s\n", "world", "sp", "grp", "o", "dq", "dk", "dv",
                "final", "d_init", "fwd ms", "bwd ms");
    for (int w = 0; w < world_size; ++w) {
      const double* t = &table[std::size_t(w) * (kCount + 3)];
      lasp::comm::GroupRanks gw;
      (void)lasp::comm::GroupRanks::make(w, world_size, sp, &gw);
      std::printf("%5d %3d %3d | %9.2e %9.2e %9.2e %9.2e", w, gw.sp_rank, gw.sp_color, t[kO], t[kDq], t[kDk], t[kDv]);
      if (gw.sp_rank == sp - 1) std::printf(" %9.2e", t[kFin]);
      else std::printf(" %9s", "-");
      if (gw.sp_rank == 0) std::printf(" %9.2e", t[kDinit]);
      else std::printf(" %9s", "-");
      std::printf(" | %8.3f %8.3f\n", t[kCount], t[kCount + 1]);
      for (int i = 0; i < kCount; ++i)
        if (!(t[i] <= kLimit)) fail = 1;
      if (!(t[kCount + 2] <= kLimit)) fail = 1;
    }
    const char* names[kCount] = {"o", "dq", "dk", "dv", "final", "d_init"};
    std::printf("whole world (norm-wise):");
    for (int i = 0; i < kCount; ++i) {
      const double e = tot[2 * i + 1] > 0 ? std::sqrt(tot[2 * i] / tot[2 * i + 1]) : std::sqrt(tot[2 * i]);
      std::printf(" %s %.2e", names[i], e);
      if (!(e <= kLimit)) fail = 1;
    }
    std::printf("\nd_init summed over all %d ranks (learned-S_init gradient, DDP-style): %.2e\n", world_size,
                table[kCount + 2]);
    std::printf("%s (limit %.1e)\n", fail ? "FAILED" : "PASSED", kLimit);
  }
  MPI_Bcast(&fail, 1, MPI_INT, 0, MPI_COMM_WORLD);

  for (auto& e : ev) cudaEventDestroy(e);
  for (void* p : {(void*)dq_in, (void*)dk_in, (void*)dv_in, (void*)ddo, (void*)d_o, (void*)d_dq, (void*)d_dk,
                  (void*)d_dv, (void*)d_init, (void*)d_dfinal, (void*)d_fin, (void*)d_dinit, ws_ptr, (void*)scratch})
    cudaFree(p);
  cudaStreamDestroy(stream);
  if (dp_comm) ncclCommDestroy(dp_comm);
  if (sp_comm != world) ncclCommDestroy(sp_comm);
  ncclCommDestroy(world);
  MPI_Finalize();
  return fail;
}
