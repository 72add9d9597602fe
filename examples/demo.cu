// lasp demo, CUDA build: sequence-parallel linear attention over every visible GPU.
//
//   1. Check: a sequence of R*N tokens split over R = (visible GPUs) ranks, bf16, per-head decay
//      (TransNormerLLM slopes), initial and final states; forward + backward with both schedules
//      (NCCL between the GPUs; one GPU uses comm::DeviceSingle), each through a lasp::Plan made by
//      every rank at set-up; every rank's o, dq, dk, dv and the final state against the
//      double-precision reference on the whole sequence.
//   2. Throughput: S32K per GPU (B=1, H=16, D=E=128, N=32768 per rank, bf16), forward+backward
//      timed with CUDA events (slowest rank), for R GPUs and for 1 GPU: weak-scaling efficiency.
// With no GPU visible it runs the host demo (examples/demo.cpp) over simulated ranks instead.
// --packed / --zigzag: packed documents crossing the ranks and / or the zigzag layout, on the GPUs
// (check_packed below; --zigzag alone: one document over the whole sequence).
//
//   lasp_demo [--gpus G] [--tokens N] [--iters I]   (--tokens: per rank, throughput phase)
//   lasp_demo [--packed [--no-doc-states]] [--zigzag] (GPU check)
#define LASP_DEMO_HOST_MAIN host_demo_main
#define LASP_DEMO_FROM_CUDA 1
#include "demo.cpp"

#include <cuda_bf16.h>
#include <lasp/lasp.cuh>
#include "cuda_utils.cuh"
#ifdef LASP_DEMO_NCCL
#include <lasp/comm/nccl.cuh>
#endif

namespace {

#define DEMO_CUDA(x) LASP_EXAMPLE_CUDA(x)

using bf = __nv_bfloat16;
using Slopes = std::vector<float>;

struct Dev {  // one rank's device buffers (its own segment only)
  bf *q, *k, *v, *o, *dout, *dq, *dk, *dv;
  float *init, *fin, *dfin, *dinit;
  void* ws;
  std::size_t ws_bytes;
  cudaStream_t stream;
};

/// The plan of one layer shape on this rank: collective (every rank of the group calls it
/// together), once, at set-up. It fixes the schedule for the group (schedule::Truncated's single
/// hop needs every rank's verdict) and the workspace size.
template <class Policy, class Comm>
lasp::Plan<Policy, bf> make_layer_plan(const lasp::Shape& s, const Slopes& slopes, Comm& comm) {
  lasp::Plan<Policy, bf> plan;
  float* staging = nullptr;  // a few hundred bytes of device memory for the exchange
  DEMO_CUDA(cudaMalloc(&staging, lasp::plan_staging_floats(comm.size()) * sizeof(float)));
  const lasp::Status st = lasp::make_plan<Policy, bf>(s, {slopes.data()}, comm, staging, nullptr, &plan);
  DEMO_CUDA(cudaFree(staging));
  if (st != lasp::Status::kSuccess) std::fprintf(stderr, "  make_plan: %s\n", lasp::to_string(st));
  return plan;  // not valid on failure: every call with it returns kPlanMismatch
}

/// Allocates rank r's buffers on the current device (N tokens of B=1... shape s).
template <class Policy>
Dev alloc(const lasp::Shape& s, const lasp::Plan<Policy, bf>& plan) {
  Dev d{};
  const std::size_t nq = std::size_t(s.B * s.N * s.H * s.D), nv = std::size_t(s.B * s.N * s.H * s.E);
  const std::size_t ns = std::size_t(s.B * s.H * s.D * s.E);
  bf** qk[] = {&d.q, &d.k, &d.dq, &d.dk};
  bf** vo[] = {&d.v, &d.o, &d.dout, &d.dv};
  float** st[] = {&d.init, &d.fin, &d.dfin, &d.dinit};
  for (bf** p : qk) DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(p), nq * sizeof(bf)));
  for (bf** p : vo) DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(p), nv * sizeof(bf)));
  for (float** p : st) DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(p), ns * sizeof(float)));
  d.ws_bytes = std::max<std::size_t>(plan.workspace_size(), 256);
  DEMO_CUDA(cudaMalloc(&d.ws, d.ws_bytes));
  DEMO_CUDA(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
  return d;
}
void release(Dev& d) {
  void* all[] = {d.q, d.k, d.v, d.o, d.dout, d.dq, d.dk, d.dv, d.init, d.fin, d.dfin, d.dinit, d.ws};
  for (void* p : all) cudaFree(p);
  cudaStreamDestroy(d.stream);
}

/// The forward and backward arguments of one rank's buffers (per-head decay, no states).
struct CallArgs {
  lasp::ForwardArgs<bf, lasp::decay::PerHead> fa{};
  lasp::BackwardArgs<bf, lasp::decay::PerHead> ba{};
};
CallArgs args_of(const lasp::Shape& s, const Dev& d, const Slopes& slopes) {
  const lasp::index_t N = s.N, H = s.H, D = s.D, E = s.E;
  CallArgs c;
  lasp::ForwardArgs<bf, lasp::decay::PerHead>& fa = c.fa;
  fa.shape = s;
  fa.q = lasp::token_major<const bf>(d.q, N, H, D);
  fa.k = lasp::token_major<const bf>(d.k, N, H, D);
  fa.v = lasp::token_major<const bf>(d.v, N, H, E);
  fa.o = lasp::token_major(d.o, N, H, E);
  fa.scale = 1.f / std::sqrt(float(D));
  fa.decay = {slopes.data()};
  lasp::BackwardArgs<bf, lasp::decay::PerHead>& ba = c.ba;
  ba.shape = s;
  ba.q = fa.q; ba.k = fa.k; ba.v = fa.v;
  ba.dout = lasp::token_major<const bf>(d.dout, N, H, E);
  ba.dq = lasp::token_major(d.dq, N, H, D);
  ba.dk = lasp::token_major(d.dk, N, H, D);
  ba.dv = lasp::token_major(d.dv, N, H, E);
  ba.scale = fa.scale;
  ba.decay = fa.decay;
  return c;
}

template <class Policy, class Comm>
lasp::Status step(const lasp::Plan<Policy, bf>& plan, const lasp::Shape& s, Dev& d, Comm& comm, const Slopes& slopes,
                  bool states) {
  auto [fa, ba] = args_of(s, d, slopes);
  fa.initial_state = states ? d.init : nullptr;
  fa.final_state = states ? d.fin : nullptr;
  ba.d_final_state = states ? d.dfin : nullptr;
  ba.d_initial_state = states ? d.dinit : nullptr;
  const lasp::Workspace w{d.ws, d.ws_bytes};
  lasp::Status st = lasp::forward(plan, fa, comm, w, d.stream);
  if (st == lasp::Status::kSuccess) st = lasp::backward(plan, ba, comm, w, d.stream);
  return st;
}

/// Norm-wise relative error of a against the reference b (inf if a holds a NaN).
template <class A>
double err(const A& a, const lasp::reference::Vec& b) {
  double n = 0, d = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double x = double(a[i]);
    n += (x - b[i]) * (x - b[i]);
    d += b[i] * b[i];
  }
  return std::isnan(n) ? INFINITY : std::sqrt(n / d);
}
std::vector<float> to_float(const std::vector<bf>& a) {
  std::vector<float> f(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) f[i] = __bfloat162float(a[i]);
  return f;
}

/// Runs fn(rank, comm) on R GPUs, one thread per rank, with NCCL between them (R >= 2) or the
/// single-device communicator (R == 1).
template <class Fn>
bool on_ranks(int R, Fn fn) {
  std::vector<int> ok(std::size_t(R), 0);
  if (R == 1) {
    DEMO_CUDA(cudaSetDevice(0));
    lasp::comm::DeviceSingle c;
    ok[0] = fn(0, c);
    return ok[0];
  }
#ifdef LASP_DEMO_NCCL
  std::vector<ncclComm_t> comms(static_cast<std::size_t>(R));
  std::vector<int> devs(static_cast<std::size_t>(R));
  for (int r = 0; r < R; ++r) devs[std::size_t(r)] = r;
  if (ncclCommInitAll(comms.data(), R, devs.data()) != ncclSuccess) {
    std::fprintf(stderr, "ncclCommInitAll failed\n");
    return false;
  }
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      DEMO_CUDA(cudaSetDevice(r));
      lasp::comm::Nccl c;
      if (lasp::comm::Nccl::make(comms[std::size_t(r)], &c) != lasp::Status::kSuccess) return;
      ok[std::size_t(r)] = fn(r, c);
    });
  for (auto& t : th) t.join();
  for (ncclComm_t c : comms) ncclCommDestroy(c);
  return std::all_of(ok.begin(), ok.end(), [](int x) { return x != 0; });
#else
  std::fprintf(stderr, "built without NCCL: runs on one GPU only\n");
  return false;
#endif
}

template <class Policy>
bool check(int R, unsigned seed) {
  // Small enough for the O(T^2) double reference: B=1, H=2, D=E=64, 512 tokens per rank.
  const lasp::index_t B = 1, N = 512, H = 2, D = 64, E = 64, T = N * R;
  const lasp::Shape s{B, N, H, D, E, R};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  auto gen = [&](std::size_t n) {
    std::vector<bf> h(n);
    std::vector<double> r(n);
    for (std::size_t i = 0; i < n; ++i) {
      float x;
      do x = nd(rng); while (x == 0.f);
      h[i] = __float2bfloat16(x);
      r[i] = double(__bfloat162float(h[i]));
    }
    return std::make_pair(h, r);
  };
  const auto gq = gen(std::size_t(B * T * H * D)), gk = gen(std::size_t(B * T * H * D));
  const auto gv = gen(std::size_t(B * T * H * E)), gd = gen(std::size_t(B * T * H * E));
  const std::vector<bf>&q = gq.first, &k = gk.first, &v = gv.first, &dout = gd.first;
  const std::vector<double>&rq = gq.second, &rk = gk.second, &rv = gv.second, &rdo = gd.second;
  std::vector<float> init(std::size_t(B * H * D * E)), dfin(init.size());
  for (float& x : init) x = nd(rng);
  for (float& x : dfin) x = nd(rng);
  Slopes slopes(static_cast<std::size_t>(H));
  for (lasp::index_t h = 0; h < H; ++h) slopes[std::size_t(h)] = std::exp2(-8.f * float(h + 1) / float(H));
  std::vector<bf> o(q.size()), dq(q.size()), dk(q.size()), dv(v.size());
  std::vector<float> fin(init.size()), dinit(init.size());
  const std::size_t seg_qk = std::size_t(N * H * D), seg_vo = std::size_t(N * H * E);  // B = 1
  std::vector<lasp::Status> statuses(std::size_t(R), lasp::Status::kSuccess);
  const bool ran = on_ranks(R, [&](int r, auto& comm) {
    const lasp::Plan<Policy, bf> plan = make_layer_plan<Policy>(s, slopes, comm);
    Dev d = alloc<Policy>(s, plan);
    DEMO_CUDA(cudaMemcpy(d.q, q.data() + r * seg_qk, seg_qk * sizeof(bf), cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d.k, k.data() + r * seg_qk, seg_qk * sizeof(bf), cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d.v, v.data() + r * seg_vo, seg_vo * sizeof(bf), cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d.dout, dout.data() + r * seg_vo, seg_vo * sizeof(bf), cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d.init, init.data(), init.size() * 4, cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d.dfin, dfin.data(), dfin.size() * 4, cudaMemcpyHostToDevice));
    statuses[std::size_t(r)] = step<Policy>(plan, s, d, comm, slopes, true);
    DEMO_CUDA(cudaStreamSynchronize(d.stream));
    DEMO_CUDA(cudaMemcpy(o.data() + r * seg_vo, d.o, seg_vo * sizeof(bf), cudaMemcpyDeviceToHost));
    DEMO_CUDA(cudaMemcpy(dq.data() + r * seg_qk, d.dq, seg_qk * sizeof(bf), cudaMemcpyDeviceToHost));
    DEMO_CUDA(cudaMemcpy(dk.data() + r * seg_qk, d.dk, seg_qk * sizeof(bf), cudaMemcpyDeviceToHost));
    DEMO_CUDA(cudaMemcpy(dv.data() + r * seg_vo, d.dv, seg_vo * sizeof(bf), cudaMemcpyDeviceToHost));
    if (r == R - 1) DEMO_CUDA(cudaMemcpy(fin.data(), d.fin, fin.size() * 4, cudaMemcpyDeviceToHost));
    if (r == 0) DEMO_CUDA(cudaMemcpy(dinit.data(), d.dinit, dinit.size() * 4, cudaMemcpyDeviceToHost));
    release(d);
    return statuses[std::size_t(r)] == lasp::Status::kSuccess;
  });
  for (lasp::Status st : statuses)
    if (st != lasp::Status::kSuccess) std::printf("  lasp returned: %s\n", lasp::to_string(st));
  if (!ran) return false;
  namespace ref = lasp::reference;
  ref::Problem p{B, T, H, D, E, 1.0 / std::sqrt(double(D))};
  ref::Vec ld(std::size_t(B * T * H)), ro, rfin, rdq, rdk, rdv, rdlog, rdinit;
  for (lasp::index_t t = 0; t < T; ++t)
    for (lasp::index_t h = 0; h < H; ++h) ld[std::size_t(t * H + h)] = -double(slopes[std::size_t(h)]);
  const ref::Vec rinit(init.begin(), init.end()), rdfin(dfin.begin(), dfin.end());
  ref::forward(p, rq, rk, rv, ld, rinit, ro, rfin);
  ref::backward(p, rq, rk, rv, ld, rinit, rdo, rdfin, rdq, rdk, rdv, rdlog, rdinit);
  const std::vector<float> of = to_float(o), dqf = to_float(dq), dkf = to_float(dk), dvf = to_float(dv);
  const double e[] = {err(of, ro), err(dqf, rdq), err(dkf, rdk), err(dvf, rdv), err(fin, rfin), err(dinit, rdinit)};
  const double worst = *std::max_element(std::begin(e), std::end(e));
  // bf16 inputs and outputs: a few units of bf16 roundoff (2^-8) is the expected error.
  const bool pass = worst < 1.6e-2;
  std::printf("  check %-10s R=%d T=%lld  o %.1e dq %.1e dk %.1e dv %.1e final %.1e dS0 %.1e  %s\n",
              Policy::Schedule::kName, R, static_cast<long long>(T), e[0], e[1], e[2], e[3], e[4], e[5],
              pass ? "PASS" : "FAIL");
  return pass;
}

/// Forward+backward time (ms, slowest rank, median of iters) of S-shapes with N tokens per rank.
template <class Policy>
double time_step(int R, lasp::index_t N, int iters) {
  const lasp::Shape s{1, N, 16, 128, 128, R};
  Slopes slopes(16);
  for (int h = 0; h < 16; ++h) slopes[std::size_t(h)] = std::exp2(-8.f * float(h + 1) / 16.f);
  std::vector<double> per_rank(static_cast<std::size_t>(R), 0.0);
  const bool ok = on_ranks(R, [&](int r, auto& comm) {
    const lasp::Plan<Policy, bf> plan = make_layer_plan<Policy>(s, slopes, comm);
    Dev d = alloc<Policy>(s, plan);
    const std::size_t nq = std::size_t(N * 16 * 128);
    bf* bufs[] = {d.q, d.k, d.v, d.dout};
    unsigned seed = 11u + 5u * unsigned(r);
    for (bf* p : bufs) lasp_example::fill_bf16<<<1024, 256, 0, d.stream>>>(p, nq, seed++);
    cudaEvent_t e0, e1;
    DEMO_CUDA(cudaEventCreate(&e0));
    DEMO_CUDA(cudaEventCreate(&e1));
    std::vector<float> t;
    bool good = true;
    for (int i = 0; i < iters + 3 && good; ++i) {
      DEMO_CUDA(cudaEventRecord(e0, d.stream));
      good = step<Policy>(plan, s, d, comm, slopes, false) == lasp::Status::kSuccess;
      DEMO_CUDA(cudaEventRecord(e1, d.stream));
      DEMO_CUDA(cudaEventSynchronize(e1));
      float ms = 0;
      DEMO_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      if (i >= 3) t.push_back(ms);
    }
    if (good) {
      std::sort(t.begin(), t.end());
      per_rank[std::size_t(r)] = t[t.size() / 2];
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    release(d);
    return good;
  });
  return ok ? *std::max_element(per_rank.begin(), per_rank.end()) : -1.0;
}

/// --packed on the GPUs: a packed sequence of R*N tokens over R ranks (one per GPU; NCCL between
/// them), documents of {1, 2, 63, 64, 65, 1000} tokens crossing ranks (the last one takes the
/// rest), per-head decay, a pool of per-document initial states (unless --no-doc-states), final
/// states and their gradients; forward + backward on the CUDA backend, every output and every
/// per-document state against each document run alone through the double reference
/// (lasp/reference/packed.hpp). A document's final state (initial-state gradient) must come from
/// exactly one rank: the one holding its last (first) token.
bool check_packed(int R, bool doc_states, bool zigzag, bool one_doc, unsigned seed) {
  using Policy = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
  const lasp::index_t N = 1536, H = 2, D = 64, E = 64, T = N * R, st = H * D * E;
  const lasp::Shape s{1, N, H, D, E, R};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  const lasp::index_t lens[] = {1, 2, 63, 64, 65, 1000};
  std::vector<std::int32_t> cu = {0};
  while (cu.back() < T) {
    const lasp::index_t L = one_doc ? T : lens[rng() % 6];
    cu.push_back(std::int32_t(std::min<lasp::index_t>(T, cu.back() + L)));
  }
  // Where rank r's rows sit in the sequence: one block of N (contiguous) or, zigzag, virtual
  // segments r and 2R-1-r of N/2 rows each (reference/packed.hpp position()).
  const std::vector<lasp::index_t> rank_N(static_cast<std::size_t>(R), N);
  const lasp::Sharding sharding = zigzag ? lasp::Sharding::kZigzag : lasp::Sharding::kContiguous;
  const int pieces = zigzag ? 2 : 1;
  const lasp::index_t piece = N / pieces;
  auto piece_at = [&](int r, int k) { return lasp::reference::position(sharding, rank_N, r, k * piece); };
  const lasp::index_t docs = lasp::index_t(cu.size()) - 1;
  auto gen = [&](std::size_t n, std::vector<bf>& h, lasp::reference::Vec& r) {
    h.resize(n), r.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      float x;
      do x = nd(rng); while (x == 0.f);
      h[i] = __float2bfloat16(x);
      r[i] = double(__bfloat162float(h[i]));
    }
  };
  std::vector<bf> q, k, v, dout;
  lasp::reference::Vec rq, rk, rv, rdo;
  gen(std::size_t(T * H * D), q, rq), gen(std::size_t(T * H * D), k, rk);
  gen(std::size_t(T * H * E), v, rv), gen(std::size_t(T * H * E), dout, rdo);
  std::vector<float> pool(std::size_t(docs * st)), dF(std::size_t(docs * st));
  for (float& x : pool) x = nd(rng);
  for (float& x : dF) x = nd(rng);
  Slopes slopes(static_cast<std::size_t>(H));
  for (lasp::index_t h = 0; h < H; ++h) slopes[std::size_t(h)] = std::exp2(-8.f * float(h + 1) / float(H));
  std::vector<bf> o(q.size()), dq(q.size()), dk(q.size()), dv(v.size());
  std::vector<std::vector<float>> fin(static_cast<std::size_t>(R)), dinit(static_cast<std::size_t>(R));  // each rank's own
  const std::size_t seg_qk = std::size_t(N * H * D), seg_vo = std::size_t(N * H * E);
  std::vector<lasp::Status> statuses(std::size_t(R), lasp::Status::kSuccess);
  const bool ran = on_ranks(R, [&](int r, auto& comm) {
    const std::size_t ws_bytes = lasp::workspace_size<Policy, bf>(s, comm);
    Dev d{};
    bf** qk[] = {&d.q, &d.k, &d.dq, &d.dk};
    bf** vo[] = {&d.v, &d.o, &d.dout, &d.dv};
    for (bf** p : qk) DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(p), seg_qk * sizeof(bf)));
    for (bf** p : vo) DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(p), seg_vo * sizeof(bf)));
    float *d_pool = nullptr, *d_fin = nullptr, *d_dF = nullptr, *d_dinit = nullptr;
    std::int32_t* d_cu = nullptr;
    DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_pool), pool.size() * 4));
    DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_fin), pool.size() * 4));
    DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_dF), pool.size() * 4));
    DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_dinit), pool.size() * 4));
    DEMO_CUDA(cudaMalloc(reinterpret_cast<void**>(&d_cu), cu.size() * 4));
    DEMO_CUDA(cudaMalloc(&d.ws, ws_bytes));
    DEMO_CUDA(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking));
    for (int kk = 0; kk < pieces; ++kk) {  // this rank's rows (zigzag: front and back halves)
      const std::size_t g = std::size_t(piece_at(r, kk)), l = std::size_t(kk * piece);
      const std::size_t rqk = std::size_t(H * D), rvo = std::size_t(H * E), n = std::size_t(piece);
      DEMO_CUDA(cudaMemcpy(d.q + l * rqk, q.data() + g * rqk, n * rqk * sizeof(bf), cudaMemcpyHostToDevice));
      DEMO_CUDA(cudaMemcpy(d.k + l * rqk, k.data() + g * rqk, n * rqk * sizeof(bf), cudaMemcpyHostToDevice));
      DEMO_CUDA(cudaMemcpy(d.v + l * rvo, v.data() + g * rvo, n * rvo * sizeof(bf), cudaMemcpyHostToDevice));
      DEMO_CUDA(cudaMemcpy(d.dout + l * rvo, dout.data() + g * rvo, n * rvo * sizeof(bf), cudaMemcpyHostToDevice));
    }
    DEMO_CUDA(cudaMemcpy(d_pool, pool.data(), pool.size() * 4, cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d_dF, dF.data(), dF.size() * 4, cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemcpy(d_cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
    DEMO_CUDA(cudaMemset(d_fin, 0xff, pool.size() * 4));    // NaN: entries this rank must not write stay NaN
    DEMO_CUDA(cudaMemset(d_dinit, 0xff, pool.size() * 4));
    lasp::Packed pk;
    pk.cu_seqlens = cu.data(), pk.cu_seqlens_device = d_cu, pk.index_bits = 32, pk.docs = docs;
    if (doc_states) pk.initial_states = d_pool, pk.pool = docs;  // slot i for document i
    pk.final_states = d_fin, pk.d_final_states = d_dF, pk.d_initial_states = d_dinit;
    auto [fa, ba] = args_of(s, d, slopes);
    fa.packed = ba.packed = pk;
    fa.sharding = ba.sharding = sharding;
    const lasp::Workspace w{d.ws, ws_bytes};
    lasp::Status st = lasp::forward<Policy>(fa, comm, w, d.stream);
    if (st == lasp::Status::kSuccess) st = lasp::backward<Policy>(ba, comm, w, d.stream);
    if (st == lasp::Status::kSuccess) st = lasp::cuda::deferred_status(w, d.stream);  // device-side checks
    statuses[std::size_t(r)] = st;
    DEMO_CUDA(cudaStreamSynchronize(d.stream));
    for (int kk = 0; kk < pieces; ++kk) {
      const std::size_t g = std::size_t(piece_at(r, kk)), l = std::size_t(kk * piece);
      const std::size_t rqk = std::size_t(H * D), rvo = std::size_t(H * E), n = std::size_t(piece);
      DEMO_CUDA(cudaMemcpy(o.data() + g * rvo, d.o + l * rvo, n * rvo * sizeof(bf), cudaMemcpyDeviceToHost));
      DEMO_CUDA(cudaMemcpy(dq.data() + g * rqk, d.dq + l * rqk, n * rqk * sizeof(bf), cudaMemcpyDeviceToHost));
      DEMO_CUDA(cudaMemcpy(dk.data() + g * rqk, d.dk + l * rqk, n * rqk * sizeof(bf), cudaMemcpyDeviceToHost));
      DEMO_CUDA(cudaMemcpy(dv.data() + g * rvo, d.dv + l * rvo, n * rvo * sizeof(bf), cudaMemcpyDeviceToHost));
    }
    std::vector<float>& my_fin = fin[std::size_t(r)];
    std::vector<float>& my_dinit = dinit[std::size_t(r)];
    my_fin.resize(pool.size());
    my_dinit.resize(pool.size());
    DEMO_CUDA(cudaMemcpy(my_fin.data(), d_fin, pool.size() * 4, cudaMemcpyDeviceToHost));
    DEMO_CUDA(cudaMemcpy(my_dinit.data(), d_dinit, pool.size() * 4, cudaMemcpyDeviceToHost));
    void* all[] = {d.q, d.k, d.v, d.o, d.dout, d.dq, d.dk, d.dv, d.ws, d_pool, d_fin, d_dF, d_dinit, d_cu};
    for (void* p : all) cudaFree(p);
    cudaStreamDestroy(d.stream);
    return st == lasp::Status::kSuccess;
  });
  for (lasp::Status st : statuses)
    if (st != lasp::Status::kSuccess) std::printf("  lasp returned: %s\n", lasp::to_string(st));
  if (!ran) return false;
  namespace ref = lasp::reference;
  const ref::Problem p{1, T, H, D, E, 1.0 / std::sqrt(double(D))};
  ref::Vec ld(std::size_t(T * H));
  for (lasp::index_t t = 0; t < T; ++t)
    for (lasp::index_t h = 0; h < H; ++h) ld[std::size_t(t * H + h)] = -double(slopes[std::size_t(h)]);
  std::vector<ref::Vec> init(static_cast<std::size_t>(docs)), dfin(static_cast<std::size_t>(docs));
  for (lasp::index_t i = 0; i < docs; ++i) {
    if (doc_states) init[std::size_t(i)].assign(pool.begin() + i * st, pool.begin() + (i + 1) * st);
    dfin[std::size_t(i)].assign(dF.begin() + i * st, dF.begin() + (i + 1) * st);
  }
  const std::vector<lasp::index_t> offsets(cu.begin(), cu.end());
  ref::Documents out;
  ref::documents(p, offsets, rq, rk, rv, ld, init, rdo, dfin, false, out);
  // Per-document states: exactly one rank wrote each entry.
  std::vector<float> fin_all(pool.size()), dinit_all(pool.size());
  int bad_owner = 0;
  for (std::size_t x = 0; x < pool.size(); ++x) {
    int nf = 0, nd0 = 0;
    for (int r = 0; r < R; ++r) {
      if (!std::isnan(fin[std::size_t(r)][x])) fin_all[x] = fin[std::size_t(r)][x], ++nf;
      if (!std::isnan(dinit[std::size_t(r)][x])) dinit_all[x] = dinit[std::size_t(r)][x], ++nd0;
    }
    if (nf != 1 || nd0 != 1) ++bad_owner;
  }
  const std::vector<float> of = to_float(o), dqf = to_float(dq), dkf = to_float(dk), dvf = to_float(dv);
  const double e[] = {err(of, out.o), err(dqf, out.dq), err(dkf, out.dk), err(dvf, out.dv),
                      err(fin_all, out.final_states), err(dinit_all, out.d_initial_states)};
  const double worst = *std::max_element(std::begin(e), std::end(e));
  const bool pass = worst < 1.6e-2 && bad_owner == 0;  // bf16: a few units of bf16 roundoff (2^-8)
  std::printf("  check %s R=%d T=%lld docs=%lld%s  o %.1e dq %.1e dk %.1e dv %.1e S_doc %.1e dS0_doc %.1e%s  %s\n",
              zigzag ? (one_doc ? "zigzag" : "packed+zigzag") : "packed", R,
              static_cast<long long>(T), static_cast<long long>(docs), doc_states ? "" : " (no doc states)", e[0], e[1],
              e[2], e[3], e[4], e[5], bad_owner ? "  (per-document states not written by exactly one rank)" : "",
              pass ? "PASS" : "FAIL");
  return pass;
}

/// --packed / --zigzag on a machine with GPUs: the check above on every visible GPU. --zigzag
/// alone runs it with one document over the whole sequence (a packed call's per-document states
/// then stand for the whole-sequence ones).
int packed_or_zigzag(int argc, char** argv, int ngpu) {
  bool packed = false, zigzag = false, doc_states = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    packed = packed || a == "--packed";
    zigzag = zigzag || a == "--zigzag";
    doc_states = doc_states && a != "--no-doc-states";
  }
  int R = ngpu;
#ifndef LASP_DEMO_NCCL
  R = 1;
#endif
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  std::printf("lasp demo: %s on the CUDA backend, %d GPU(s)\n",
              packed && zigzag ? "packed documents, zigzag layout" : packed ? "packed documents" : "zigzag layout", R);
  const bool pass = check_packed(R, doc_states, zigzag, !packed, 21) && check_packed(R, doc_states, zigzag, !packed, 22);
  std::printf("lasp demo: %s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int ngpu = 0;
  if (cudaGetDeviceCount(&ngpu) != cudaSuccess || ngpu == 0) {
    return host_demo_main(argc, argv);
  }
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--packed" || a == "--zigzag") return packed_or_zigzag(argc, argv, ngpu);
    if (a == "--help" || a == "-h") {
      std::printf("usage: %s [--gpus G] [--tokens N] [--iters I]\n"
                  "       %s [--packed [--no-doc-states]] [--zigzag]   (packed documents / zigzag layout,\n"
                  "       checked on the GPUs)\n",
                  argv[0], argv[0]);
      return 0;
    }
  }
  int R = ngpu;
  lasp::index_t N = 32768;
  int iters = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--gpus") R = std::max(1, std::min(ngpu, std::atoi(argv[i + 1])));
    else if (a == "--tokens") N = std::atoll(argv[i + 1]);
    else if (a == "--iters") iters = std::max(1, std::atoi(argv[i + 1]));
  }
#ifndef LASP_DEMO_NCCL
  R = 1;
#endif
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off (shared machines)
  cudaDeviceProp prop{};
  DEMO_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("lasp demo: %d x %s, sequence parallel over %d GPU(s)\n", ngpu, prop.name, R);
  using Chain = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
  using Gather = lasp::Policy<lasp::decay::PerHead, lasp::schedule::AllGather>;
  // Decay-aware truncation: a single neighbour hop when every head's decay over every rank is
  // below fp32 resolution (the throughput shape), the all-gather otherwise (the check shape); the
  // plan decides for the group.
  using Trunc = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Truncated<lasp::schedule::AllGather>>;
  bool pass = check<Chain>(R, 7) && check<Gather>(R, 8) && check<Trunc>(R, 9);
  std::printf("\n  %-10s %5s %12s %10s %14s %12s\n", "schedule", "GPUs", "tokens", "step ms", "Mtokens/s", "efficiency");
  const double t1 = time_step<Chain>(1, N, iters);
  std::printf("  %-10s %5d %12lld %10.3f %14.1f %12s\n", "single", 1, static_cast<long long>(N), t1, double(N) / t1 * 1e-3, "-");
  if (R > 1) {
    const double tc = time_step<Chain>(R, N, iters), tg = time_step<Gather>(R, N, iters),
                 tt = time_step<Trunc>(R, N, iters);
    std::printf("  %-10s %5d %12lld %10.3f %14.1f %11.1f%%\n", "chain", R, static_cast<long long>(N * R), tc,
                double(N * R) / tc * 1e-3, 100.0 * t1 / tc);
    std::printf("  %-10s %5d %12lld %10.3f %14.1f %11.1f%%\n", "all-gather", R, static_cast<long long>(N * R), tg,
                double(N * R) / tg * 1e-3, 100.0 * t1 / tg);
    std::printf("  %-10s %5d %12lld %10.3f %14.1f %11.1f%%\n", "truncated", R, static_cast<long long>(N * R), tt,
                double(N * R) / tt * 1e-3, 100.0 * t1 / tt);
    pass = pass && tc > 0 && tg > 0 && tt > 0;
  }
  pass = pass && t1 > 0;
  std::printf("\n  (S-shape per GPU: B=1, H=16, D=E=128, bf16, per-head decay; efficiency = 1-GPU step / R-GPU step)\n");
  std::printf("lasp demo: %s\n", pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
