// lasp example: one training step of a small linear-attention layer under SP x DP, checked
// against the single-GPU run of the same global batch.
//
// One process drives all W visible GPUs (one std::thread per GPU, ncclCommInitAll). The world is
// split into SP groups of S contiguous ranks and DP groups of strided ranks (math.md section 5,
// lasp::comm::split_sp_dp): W = 4, S = 2 gives SP groups (0,1) (2,3) and DP groups (0,2) (1,3).
//
// Layer, per sample of T = S*N tokens (bf16 activations, fp32 master weights cast to bf16 for
// the GEMMs, cuBLAS with fp32 accumulation):
//   Q = x Wq, K = x Wk, V = x Wv          x (T, M); Wq, Wk, Wv (M, H*D); token-major (T, H, D)
//   O = lasp::forward(Q, K, V)            per-head decay (TNL slopes), scale 1/sqrt(D)
//   Y = O Wo                              Wo (H*E, M); Y in fp32
//   loss = sum(Y .* Rt) / count           Rt a fixed random target, count = global token count
// Backward: dY = Rt / count; dWo = O^T dY; dO = dY Wo^T; lasp::backward -> dQ, dK, dV;
//   dWq = x^T dQ, dWk = x^T dK, dWv = x^T dV (dx is not needed here).
//
// Data: a global batch of DP*Bl samples, generated on the host (the same on every rank). DP
// replica d takes samples [d*Bl, (d+1)*Bl); SP rank s of its group takes tokens [s*N, (s+1)*N)
// of each of them. Parameters are replicated on all W ranks (SP ranks included), so the weight
// gradients (and the loss) are summed by one ncclAllReduce over the WORLD communicator; the
// 1/count of the loss is the only normalisation.
//
// Check: the same global batch on GPU 0 alone (SP = 1, lasp::comm::DeviceSingle, B = DP*Bl,
// full sequences of T tokens), same code. Loss relative difference and each weight gradient's
// norm-wise relative error ||g_sp - g_ref|| / ||g_ref|| are printed with the step times.
//
//   lasp_train_step [--sp S] [--gpus G] [--n N] [--bl Bl] [--iters K] [--gather]
//     --sp S     SP group size (default 2 when W is even, else 1); W % S must be 0
//     --gpus G   use the first G visible GPUs (default all: W = G)
//     --n N      tokens per SP rank (default 1024; T = S*N per sample)
//     --bl Bl    samples per DP replica (default 2)
//     --iters K  timed steps (default 10, after 2 warm-up steps)
//     --gather   schedule::AllGather (LASP-2) instead of schedule::Chain
// Exit code: 0 when every comparison passes, 1 otherwise, 77 (skipped) with no GPU.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <lasp/comm/groups.hpp>
#include <lasp/comm/nccl.cuh>
#include <lasp/lasp.cuh>

// Aborting checks: fine for an example (the library itself only returns statuses). _Exit, not
// exit: other rank threads may be blocked inside NCCL, and exit() would run destructors under them.
#define FAIL_NOW(...)                 \
  do {                                \
    std::fprintf(stderr, __VA_ARGS__); \
    std::fflush(stderr);              \
    std::_Exit(1);                    \
  } while (0)
#define CHECK_CUDA(x)                                                                                   \
  do {                                                                                                  \
    cudaError_t e_ = (x);                                                                               \
    if (e_ != cudaSuccess) FAIL_NOW("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
  } while (0)
#define CHECK_CUBLAS(x)                                                                                 \
  do {                                                                                                  \
    cublasStatus_t s_ = (x);                                                                            \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      FAIL_NOW("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cublasGetStatusString(s_));                    \
  } while (0)
#define CHECK_NCCL(x)                                                                                   \
  do {                                                                                                  \
    ncclResult_t r_ = (x);                                                                              \
    if (r_ != ncclSuccess) FAIL_NOW("%s:%d %s: %s\n", __FILE__, __LINE__, #x, ncclGetErrorString(r_));  \
  } while (0)
#define CHECK_LASP(x)                                                                                   \
  do {                                                                                                  \
    lasp::Status s_ = (x);                                                                              \
    if (s_ != lasp::Status::kSuccess) FAIL_NOW("%s:%d %s: %s\n", __FILE__, __LINE__, #x, lasp::to_string(s_)); \
  } while (0)

namespace {

using bf = __nv_bfloat16;
using Decay = lasp::decay::PerHead;

// Model sizes: model dim M, H heads of D = E = 64 (a CUDA-backend head size).
constexpr int M = 256, H = 4, D = 64, E = 64;
constexpr int HD = H * D, HE = H * E;

// Tolerance. Both runs round the same quantities to bf16 (Q, K, V, O, dY, dO, dQ, dK, dV; unit
// roundoff u = 2^-8 = 3.9e-3) and accumulate in fp32; they differ only in the order of the fp32
// sums (states combined across ranks instead of across chunks of one GPU, cuBLAS tiling over a
// different number of rows, partial gradient sums added by the all-reduce). That flips some bf16
// roundings by one unit, so each compared value is off by at most a few u norm-wise, and in
// practice well below u (only a fraction of the roundings flip, and they average out in the
// token sums of the weight gradients). 1e-2 (about 2.5 u) leaves that room, while what SP x DP
// gets wrong when it is wrong (a state not passed or passed to the wrong rank, a wrong token or
// sample slice, a reduction over DP only) gives relative errors of order one.
constexpr double kTol = 1e-2;

// Flat parameter layout (fp32 master, bf16 copy, fp32 gradient): Wq | Wk | Wv | Wo, then two
// more gradient slots that ride along in the same all-reduce: the loss and the sum of squares of
// the loss terms (its scale, see the loss check in main).
constexpr std::size_t kOffQ = 0, kOffK = std::size_t(M) * HD, kOffV = 2 * std::size_t(M) * HD,
                      kOffO = 3 * std::size_t(M) * HD, kParams = kOffO + std::size_t(HE) * M;
constexpr std::size_t kLoss = kParams, kLossSq = kParams + 1, kGradFloats = kParams + 4;  // 16-byte padded

// ---- small kernels ----------------------------------------------------------------------------

__global__ void cast_bf16(const float* __restrict__ in, bf* __restrict__ out, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

/// loss[0] += sum(y .* rt) / count, loss[1] += sum((y .* rt / count)^2), dy = bf16(rt / count).
__global__ void loss_and_dy(const float* __restrict__ y, const float* __restrict__ rt, std::size_t n, float inv_count,
                            float* __restrict__ loss, bf* __restrict__ dy) {
  float acc = 0.f, acc2 = 0.f;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const float t = y[i] * rt[i] * inv_count;
    acc += t;
    acc2 += t * t;
    dy[i] = __float2bfloat16_rn(rt[i] * inv_count);
  }
  for (int o = 16; o > 0; o >>= 1) {
    acc += __shfl_xor_sync(0xffffffffu, acc, o);
    acc2 += __shfl_xor_sync(0xffffffffu, acc2, o);
  }
  __shared__ float part[2][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) part[0][warp] = acc, part[1][warp] = acc2;
  __syncthreads();
  if (warp == 0) {
    acc = lane < warps ? part[0][lane] : 0.f;
    acc2 = lane < warps ? part[1][lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) {
      acc += __shfl_xor_sync(0xffffffffu, acc, o);
      acc2 += __shfl_xor_sync(0xffffffffu, acc2, o);
    }
    if (lane == 0) atomicAdd(&loss[0], acc), atomicAdd(&loss[1], acc2);
  }
}

unsigned grid_for(std::size_t n) { return unsigned(std::min<std::size_t>((n + 255) / 256, 1024)); }

/// Row-major C (m x n, ldc) = op(A) (m x k) * op(B) (k x n), fp32 accumulation; lda / ldb are the
/// row-major leading dimensions of A and B as stored. cuBLAS is column-major: a row-major matrix
/// is its transpose there, so this computes C^T = op(B)^T op(A)^T with the operands swapped.
void gemm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, const void* A, cudaDataType at, int lda,
          const void* B, cudaDataType bt, int ldb, void* C, cudaDataType ct, int ldc) {
  const float alpha = 1.f, beta = 0.f;
  CHECK_CUBLAS(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B, bt,
                            ldb, A, at, lda, &beta, C, ct, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
constexpr cudaDataType kBF = CUDA_R_16BF, kF32 = CUDA_R_32F;

// ---- host data ---------------------------------------------------------------------------------

/// The whole problem, identical for every rank: fp32 master weights (one flat vector), the
/// global batch x (S samples x T tokens x M, bf16) and the target Rt (same shape, fp32), slopes.
struct Problem {
  int S = 1;      // samples in the global batch (DP * Bl)
  long long T = 0;  // tokens per sample (SP * N)
  std::vector<float> w, rt, slopes;
  std::vector<bf> x;
  Problem(int S_, long long T_) : S(S_), T(T_) {
    std::mt19937 gen(20240402u);
    std::normal_distribution<float> nd(0.f, 1.f);
    w.resize(kParams);
    const float sq = 1.f / std::sqrt(float(M)), so = 1.f / std::sqrt(float(HE));  // 1/sqrt(fan_in)
    for (std::size_t i = 0; i < kOffO; ++i) w[i] = nd(gen) * sq;
    for (std::size_t i = kOffO; i < kParams; ++i) w[i] = nd(gen) * so;
    const std::size_t n = std::size_t(S) * std::size_t(T) * M;
    x.resize(n);
    rt.resize(n);
    for (bf& v : x) v = __float2bfloat16_rn(nd(gen));
    for (float& v : rt) v = nd(gen);
    for (int h = 0; h < H; ++h) slopes.push_back(std::exp2(-8.f * float(h + 1) / float(H)));  // TNL slopes
  }
};

// ---- one rank's layer -------------------------------------------------------------------------

/// Device buffers of one rank: Bl samples x N tokens (rows = Bl*N), weights, gradients, the
/// lasp workspace, a stream and a cuBLAS handle on that stream. Created on the current device.
struct Layer {
  lasp::Shape shape;
  int rows = 0;
  bf *x = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *dy = nullptr, *dout = nullptr;
  bf *dq = nullptr, *dk = nullptr, *dv = nullptr, *wb = nullptr;
  float *rt = nullptr, *y = nullptr, *w = nullptr, *g = nullptr;
  void* ws = nullptr;
  std::size_t ws_bytes = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;

  template <class Policy, class Comm>
  Layer(const lasp::Shape& s, const Comm& comm, Policy*) : shape(s) {
    const long long r = s.B * s.N;
    if (r > INT_MAX / M) FAIL_NOW("too many rows for int GEMM sizes: %lld\n", r);
    rows = int(r);
    const std::size_t R = std::size_t(rows);
    auto alloc = [](auto** p, std::size_t n) { CHECK_CUDA(cudaMalloc(reinterpret_cast<void**>(p), n * sizeof(**p))); };
    alloc(&x, R * M), alloc(&rt, R * M), alloc(&y, R * M), alloc(&dy, R * M);
    alloc(&q, R * HD), alloc(&k, R * HD), alloc(&dq, R * HD), alloc(&dk, R * HD);
    alloc(&v, R * HE), alloc(&o, R * HE), alloc(&dout, R * HE), alloc(&dv, R * HE);
    alloc(&w, kParams), alloc(&wb, kParams), alloc(&g, kGradFloats);
    ws_bytes = lasp::workspace_size<Policy, bf>(s, comm);
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CHECK_CUBLAS(cublasCreate(&blas));
    CHECK_CUBLAS(cublasSetStream(blas, stream));
  }
  ~Layer() {
    cublasDestroy(blas);
    cudaStreamDestroy(stream);
    void* all[] = {x, q, k, v, o, dy, dout, dq, dk, dv, wb, rt, y, w, g, ws};
    for (void* p : all) cudaFree(p);
  }
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  /// Uploads the weights and samples [s0, s0 + B) x tokens [t0, t0 + N) of the global batch.
  void upload(const Problem& P, int s0, long long t0) {
    CHECK_CUDA(cudaMemcpy(w, P.w.data(), kParams * sizeof(float), cudaMemcpyHostToDevice));
    const std::size_t seg = std::size_t(shape.N) * M;  // one sample's slice, contiguous
    for (lasp::index_t b = 0; b < shape.B; ++b) {
      const std::size_t src = (std::size_t(s0 + b) * std::size_t(P.T) + std::size_t(t0)) * M, dst = std::size_t(b) * seg;
      CHECK_CUDA(cudaMemcpy(x + dst, P.x.data() + src, seg * sizeof(bf), cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(rt + dst, P.rt.data() + src, seg * sizeof(float), cudaMemcpyHostToDevice));
    }
  }

  lasp::ForwardArgs<bf, Decay> forward_args(const std::vector<float>& slopes) const {
    const lasp::index_t N = shape.N;
    lasp::ForwardArgs<bf, Decay> fa{};
    fa.shape = shape;
    fa.q = lasp::token_major<const bf>(q, N, H, D);  // (B, N, H*D) row-major = lasp's (B, N, H, D)
    fa.k = lasp::token_major<const bf>(k, N, H, D);
    fa.v = lasp::token_major<const bf>(v, N, H, E);
    fa.o = lasp::token_major(o, N, H, E);
    fa.scale = 1.f / std::sqrt(float(D));
    fa.decay = {slopes.data()};
    return fa;
  }
  lasp::BackwardArgs<bf, Decay> backward_args(const lasp::ForwardArgs<bf, Decay>& fa) const {
    const lasp::index_t N = shape.N;
    lasp::BackwardArgs<bf, Decay> ba{};
    ba.shape = shape;
    ba.q = fa.q, ba.k = fa.k, ba.v = fa.v;
    ba.dout = lasp::token_major<const bf>(dout, N, H, E);
    ba.dq = lasp::token_major(dq, N, H, D);
    ba.dk = lasp::token_major(dk, N, H, D);
    ba.dv = lasp::token_major(dv, N, H, E);
    ba.scale = fa.scale;
    ba.decay = fa.decay;
    return ba;
  }

  /// One training step, stream-ordered (no host synchronisation): forward, loss, backward, and
  /// (with a world communicator) the sum of gradients and loss over all W ranks. g then holds
  /// dWq | dWk | dWv | dWo | loss | loss-term squares of the global batch.
  template <class Policy, class Comm>
  void step(Comm& comm, ncclComm_t world, const std::vector<float>& slopes, float inv_count) {
    const lasp::ForwardArgs<bf, Decay> fa = forward_args(slopes);
    const lasp::BackwardArgs<bf, Decay> ba = backward_args(fa);
    const lasp::Workspace wsp{ws, ws_bytes};
    const std::size_t n = std::size_t(rows) * M;
    // Mixed precision: the GEMMs read a bf16 copy of the fp32 master weights.
    cast_bf16<<<grid_for(kParams), 256, 0, stream>>>(w, wb, kParams);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaMemsetAsync(g + kLoss, 0, (kGradFloats - kLoss) * sizeof(float), stream));
    // Forward.
    gemm(blas, false, false, rows, HD, M, x, kBF, M, wb + kOffQ, kBF, HD, q, kBF, HD);  // Q = x Wq
    gemm(blas, false, false, rows, HD, M, x, kBF, M, wb + kOffK, kBF, HD, k, kBF, HD);  // K = x Wk
    gemm(blas, false, false, rows, HE, M, x, kBF, M, wb + kOffV, kBF, HE, v, kBF, HE);  // V = x Wv
    CHECK_LASP(lasp::forward<Policy>(fa, comm, wsp, stream));                            // O
    gemm(blas, false, false, rows, M, HE, o, kBF, HE, wb + kOffO, kBF, M, y, kF32, M);   // Y = O Wo
    loss_and_dy<<<grid_for(n), 256, 0, stream>>>(y, rt, n, inv_count, g + kLoss, dy);   // loss, dY
    CHECK_CUDA(cudaGetLastError());
    // Backward.
    gemm(blas, true, false, HE, M, rows, o, kBF, HE, dy, kBF, M, g + kOffO, kF32, M);    // dWo = O^T dY
    gemm(blas, false, true, rows, HE, M, dy, kBF, M, wb + kOffO, kBF, M, dout, kBF, HE); // dO = dY Wo^T
    CHECK_LASP(lasp::backward<Policy>(ba, comm, wsp, stream));                           // dQ, dK, dV
    gemm(blas, true, false, M, HD, rows, x, kBF, M, dq, kBF, HD, g + kOffQ, kF32, HD);   // dWq = x^T dQ
    gemm(blas, true, false, M, HD, rows, x, kBF, M, dk, kBF, HD, g + kOffK, kF32, HD);   // dWk = x^T dK
    gemm(blas, true, false, M, HE, rows, x, kBF, M, dv, kBF, HE, g + kOffV, kF32, HE);   // dWv = x^T dV
    // Parameters are replicated on all W ranks (SP ranks too): sum over the WORLD, not DP only.
    if (world) CHECK_NCCL(ncclAllReduce(g, g, kGradFloats, ncclFloat, ncclSum, world, stream));
  }

  /// Warm-up, then `iters` timed steps; returns the median step time in ms. g holds the last
  /// step's result (every step computes the same thing: the weights are not updated here).
  template <class Policy, class Comm>
  double run(Comm& comm, ncclComm_t world, const std::vector<float>& slopes, float inv_count, int iters) {
    cudaEvent_t e0, e1;
    CHECK_CUDA(cudaEventCreate(&e0));
    CHECK_CUDA(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int i = 0; i < iters + 2; ++i) {
      CHECK_CUDA(cudaEventRecord(e0, stream));
      step<Policy>(comm, world, slopes, inv_count);
      CHECK_CUDA(cudaEventRecord(e1, stream));
      CHECK_CUDA(cudaEventSynchronize(e1));
      float t = 0;
      CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
      if (i >= 2) ms.push_back(t);
    }
    CHECK_CUDA(cudaEventDestroy(e0));
    CHECK_CUDA(cudaEventDestroy(e1));
    std::sort(ms.begin(), ms.end());
    return double(ms[ms.size() / 2]);
  }

  std::vector<float> grads() const {
    std::vector<float> h(kGradFloats);
    CHECK_CUDA(cudaMemcpy(h.data(), g, kGradFloats * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

struct Options {
  int W = 0, SP = 0, Bl = 2, iters = 10;
  long long N = 1024;
  bool gather = false;
};

/// ||a - b|| / ||b|| over [lo, hi).
double rel_err(const std::vector<float>& a, const std::vector<float>& b, std::size_t lo, std::size_t hi) {
  double num = 0, den = 0;
  for (std::size_t i = lo; i < hi; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::isnan(num) || den == 0 ? INFINITY : std::sqrt(num / den);
}

template <class Policy>
int run(const Options& opt) {
  const int W = opt.W, SP = opt.SP, DP = W / SP, Bl = opt.Bl;
  const long long N = opt.N, T = SP * N;
  const Problem P(DP * Bl, T);
  const double count = double(DP) * Bl * double(T);  // global token count
  const float inv_count = float(1.0 / count);

  // ---- SP x DP over W GPUs -------------------------------------------------------------------
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off unless the user set it
  std::vector<ncclComm_t> world(static_cast<std::size_t>(W));
  std::vector<int> devs(static_cast<std::size_t>(W));
  for (int r = 0; r < W; ++r) devs[std::size_t(r)] = r;
  CHECK_NCCL(ncclCommInitAll(world.data(), W, devs.data()));  // world rank r = GPU r

  std::vector<std::vector<float>> got(static_cast<std::size_t>(W));
  std::vector<double> step_ms(static_cast<std::size_t>(W), 0.0);
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r)
    threads.emplace_back([&, r] {
      CHECK_CUDA(cudaSetDevice(r));
      // Collective over the world communicator: every rank thread calls it, concurrently.
      ncclComm_t sp_comm = nullptr, dp_comm = nullptr;
      CHECK_LASP(lasp::comm::split_sp_dp(world[std::size_t(r)], SP, &sp_comm, &dp_comm));
      lasp::comm::GroupRanks grp;
      CHECK_LASP(lasp::comm::GroupRanks::make(r, W, SP, &grp));
      {
        lasp::comm::Nccl comm;
        CHECK_LASP(lasp::comm::Nccl::make(sp_comm, &comm));
        if (comm.rank() != grp.sp_rank || comm.size() != SP)
          FAIL_NOW("rank %d: SP communicator is rank %d of %d, expected %d of %d\n", r, comm.rank(), comm.size(),
                   grp.sp_rank, SP);
        Layer L(lasp::Shape{Bl, N, H, D, E, SP}, comm, static_cast<Policy*>(nullptr));
        // DP replica d = dp_rank takes samples [d*Bl, (d+1)*Bl); SP rank s tokens [s*N, (s+1)*N).
        L.upload(P, grp.dp_rank * Bl, grp.sp_rank * N);
        // Set-up checks: the SP ranks agree on the problem (collective; synchronises), and
        // lasp accepts the arguments.
        float* scratch = nullptr;
        CHECK_CUDA(cudaMalloc(&scratch, lasp::comm::check_peers_scratch_floats(SP) * sizeof(float)));
        CHECK_LASP((lasp::comm::check_peers<Policy, bf>(L.shape, comm, scratch, L.stream)));
        CHECK_CUDA(cudaFree(scratch));
        const auto fa = L.forward_args(P.slopes);
        const lasp::Workspace wsp{L.ws, L.ws_bytes};
        CHECK_LASP((lasp::can_implement<Policy>(fa, comm, wsp)));
        step_ms[std::size_t(r)] = L.run<Policy>(comm, world[std::size_t(r)], P.slopes, inv_count, opt.iters);
        CHECK_CUDA(cudaStreamSynchronize(L.stream));
        got[std::size_t(r)] = L.grads();
      }  // the layer and lasp's handle go before the communicators they use
      CHECK_NCCL(ncclCommDestroy(dp_comm));  // split_sp_dp's communicators are ours to release
      CHECK_NCCL(ncclCommDestroy(sp_comm));
      CHECK_NCCL(ncclCommDestroy(world[std::size_t(r)]));
    });
  for (auto& t : threads) t.join();

  // ---- reference: the same global batch on GPU 0, SP = 1 ------------------------------------
  std::vector<float> ref;
  double ref_ms = 0;
  {
    CHECK_CUDA(cudaSetDevice(0));
    lasp::comm::DeviceSingle single;
    Layer L(lasp::Shape{DP * Bl, T, H, D, E, 1}, single, static_cast<Policy*>(nullptr));
    L.upload(P, 0, 0);
    const auto fa = L.forward_args(P.slopes);
    CHECK_LASP((lasp::can_implement<Policy>(fa, single, lasp::Workspace{L.ws, L.ws_bytes})));
    ref_ms = L.run<Policy>(single, nullptr, P.slopes, inv_count, opt.iters);
    CHECK_CUDA(cudaStreamSynchronize(L.stream));
    ref = L.grads();
  }

  // ---- comparison -------------------------------------------------------------------------------
  // Gradients: each rank's all-reduced copy against the reference; the worst rank is reported.
  const char* names[4] = {"dWq", "dWk", "dWv", "dWo"};
  const std::size_t lo[4] = {kOffQ, kOffK, kOffV, kOffO}, hi[4] = {kOffK, kOffV, kOffO, kParams};
  double gerr[4] = {0, 0, 0, 0};
  bool replicas_equal = true;
  for (int r = 0; r < W; ++r) {
    for (int j = 0; j < 4; ++j) gerr[j] = std::max(gerr[j], rel_err(got[std::size_t(r)], ref, lo[j], hi[j]));
    replicas_equal = replicas_equal && std::memcmp(got[std::size_t(r)].data(), got[0].data(), kParams * sizeof(float)) == 0;
  }
  // Loss: relative difference |l - l_ref| / |l_ref|, as printed. The loss is a sum of
  // count*M terms y_i r_i / count of random sign, so its size is a matter of luck: typically
  // s = sqrt(sum (y_i r_i / count)^2), but it may come out much smaller by cancellation, and
  // then a tiny absolute difference looks large relative to it. The pass test therefore divides
  // by max(|l_ref|, s_ref): the usual relative difference unless the loss cancelled below its
  // natural scale (a real SP x DP error changes the loss by about s, and still fails).
  const double l_sp = got[0][kLoss], l_ref = ref[kLoss], s_ref = std::sqrt(double(ref[kLossSq]));
  double loss_rel = 0, loss_test = 0;
  for (int r = 0; r < W; ++r) {
    const double d = std::fabs(double(got[std::size_t(r)][kLoss]) - l_ref);
    loss_rel = std::max(loss_rel, d / std::fabs(l_ref));
    loss_test = std::max(loss_test, d / std::max(std::fabs(l_ref), s_ref));
  }
  if (std::isnan(loss_rel) || std::isnan(loss_test)) loss_rel = loss_test = INFINITY;
  const double step_sp = *std::max_element(step_ms.begin(), step_ms.end());  // slowest rank

  bool pass = loss_test <= kTol;
  for (double e : gerr) pass = pass && e <= kTol;

  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int nccl_version = 0;
  CHECK_NCCL(ncclGetVersion(&nccl_version));
  std::printf("lasp train step: %d x %s, NCCL %d, NCCL_NVLS_ENABLE=%s\n", W, prop.name, nccl_version,
              std::getenv("NCCL_NVLS_ENABLE"));
  std::printf("layer: M=%d H=%d D=E=%d, bf16 activations, fp32 master weights; %s\n", M, H, D,
              lasp::describe<Policy>().c_str());
  std::printf("batch: %d samples x T=%lld tokens (Bl=%d per DP replica, N=%lld per SP rank), %d timed steps\n\n",
              DP * Bl, T, Bl, N, opt.iters);
  std::printf("%3s %3s %3s | %14s %14s %9s | %9s %9s %9s %9s | %12s %12s\n", "W", "SP", "DP", "loss (SPxDP)",
              "loss (1 GPU)", "rel diff", names[0], names[1], names[2], names[3], "step ms SPxDP", "step ms 1GPU");
  std::printf("%3d %3d %3d | %14.7e %14.7e %9.2e | %9.2e %9.2e %9.2e %9.2e | %12.3f %12.3f\n", W, SP, DP, l_sp, l_ref,
              loss_rel, gerr[0], gerr[1], gerr[2], gerr[3], step_sp, ref_ms);
  std::printf("\n(gradient errors: ||g - g_ref|| / ||g_ref||, worst rank; tolerance %.0e; loss scale s = %.3e, "
              "loss test |dl| / max(|l_ref|, s) = %.2e)\n",
              kTol, s_ref, loss_test);
  std::printf("(all-reduced gradients bitwise identical on all %d ranks: %s; step = forward + backward + all-reduce,"
              " median, slowest rank)\n",
              W, replicas_equal ? "yes" : "no");
  std::printf("lasp train step: %s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int ngpu = 0;
  if (cudaGetDeviceCount(&ngpu) != cudaSuccess || ngpu == 0) {
    std::printf("lasp train step: skipped (no CUDA device visible)\n");
    return 77;
  }
  Options opt;
  opt.W = ngpu;
  auto usage = [&](const char* why) {
    std::fprintf(stderr,
                 "%s\nusage: %s [--sp S] [--gpus G] [--n N] [--bl Bl] [--iters K] [--gather]\n"
                 "  W = G GPUs (default all %d visible), W %% S == 0, N >= 1, Bl >= 1, K >= 1\n",
                 why, argv[0], ngpu);
    return 1;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--gather") opt.gather = true;
    else if (a == "--sp" && has_value) opt.SP = std::atoi(argv[++i]);
    else if (a == "--gpus" && has_value) opt.W = std::atoi(argv[++i]);
    else if (a == "--n" && has_value) opt.N = std::atoll(argv[++i]);
    else if (a == "--bl" && has_value) opt.Bl = std::atoi(argv[++i]);
    else if (a == "--iters" && has_value) opt.iters = std::atoi(argv[++i]);
    else return usage(("unknown or incomplete option: " + a).c_str());
  }
  if (opt.W < 1 || opt.W > ngpu) return usage("--gpus must be between 1 and the number of visible GPUs");
  if (opt.SP == 0) opt.SP = opt.W % 2 == 0 ? 2 : 1;  // default SP = 2 (W = 4: SP = 2 x DP = 2)
  if (lasp::comm::check_groups(opt.W, opt.SP) != lasp::Status::kSuccess) return usage("W % S must be 0");
  if (opt.N < 1 || opt.Bl < 1 || opt.iters < 1) return usage("N, Bl and K must be >= 1");
  using Chain = lasp::Policy<Decay, lasp::schedule::Chain>;
  using Gather = lasp::Policy<Decay, lasp::schedule::AllGather>;
  return opt.gather ? run<Gather>(opt) : run<Chain>(opt);
}
