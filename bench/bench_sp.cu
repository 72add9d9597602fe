// Sequence-parallel benchmarks over NCCL (one process, one thread per GPU):
//   weak scaling  G = 1, 2, 4 GPUs at 8K, 32K, 128K tokens per GPU (B=1, H=16, D=E=128, bf16,
//                 per-head decay), forward / backward / step, chain vs all-gather, each also with
//                 communication skipped (a no-op communicator with the same rank/size): the
//                 difference is the exposed communication;
//   state hops    nccl-tests style: ring hop of 1 MiB and 4 KiB, a chain of dependent 1 MiB hops,
//                 all-gather of 1 MiB per rank (time, algorithm bandwidth);
//   capacity      forward+backward at 2M tokens per GPU on every GPU, peak memory, workspace share.
// "truncated" is schedule::Truncated<AllGather> with a lasp::Plan (one neighbour shift when every
// head's decay over every rank is below fp32 resolution, as with these slopes; without a plan it
// would all-gather). "chain+ovl" is schedule::ChainOverlap (backward scan on the side stream). Efficiencies are
// against the 1-GPU chain step. Prints tables; --json FILE writes the figures. Needs >= 1 GPU (hops need >= 2).
//   lasp_bench_sp [--gpus G] [--quick] [--json FILE] [--no-capacity]
#include <cuda_bf16.h>
#include <nccl.h>
#include <lasp/comm/nccl.cuh>
#include <lasp/lasp.cuh>
#include "../examples/cuda_utils.cuh"
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

#define SP_CUDA(x) LASP_EXAMPLE_CUDA(x)

using bf = __nv_bfloat16;
using lasp::index_t;

/// A device communicator with a rank and a size that moves nothing: the same run with the
/// communication skipped (results are wrong, timings are what compute alone costs). The one
/// exception: the agreement's status words of every call (lasp::schedule::kStatusFloats floats
/// per rank) are zeroed, "every rank accepted", or the kernels would skip their work on the
/// garbage verdict and time nothing.
struct NullComm {
  using stream_type = cudaStream_t;
  static constexpr bool kDeviceMemory = true;
  int r = 0, n = 1;
  int rank() const { return r; }
  int size() const { return n; }
  lasp::Status send(const float*, std::size_t, int, cudaStream_t) { return lasp::Status::kSuccess; }
  lasp::Status recv(float*, std::size_t, int, cudaStream_t) { return lasp::Status::kSuccess; }
  lasp::Status all_gather(const float*, float* recv, std::size_t count, cudaStream_t st) {
    if (count == lasp::schedule::kStatusFloats &&
        cudaMemsetAsync(recv, 0, count * std::size_t(n) * sizeof(float), st) != cudaSuccess)
      return lasp::Status::kCudaError;
    return lasp::Status::kSuccess;
  }
};

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lk(mu_);
    const unsigned long g = gen_;
    if (++count_ == n_) { count_ = 0; ++gen_; cv_.notify_all(); }
    else cv_.wait(lk, [&] { return gen_ != g; });
  }
 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  unsigned long gen_ = 0;
};

constexpr index_t kH = 16, kD = 128;

/// One rank's buffers for N tokens (B=1, H=16, D=E=128).
struct Rank {
  index_t N = 0;
  bf *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *dout = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
  void* ws = nullptr;
  std::size_t ws_bytes = 0;
  cudaStream_t stream = nullptr;
  std::vector<float> slopes;
  void alloc(index_t n, std::size_t ws_need) {
    N = n;
    const std::size_t e = std::size_t(N * kH * kD);
    bf** all[] = {&q, &k, &v, &o, &dout, &dq, &dk, &dv};
    unsigned seed = 3;
    for (bf** p : all) {
      SP_CUDA(cudaMalloc(reinterpret_cast<void**>(p), e * sizeof(bf)));
      lasp_example::fill_bf16<<<1024, 256>>>(*p, e, seed++);
    }
    SP_CUDA(cudaMalloc(&ws, ws_need));
    ws_bytes = ws_need;
    if (!stream) SP_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    slopes.resize(kH);
    for (index_t h = 0; h < kH; ++h) slopes[std::size_t(h)] = std::exp2(-8.f * float(h + 1) / float(kH));
    SP_CUDA(cudaDeviceSynchronize());
  }
  void release() {
    void* all[] = {q, k, v, o, dout, dq, dk, dv, ws};
    for (void* p : all) cudaFree(p);
    q = k = v = o = dout = dq = dk = dv = nullptr;
    ws = nullptr;
  }
  /// With `plan` (the plan of this shape, Policy and rank) the call takes it: schedule::Truncated
  /// over AllGather takes its single hop only with a plan.
  template <class Policy, class Comm>
  lasp::Status fwd(Comm& c, int R, const lasp::Plan<Policy, bf>* plan = nullptr) {
    lasp::ForwardArgs<bf, lasp::decay::PerHead> a{};
    a.shape = {1, N, kH, kD, kD, R};
    a.q = lasp::token_major<const bf>(q, N, kH, kD); a.k = lasp::token_major<const bf>(k, N, kH, kD);
    a.v = lasp::token_major<const bf>(v, N, kH, kD); a.o = lasp::token_major(o, N, kH, kD);
    a.scale = 0.0884f;
    a.decay = {slopes.data()};
    return plan ? lasp::forward(*plan, a, c, {ws, ws_bytes}, stream) : lasp::forward<Policy>(a, c, {ws, ws_bytes}, stream);
  }
  template <class Policy, class Comm>
  lasp::Status bwd(Comm& c, int R, const lasp::Plan<Policy, bf>* plan = nullptr) {
    lasp::BackwardArgs<bf, lasp::decay::PerHead> a{};
    a.shape = {1, N, kH, kD, kD, R};
    a.q = lasp::token_major<const bf>(q, N, kH, kD); a.k = lasp::token_major<const bf>(k, N, kH, kD);
    a.v = lasp::token_major<const bf>(v, N, kH, kD); a.dout = lasp::token_major<const bf>(dout, N, kH, kD);
    a.dq = lasp::token_major(dq, N, kH, kD); a.dk = lasp::token_major(dk, N, kH, kD); a.dv = lasp::token_major(dv, N, kH, kD);
    a.scale = 0.0884f;
    a.decay = {slopes.data()};
    return plan ? lasp::backward(*plan, a, c, {ws, ws_bytes}, stream)
                : lasp::backward<Policy>(a, c, {ws, ws_bytes}, stream);
  }
  /// The plan of Policy for this rank's shape (collective: every rank calls it together).
  template <class Policy, class Comm>
  lasp::Plan<Policy, bf> plan(Comm& c, int R) {
    lasp::Plan<Policy, bf> p;
    float* staging = nullptr;
    SP_CUDA(cudaMalloc(&staging, lasp::plan_staging_floats(c.size()) * sizeof(float)));
    const lasp::Status st = lasp::make_plan<Policy, bf>({1, N, kH, kD, kD, R}, {slopes.data()}, c, staging, stream, &p);
    SP_CUDA(cudaFree(staging));
    if (st != lasp::Status::kSuccess) { std::fprintf(stderr, "make_plan: %s\n", lasp::to_string(st)); std::exit(1); }
    return p;
  }
};

struct Times { double fwd = 0, bwd = 0, step = 0; };

/// Median forward / backward / step times of this rank (ms).
template <class Policy, class Comm>
Times time_rank(Rank& rk, Comm& c, int R, int iters, Barrier& bar, const lasp::Plan<Policy, bf>* plan = nullptr) {
  cudaEvent_t e0, e1, e2;
  cudaEventCreate(&e0); cudaEventCreate(&e1); cudaEventCreate(&e2);
  std::vector<float> tf, tb, ts;
  for (int i = 0; i < iters + 2; ++i) {
    bar.wait();  // ranks start each iteration together
    SP_CUDA(cudaEventRecord(e0, rk.stream));
    if (rk.fwd<Policy>(c, R, plan) != lasp::Status::kSuccess) { std::fprintf(stderr, "forward failed\n"); std::exit(1); }
    SP_CUDA(cudaEventRecord(e1, rk.stream));
    if (rk.bwd<Policy>(c, R, plan) != lasp::Status::kSuccess) { std::fprintf(stderr, "backward failed\n"); std::exit(1); }
    SP_CUDA(cudaEventRecord(e2, rk.stream));
    SP_CUDA(cudaEventSynchronize(e2));
    float a, b;
    cudaEventElapsedTime(&a, e0, e1);
    cudaEventElapsedTime(&b, e1, e2);
    if (i >= 2) { tf.push_back(a); tb.push_back(b); ts.push_back(a + b); }
  }
  auto med = [](std::vector<float> v) { std::sort(v.begin(), v.end()); return double(v[v.size() / 2]); };
  cudaEventDestroy(e0); cudaEventDestroy(e1); cudaEventDestroy(e2);
  return {med(tf), med(tb), med(ts)};
}

struct Row {
  std::string what;
  int G;
  index_t N;
  Times t, nocomm;
};

/// Runs body(rank, comm, barrier) on G GPUs, one thread each, with NCCL communicators.
void on_gpus(int G, const std::function<void(int, lasp::comm::Nccl&, Barrier&)>& body) {
  std::vector<ncclComm_t> comms(static_cast<std::size_t>(G));
  std::vector<int> devs(static_cast<std::size_t>(G));
  for (int i = 0; i < G; ++i) devs[std::size_t(i)] = i;
  if (ncclCommInitAll(comms.data(), G, devs.data()) != ncclSuccess) { std::fprintf(stderr, "ncclCommInitAll failed\n"); std::exit(1); }
  Barrier bar(G);
  std::vector<std::thread> th;
  for (int r = 0; r < G; ++r)
    th.emplace_back([&, r] {
      SP_CUDA(cudaSetDevice(r));
      lasp::comm::Nccl c;
      if (lasp::comm::Nccl::make(comms[std::size_t(r)], &c) != lasp::Status::kSuccess) { std::fprintf(stderr, "Nccl::make failed\n"); std::exit(1); }
      body(r, c, bar);
    });
  for (auto& t : th) t.join();
  for (ncclComm_t c : comms) ncclCommDestroy(c);
}

using Chain = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
using Gather = lasp::Policy<lasp::decay::PerHead, lasp::schedule::AllGather>;
using ChainOv = lasp::Policy<lasp::decay::PerHead, lasp::schedule::ChainOverlap>;
// Decay-aware truncation: with the TNL slopes (smallest 2^-8) and N >= 8K, s N >= 32 on every
// head, so each rank needs only its neighbour's state (one shift).
using Trunc = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Truncated<lasp::schedule::AllGather>>;
using LogScan = lasp::Policy<lasp::decay::PerHead, lasp::schedule::LogScan>;
// The overlap with a grid that leaves SMs for NCCL's kernels: 15 segments x 16 heads = 240 CTAs
// for 264 slots (the default split gives 256).
using ChainOv15 = lasp::Policy<lasp::decay::PerHead, lasp::schedule::ChainOverlap, lasp::caching::Recompute,
                               lasp::tile::Tile<64, 4, 15>>;

std::string json;
void jrow(const std::string& s) { json += (json.empty() ? "" : ",\n") + s; }

void weak_scaling(int maxG, const std::vector<index_t>& Ns, std::vector<Row>& rows) {
  for (int G = 1; G <= maxG; G *= 2) {
    on_gpus(G, [&](int r, lasp::comm::Nccl& c, Barrier& bar) {
      for (index_t N : Ns) {
        Rank rk;
        const lasp::Shape s{1, N, kH, kD, kD, G};
        rk.alloc(N, std::max({lasp::workspace_size<Chain, bf>(s, c), lasp::workspace_size<Gather, bf>(s, c),
                              lasp::workspace_size<ChainOv15, bf>(s, c), lasp::workspace_size<Trunc, bf>(s, c),
                              lasp::workspace_size<LogScan, bf>(s, c)}));
        const int iters = N >= 131072 ? 5 : 10;
        NullComm nc{r, G};
        Row chain{"chain", G, N, {}, {}}, gather{"all-gather", G, N, {}, {}}, chain_ov{"chain+ovl", G, N, {}, {}},
            chain_ov15{"chain+ovl15", G, N, {}, {}}, trunc{"truncated", G, N, {}, {}}, logscan{"log-scan", G, N, {}, {}};
        auto rec = [&](Times t, Times& into) {  // slowest rank
          static std::mutex mu;
          std::lock_guard<std::mutex> lk(mu);
          into.fwd = std::max(into.fwd, t.fwd); into.bwd = std::max(into.bwd, t.bwd); into.step = std::max(into.step, t.step);
        };
        static Times shared[9];
        for (auto& x : shared) x = {};
        bar.wait();
        rec(time_rank<Chain>(rk, c, G, iters, bar), shared[0]);
        rec(time_rank<Chain>(rk, nc, G, iters, bar), shared[1]);
        rec(time_rank<Gather>(rk, c, G, iters, bar), shared[2]);
        rec(time_rank<Gather>(rk, nc, G, iters, bar), shared[3]);
        if (G > 1) rec(time_rank<ChainOv>(rk, c, G, iters, bar), shared[4]);
        if (G > 1) rec(time_rank<ChainOv15>(rk, c, G, iters, bar), shared[5]);
        if (G > 1) rec(time_rank<ChainOv15>(rk, nc, G, iters, bar), shared[6]);
        if (G > 1) {
          const lasp::Plan<Trunc, bf> tp = rk.plan<Trunc>(c, G);  // the single hop needs the group's plan
          if (r == 0 && !tp.single_hop()) std::fprintf(stderr, "note: the truncated plan does not take the single hop\n");
          rec(time_rank<Trunc>(rk, c, G, iters, bar, &tp), shared[7]);
          rec(time_rank<LogScan>(rk, c, G, iters, bar), shared[8]);
        }
        bar.wait();
        if (r == 0) {
          chain.t = shared[0]; chain.nocomm = shared[1]; gather.t = shared[2]; gather.nocomm = shared[3];
          rows.push_back(chain);
          rows.push_back(gather);
          if (G > 1) {
            chain_ov.t = shared[4];
            chain_ov.nocomm = shared[1];
            rows.push_back(chain_ov);
            chain_ov15.t = shared[5];
            chain_ov15.nocomm = shared[6];
            rows.push_back(chain_ov15);
            trunc.t = shared[7];
            trunc.nocomm = shared[1];
            rows.push_back(trunc);
            logscan.t = shared[8];
            logscan.nocomm = shared[1];
            rows.push_back(logscan);
          }
        }
        bar.wait();
        rk.release();
      }
    });
  }
}

void hops(int G) {
  if (G < 2) return;
  std::printf("\n== state hops, %d GPUs (NCCL %d), time per operation ==\n", G, NCCL_VERSION_CODE);
  std::printf("  %-34s %10s %12s\n", "operation", "us", "algbw GB/s");
  on_gpus(G, [&](int r, lasp::comm::Nccl& c, Barrier& bar) {
    const std::size_t big = (1u << 20) / 4, small = 1024;  // floats: 1 MiB, 4 KiB
    float *sb, *rb, *ag;
    SP_CUDA(cudaMalloc(&sb, big * 4)); SP_CUDA(cudaMalloc(&rb, big * 4)); SP_CUDA(cudaMalloc(&ag, big * 4 * G));
    SP_CUDA(cudaMemset(sb, 0, big * 4));
    cudaStream_t st;
    SP_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0); cudaEventCreate(&e1);
    auto measure = [&](const char* name, std::size_t bytes, const std::function<void()>& op) {
      const int warm = 5, iters = 50;
      for (int i = 0; i < warm; ++i) op();
      SP_CUDA(cudaStreamSynchronize(st));
      bar.wait();
      SP_CUDA(cudaEventRecord(e0, st));
      for (int i = 0; i < iters; ++i) op();
      SP_CUDA(cudaEventRecord(e1, st));
      SP_CUDA(cudaEventSynchronize(e1));
      float ms;
      cudaEventElapsedTime(&ms, e0, e1);
      const double us = 1e3 * ms / iters;
      bar.wait();
      if (r == 0) {
        std::printf("  %-34s %10.1f %12.2f\n", name, us, double(bytes) / (us * 1e3));
        jrow("{\"kind\":\"hop\",\"op\":\"" + std::string(name) + "\",\"gpus\":" + std::to_string(G) + ",\"us\":" + std::to_string(us) + "}");
      }
    };
    const int next = (r + 1) % G, prev = (r + G - 1) % G;
    measure("ring hop 1 MiB (sendrecv)", big * 4, [&] { (void)c.sendrecv(sb, next, rb, prev, big, st); });
    measure("ring hop 4 KiB (sendrecv)", small * 4, [&] { (void)c.sendrecv(sb, next, rb, prev, small, st); });
    const std::string chain_name = "chain 0->..->" + std::to_string(G - 1) + " of 1 MiB hops";
    measure(chain_name.c_str(), big * 4, [&] {  // G-1 dependent hops, as the LASP chain
      if (r > 0) (void)c.recv(rb, big, r - 1, st);
      if (r < G - 1) (void)c.send(r > 0 ? rb : sb, big, r + 1, st);
    });
    measure("all-gather 1 MiB per rank", big * 4 * std::size_t(G), [&] { (void)c.all_gather(sb, ag, big, st); });
    cudaFree(sb); cudaFree(rb); cudaFree(ag);
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    cudaStreamDestroy(st);
  });
}

void capacity(int G) {
  const index_t N = 2 * 1024 * 1024;
  std::printf("\n== capacity: forward+backward at %lld tokens per GPU on %d GPU(s) (chain, recompute) ==\n",
              static_cast<long long>(N), G);
  on_gpus(G, [&](int r, lasp::comm::Nccl& c, Barrier& bar) {
    std::size_t free0, total;
    SP_CUDA(cudaMemGetInfo(&free0, &total));
    Rank rk;
    const lasp::Shape s{1, N, kH, kD, kD, G};
    const std::size_t ws = lasp::workspace_size<Chain, bf>(s, c);
    rk.alloc(N, ws);
    const Times t = time_rank<Chain>(rk, c, G, 2, bar);
    std::size_t free1;
    SP_CUDA(cudaMemGetInfo(&free1, &total));
    const double act = 8.0 * double(N * kH * kD) * 2.0;  // q,k,v,o,dout,dq,dk,dv in bf16
    bar.wait();
    static std::mutex mu;
    std::lock_guard<std::mutex> lk(mu);
    std::printf("  rank %d: step %.2f ms (fwd %.2f, bwd %.2f), peak device memory in use %.1f GiB of %.1f GiB, "
                "activations %.2f GiB, lasp workspace %.1f MiB = %.3f%% of the activations\n",
                r, t.step, t.fwd, t.bwd, double(total - free1) / (1 << 30), double(total) / (1 << 30), act / (1 << 30),
                double(ws) / (1 << 20), 100.0 * double(ws) / act);
    if (r == 0)
      jrow("{\"kind\":\"capacity\",\"gpus\":" + std::to_string(G) + ",\"N\":" + std::to_string(N) +
           ",\"step_ms\":" + std::to_string(t.step) + ",\"workspace_bytes\":" + std::to_string(ws) +
           ",\"activation_bytes\":" + std::to_string(act) + "}");
    rk.release();
  });
}

}  // namespace

int main(int argc, char** argv) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off on these machines
  int ngpu = 0;
  if (cudaGetDeviceCount(&ngpu) != cudaSuccess || ngpu == 0) {
    std::printf("lasp_bench_sp: skipped (no CUDA device visible)\n");
    return 77;
  }
  int G = ngpu;
  bool quick = false, cap = true;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--gpus" && i + 1 < argc) G = std::min(ngpu, std::atoi(argv[++i]));
    else if (a == "--quick") quick = true;
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--no-capacity") cap = false;
  }
  cudaDeviceProp prop{};
  SP_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("lasp_bench_sp: %d x %s; shape per GPU B=1 H=16 D=E=128 bf16 per-head decay\n", G, prop.name);
  std::vector<Row> rows;
  const std::vector<index_t> Ns = quick ? std::vector<index_t>{32768} : std::vector<index_t>{8192, 32768, 131072};
  weak_scaling(G, Ns, rows);
  std::printf("\n== weak scaling (slowest rank, median ms); eff = 1-GPU step / G-GPU step at the same N per GPU ==\n");
  std::printf("  %-10s %4s %8s %9s %9s %9s %7s %12s %12s\n", "schedule", "G", "N/GPU", "fwd", "bwd", "step", "eff",
              "step nocomm", "exposed us");
  for (const Row& x : rows) {
    double base = 0;
    for (const Row& y : rows)
      if (y.G == 1 && y.N == x.N && y.what == "chain") base = y.t.step;
    std::printf("  %-10s %4d %8lld %9.3f %9.3f %9.3f %6.1f%% %12.3f %12.1f\n", x.what.c_str(), x.G,
                static_cast<long long>(x.N), x.t.fwd, x.t.bwd, x.t.step, 100.0 * base / x.t.step, x.nocomm.step,
                1e3 * (x.t.step - x.nocomm.step));
    jrow("{\"kind\":\"weak\",\"schedule\":\"" + x.what + "\",\"gpus\":" + std::to_string(x.G) + ",\"N\":" +
         std::to_string(x.N) + ",\"fwd_ms\":" + std::to_string(x.t.fwd) + ",\"bwd_ms\":" + std::to_string(x.t.bwd) +
         ",\"step_ms\":" + std::to_string(x.t.step) + ",\"step_nocomm_ms\":" + std::to_string(x.nocomm.step) +
         ",\"efficiency\":" + std::to_string(base / x.t.step) + "}");
  }
  hops(G);
  if (cap) capacity(G);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f) { std::fprintf(f, "[\n%s\n]\n", json.c_str()); std::fclose(f); }
  }
  return 0;
}
