// Single-GPU benchmarks of lasp's forward and backward (Google Benchmark, CUDA-event manual
// time, median of repetitions). Counters: GB/s of the fewest HBM bytes (math.md section 6),
// the fraction of the measured copy bandwidth (roofline), and TFLOP/s.
//   lasp_bench --benchmark_filter=S32K   (shapes of performance.md; N sweep with "sweep")
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <lasp/lasp.cuh>
#include "../examples/cuda_utils.cuh"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

#define BENCH_CUDA(x) LASP_EXAMPLE_CUDA(x)

using bf16 = __nv_bfloat16;
using lasp::index_t;

/// Copy bandwidth (read + write bytes) of this device, measured once with a 1 GiB D2D copy.
double copy_bandwidth() {
  static double bw = [] {
    const std::size_t n = std::size_t(1) << 30;
    void *a, *b;
    BENCH_CUDA(cudaMalloc(&a, n));
    BENCH_CUDA(cudaMalloc(&b, n));
    BENCH_CUDA(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 3; ++i) cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    std::vector<float> t;
    for (int i = 0; i < 10; ++i) {
      cudaEventRecord(e0);
      cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    cudaFree(a);
    cudaFree(b);
    return 2.0 * double(n) / (t[t.size() / 2] * 1e-3);
  }();
  return bw;
}

/// Log-gates in [-0.1, 0) - 1e-4 (never zero).
__global__ void fill_gates(float* p, std::size_t n, unsigned seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    unsigned x = unsigned(i) * 2246822519u ^ seed;
    x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
    p[i] = -0.1f * float(x & 0xffff) / 65536.f - 1e-4f;
  }
}

/// One input/output set of a shape (token-major bf16).
struct IoSet {
  bf16 *q, *k, *v, *o, *dout, *dq, *dk, *dv;
  float *g, *dg;
};

enum class Pass { kForward, kBackward, kStep };

template <class Policy>
void run(benchmark::State& state, index_t B, index_t N, index_t H, index_t D, Pass pass, index_t doc_len = 0) {
  using Decay = typename Policy::Decay;
  const index_t E = D;
  const lasp::Shape shape{B, N, H, D, E, 1};
  const std::size_t nq = std::size_t(B * N * H * D), nv = std::size_t(B * N * H * E), ng = std::size_t(B * N * H);
  // Rotate input sets so that the working set exceeds L2 (about 50 MB on H100) several times over.
  const std::size_t set_bytes = (4 * nq + 4 * nv) * sizeof(bf16) + 2 * ng * sizeof(float);
  const int nsets = int(std::max<std::size_t>(1, (200u << 20) / set_bytes + 1));
  std::vector<IoSet> sets(static_cast<std::size_t>(nsets));
  for (int i = 0; i < nsets; ++i) {
    IoSet& s = sets.at(static_cast<std::size_t>(i));
    bf16** qk[] = {&s.q, &s.k, &s.dq, &s.dk};
    bf16** vo[] = {&s.v, &s.o, &s.dout, &s.dv};
    for (bf16** p : qk) BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(p), nq * sizeof(bf16)));
    for (bf16** p : vo) BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(p), nv * sizeof(bf16)));
    BENCH_CUDA(cudaMalloc(&s.g, ng * sizeof(float)));
    BENCH_CUDA(cudaMalloc(&s.dg, ng * sizeof(float)));
    lasp_example::fill_bf16<<<1024, 256>>>(s.q, nq, 1u + 7u * unsigned(i));
    lasp_example::fill_bf16<<<1024, 256>>>(s.k, nq, 2u + 7u * unsigned(i));
    lasp_example::fill_bf16<<<1024, 256>>>(s.v, nv, 3u + 7u * unsigned(i));
    lasp_example::fill_bf16<<<1024, 256>>>(s.dout, nv, 4u + 7u * unsigned(i));
    fill_gates<<<1024, 256>>>(s.g, ng, 5u + 7u * unsigned(i));
  }
  std::vector<float> slopes(static_cast<std::size_t>(H));
  for (index_t h = 0; h < H; ++h) slopes[std::size_t(h)] = std::exp2(-8.f * float(h + 1) / float(H));
  lasp::comm::DeviceSingle comm;
  const std::size_t wsb = lasp::workspace_size<Policy, bf16>(shape, comm);
  void* ws;
  BENCH_CUDA(cudaMalloc(&ws, wsb));
  // doc_len > 0: packed documents of doc_len tokens (B = 1; the last one takes the rest), no
  // per-document states; the offsets on the host and on the device (Packed::cu_seqlens_device).
  std::vector<std::int32_t> cu;
  std::int32_t* d_cu = nullptr;
  if (doc_len > 0) {
    for (index_t t = 0; t < N; t += doc_len) cu.push_back(std::int32_t(t));
    cu.push_back(std::int32_t(N));
    BENCH_CUDA(cudaMalloc(&d_cu, cu.size() * sizeof(std::int32_t)));
    BENCH_CUDA(cudaMemcpy(d_cu, cu.data(), cu.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  }
  cudaStream_t st;
  BENCH_CUDA(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto decay_of = [&](const IoSet& s) -> typename Decay::Params {
    if constexpr (std::is_same_v<Decay, lasp::decay::PerHead>) return {slopes.data()};
    else if constexpr (std::is_same_v<Decay, lasp::decay::Gate>) return {lasp::gates_token_major(static_cast<const float*>(s.g), N, H)};
    else return {};
  };
  auto once = [&](int i, Pass p) {
    const IoSet& s = sets[std::size_t((i < 0 ? 0 : i) % nsets)];  // i = -1: the priming forward
    lasp::ForwardArgs<bf16, Decay> fa{shape,
                                      lasp::token_major<const bf16>(s.q, N, H, D),
                                      lasp::token_major<const bf16>(s.k, N, H, D),
                                      lasp::token_major<const bf16>(s.v, N, H, E),
                                      lasp::token_major(s.o, N, H, E),
                                      1.f / std::sqrt(float(D)), decay_of(s)};
    lasp::BackwardArgs<bf16, Decay> ba{};
    ba.shape = shape; ba.q = fa.q; ba.k = fa.k; ba.v = fa.v;
    ba.dout = lasp::token_major<const bf16>(s.dout, N, H, E);
    ba.dq = lasp::token_major(s.dq, N, H, D); ba.dk = lasp::token_major(s.dk, N, H, D); ba.dv = lasp::token_major(s.dv, N, H, E);
    ba.scale = fa.scale; ba.decay = fa.decay;
    if constexpr (Decay::kHasGradient) ba.dg = lasp::gates_token_major(s.dg, N, H);
    if (d_cu) {
      fa.packed.cu_seqlens = cu.data(), fa.packed.cu_seqlens_device = d_cu;
      fa.packed.docs = index_t(cu.size()) - 1;
      ba.packed = fa.packed;
    }
    const lasp::Workspace w{ws, wsb};
    lasp::Status r = lasp::Status::kSuccess;
    if (p != Pass::kBackward || i < 0) r = lasp::forward<Policy>(fa, comm, w, st);  // kBackward: see the timed loop
    if (r == lasp::Status::kSuccess && p != Pass::kForward) r = lasp::backward<Policy>(ba, comm, w, st);
    if (r != lasp::Status::kSuccess) {
      state.SkipWithError(lasp::to_string(r));
      return false;
    }
    return true;
  };
  // Backward alone needs a forward on the same workspace first (its reserve).
  if (!once(-1, Pass::kStep)) return;
  for (int i = 0; i < 3; ++i) once(i, pass);
  BENCH_CUDA(cudaStreamSynchronize(st));
  int it = 0;
  for (auto _ : state) {
    // Backward alone: the forward of the same input set fills the reserve first, outside the timed
    // region (a backward on another set's reserve is refused on the device: it writes nothing).
    if (pass == Pass::kBackward && !once(it, Pass::kForward)) return;
    cudaEventRecord(e0, st);
    once(it++, pass);
    cudaEventRecord(e1, st);
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    state.SetIterationTime(double(ms) * 1e-3);
  }
  const double th = double(B * N * H);
  const double fwd_bytes = th * 2.0 * double(2 * D + 2 * E), bwd_bytes = th * 2.0 * double(4 * D + 3 * E);
  const double C = 64, d = double(D);
  const double fwd_flop = th * 4 * d * (C + d), bwd_flop = th * (10 * C * d + 8 * d * d);
  const double bytes = pass == Pass::kForward ? fwd_bytes : pass == Pass::kBackward ? bwd_bytes : fwd_bytes + bwd_bytes;
  const double flop = pass == Pass::kForward ? fwd_flop : pass == Pass::kBackward ? bwd_flop : fwd_flop + bwd_flop;
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["roofline"] = benchmark::Counter(bytes / copy_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] = benchmark::Counter(flop * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(lasp::describe<Policy>());
  for (IoSet& s : sets) {
    bf16* all[] = {s.q, s.k, s.v, s.o, s.dout, s.dq, s.dk, s.dv};
    for (bf16* p : all) cudaFree(p);
    cudaFree(s.g);
    cudaFree(s.dg);
  }
  cudaFree(ws);
  cudaFree(d_cu);
  cudaStreamDestroy(st);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

using PerHead = lasp::Policy<lasp::decay::PerHead>;
using PerHeadCache = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Cache>;
using GateP = lasp::Policy<lasp::decay::Gate>;
using NoneP = lasp::Policy<lasp::decay::None>;
// The sm_80 family forced (tile::Tile<..., 80>): the same run compares both kernel families.
using PerHeadSm80 = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Auto, lasp::caching::Recompute, lasp::tile::Tile<64, 4, 0, 80>>;
using PerHeadSm90 = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Auto, lasp::caching::Recompute, lasp::tile::Tile<64, 4, 0, 90>>;
using GateSm90 = lasp::Policy<lasp::decay::Gate, lasp::schedule::Auto, lasp::caching::Recompute, lasp::tile::Tile<64, 4, 0, 90>>;
using GateSm80 = lasp::Policy<lasp::decay::Gate, lasp::schedule::Auto, lasp::caching::Recompute, lasp::tile::Tile<64, 4, 0, 80>>;

struct ShapeDef { std::string name; index_t B, N, H, D; };
const ShapeDef kShapes[] = {
    {"S32K", 1, 32768, 16, 128}, {"S128K", 1, 131072, 16, 128}, {"S8K-B4", 4, 8192, 32, 128}, {"S32K-d64", 1, 32768, 32, 64}};

template <class Policy>
void reg(const std::string& tag, const ShapeDef& s, index_t doc_len = 0) {
  const char* names[] = {"fwd", "bwd", "step"};
  for (int p = 0; p < 3; ++p) {
    const std::string name = tag + "/" + s.name + "/" + names[p];
    benchmark::RegisterBenchmark(name.c_str(), [s, p, doc_len](benchmark::State& st) {
      run<Policy>(st, s.B, s.N, s.H, s.D, Pass(p), doc_len);
    })
        ->UseManualTime()->Unit(benchmark::kMillisecond)->Repetitions(5)->ReportAggregatesOnly(true)
        ->ComputeStatistics("median", [](const std::vector<double>& v) {
          std::vector<double> x = v;
          std::sort(x.begin(), x.end());
          return x[x.size() / 2];
        });
  }
}

int register_all() {
  for (const ShapeDef& s : kShapes) reg<PerHead>("perhead", s);
  reg<PerHeadCache>("perhead-cache", kShapes[0]);
  reg<PerHeadSm80>("perhead-sm80", kShapes[0]);
  reg<PerHeadSm90>("perhead-sm90", kShapes[0]);
  reg<GateSm90>("gate-sm90", kShapes[0]);
  reg<GateSm80>("gate-sm80", kShapes[0]);
  reg<GateP>("gate", kShapes[0]);
  reg<NoneP>("none", kShapes[0]);
  // Packed documents (issue 11): S32K as documents of 512, 2K, 8K tokens and as one packed
  // document (the cost of the document walk itself), against "perhead/S32K" (plain).
  for (index_t L : {512, 2048, 8192, 32768})
    reg<PerHead>("packed" + (L >= 1024 ? std::to_string(L / 1024) + "K" : std::to_string(L)), kShapes[0], L);
  // N sweep (B=1, H=16, D=E=128) for the time-vs-N plot: the default table (sm_80 kernels with
  // per-head decay) and every sm_90a kernel. S32K and S128K are the rows above.
  for (index_t n : {4096, 8192, 16384, 65536, 262144}) {
    reg<PerHead>("sweep", ShapeDef{"N" + std::to_string(n / 1024) + "K", 1, n, 16, 128});
    reg<PerHeadSm90>("sweep-sm90", ShapeDef{"N" + std::to_string(n / 1024) + "K", 1, n, 16, 128});
  }
  reg<PerHeadSm90>("sweep-sm90", ShapeDef{"N128K", 1, 131072, 16, 128});
  return 0;
}
const int kRegistered = register_all();

}  // namespace

int main(int argc, char** argv) {
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB; measured copy bandwidth %.0f GB/s (read + write)\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, copy_bandwidth() * 1e-9);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // In the JSON output too (bench/plots/sweep_plot.py draws the memory floor from it).
  benchmark::AddCustomContext("device", prop.name);
  benchmark::AddCustomContext("copy_GBps", std::to_string(copy_bandwidth() * 1e-9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
