// lasp demo, host build: sequence-parallel linear attention over R simulated ranks on the CPU.
//
// This is the demo built when no GPU path is compiled in (no CUDA compiler, or
// -DLASP_ENABLE_CUDA=OFF): it runs lasp's host backend, the plain C++17 implementation of the same
// chunked algorithm and schedules that the CUDA backend runs, with each SP rank a thread and
// lasp::comm::HostGroup as the communicator. With CUDA, examples/demo.cu replaces it.
//
// What it does, for each schedule (Chain = LASP ring, AllGather = LASP-2):
//   - a sequence of T = R*N tokens, B x H heads, D = E, bf16 q/k/v/dout, per-head decay with the
//     TransNormerLLM slopes s_h = 2^(-8(h+1)/H);
//   - lasp::forward then lasp::backward on every rank (rank r holds tokens [r*N, (r+1)*N));
//   - every rank's o, dq, dk, dv (and the final state) against lasp's double-precision O(T^2)
//     reference on the whole sequence; prints a table and exits non-zero on failure.
//
//   lasp_demo [--ranks R] [--tokens N] [--heads H] [--dim D] [--batch B] [--seed S]
//   (--tokens is N, the tokens per rank; the whole sequence has R*N.)
#include <lasp/lasp.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using lasp::index_t;

struct Options {
  int ranks = 4;
  index_t tokens = 1024;  // per rank
  index_t heads = 4, dim = 32, batch = 1;
  unsigned seed = 2024;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--ranks R] [--tokens N] [--heads H] [--dim D] [--batch B] [--seed S]\n"
      "  --ranks R   simulated sequence-parallel ranks (threads), default 4\n"
      "  --tokens N  tokens per rank (the sequence has R*N), default 1024\n"
      "  --heads H   heads, default 4\n"
      "  --dim D     head dimension D = E (a multiple of 8 for bf16 rows), default 32\n"
      "  --batch B   batch size, default 1\n"
      "  --seed S    random seed, default 2024\n",
      argv0);
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) return false;
    const long long v = std::atoll(argv[++i]);
    if (a == "--ranks") o.ranks = int(v);
    else if (a == "--tokens") o.tokens = v;
    else if (a == "--heads") o.heads = v;
    else if (a == "--dim") o.dim = v;
    else if (a == "--batch") o.batch = v;
    else if (a == "--seed") o.seed = unsigned(v);
    else return false;
  }
  return o.ranks >= 1 && o.ranks <= 64 && o.tokens >= 1 && o.heads >= 1 && o.dim >= 8 && o.dim % 8 == 0 &&
         o.dim <= 1024 && o.batch >= 1;
}

/// Host memory aligned to 64 bytes (lasp wants 16-byte aligned rows).
template <class T>
struct Buffer {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Buffer(std::size_t count) : n(count) {
    p = static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t(64)));
    std::uninitialized_value_construct_n(p, count);
  }
  ~Buffer() { ::operator delete(p, std::align_val_t(64)); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T& operator[](std::size_t i) { return p[i]; }
  const T& operator[](std::size_t i) const { return p[i]; }
};

/// ||a - b|| / ||b|| over tokens [t0, t1) of (B, T, H, X) arrays (a in bf16, b in double).
double rel_err(const Buffer<lasp::bf16>& a, const std::vector<double>& b, index_t B, index_t T, index_t HX, index_t t0,
               index_t t1) {
  double num = 0, den = 0;
  for (index_t bb = 0; bb < B; ++bb)
    for (index_t t = t0; t < t1; ++t)
      for (index_t i = 0; i < HX; ++i) {
        const std::size_t j = std::size_t((bb * T + t) * HX + i);
        const double x = lasp::to_float(a[j]), y = b[j];
        num += (x - y) * (x - y);
        den += y * y;
      }
  return std::isnan(num) ? INFINITY : std::sqrt(num / (den > 0 ? den : 1));
}

/// Rank r's segment (tokens [r*N, (r+1)*N)) of a token-major [B, T, H, X] array.
template <class U>
lasp::Tensor<U> rank_view(U* base, index_t N, index_t T, index_t H, index_t X, int r) {
  return {base + index_t(r) * N * H * X, T * H * X, H * X, X};
}

}  // namespace

// examples/demo.cu includes this file and calls the host demo by another name when no GPU is
// visible.
#ifndef LASP_DEMO_HOST_MAIN
#define LASP_DEMO_HOST_MAIN main
#endif

int LASP_DEMO_HOST_MAIN(int argc, char** argv) {
  Options opt;
  if (!parse(argc, argv, opt)) {
    usage(argv[0]);
    return 2;
  }
  const int R = opt.ranks;
  const index_t B = opt.batch, N = opt.tokens, H = opt.heads, D = opt.dim, E = opt.dim, T = N * R;
#ifdef LASP_DEMO_FROM_CUDA
  const char* why = "this build has CUDA but no GPU is visible";
#else
  const char* why = "no GPU path is compiled in (this build has no CUDA)";
#endif
  std::printf("lasp %d.%d.%d demo: %s, so it runs the HOST backend:\n"
              "the same chunked algorithm and schedules on the CPU, %d sequence-parallel ranks simulated as threads.\n"
              "(The CUDA build of this demo runs sequence parallel over every visible GPU.)\n\n",
              LASP_VERSION_MAJOR, LASP_VERSION_MINOR, LASP_VERSION_PATCH, why, R);
  std::printf("problem: B=%lld H=%lld D=E=%lld, %d ranks x N=%lld tokens = T=%lld tokens, bf16 inputs/outputs,\n"
              "         per-head decay with TNL slopes 2^(-8(h+1)/H), scale 1/sqrt(D), forward + backward\n\n",
              (long long)B, (long long)H, (long long)D, R, (long long)N, (long long)T);

  // ---- inputs: whole sequence, token-major [B, T, H, X]; rank r sees tokens [r*N, (r+1)*N) ----
  const std::size_t nqk = std::size_t(B * T * H * D), nvo = std::size_t(B * T * H * E);
  Buffer<lasp::bf16> q(nqk), k(nqk), v(nvo), dout(nvo);
  std::mt19937 rng(opt.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (auto* buf : {&q, &k, &v, &dout})
    for (std::size_t i = 0; i < buf->n; ++i) (*buf)[i] = lasp::from_float<lasp::bf16>(normal(rng));
  std::vector<float> slopes(static_cast<std::size_t>(H));
  for (index_t h = 0; h < H; ++h) slopes[std::size_t(h)] = float(std::exp2(-8.0 * double(h + 1) / double(H)));
  const float scale = 1.f / std::sqrt(float(D));

  // ---- the double-precision reference on exactly the bf16 values lasp reads ----
  const auto t_ref = std::chrono::steady_clock::now();
  namespace ref = lasp::reference;
  auto widen = [](const Buffer<lasp::bf16>& b) {
    ref::Vec out(b.n);
    for (std::size_t i = 0; i < b.n; ++i) out[i] = lasp::to_float(b[i]);
    return out;
  };
  const ref::Problem rp{B, T, H, D, E, double(scale)};
  ref::Vec log_decay(std::size_t(B * T * H));
  for (std::size_t i = 0; i < log_decay.size(); ++i) log_decay[i] = -double(slopes[i % std::size_t(H)]);
  ref::Vec r_o, r_fin, r_dq, r_dk, r_dv, r_dlog, r_dinit;
  {
    const ref::Vec qd = widen(q), kd = widen(k), vd = widen(v), dod = widen(dout);
    ref::forward(rp, qd, kd, vd, log_decay, {}, r_o, r_fin);
    ref::backward(rp, qd, kd, vd, log_decay, {}, dod, {}, r_dq, r_dk, r_dv, r_dlog, r_dinit);
  }
  const double ref_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_ref).count();

  // bf16 outputs are fp32 results rounded once: at most 2^-8 relative per element, so norm-wise
  // at most 2^-8 (3.9e-3) on top of the fp32 error; the final state stays fp32.
  const double tol_bf16 = 5e-3, tol_fp32 = 1e-4;

  std::printf("%-10s %5s %6s %8s %8s %9s %9s %9s %9s %9s %9s  %s\n", "schedule", "ranks", "tokens", "fwd ms",
              "bwd ms", "err o", "err dq", "err dk", "err dv", "max err", "err S_fin", "result");
  bool all_ok = true;

  auto run = [&](auto policy_tag, const char* name) {
    using P = decltype(policy_tag);
    const lasp::Shape shape{B, N, H, D, E, R};
    Buffer<lasp::bf16> o(nvo), dq(nqk), dk(nqk), dv(nvo);
    Buffer<float> fin(std::size_t(B * H * D * E));
    for (auto* buf : {&o, &dq, &dk, &dv}) std::memset(static_cast<void*>(buf->p), 0xff, buf->n * 2);  // NaN
    lasp::comm::HostGroup group(R);
    const std::size_t ws_bytes = lasp::workspace_size<P, lasp::bf16>(shape, group.comm(0));
    std::vector<Buffer<unsigned char>*> ws;
    for (int r = 0; r < R; ++r) ws.push_back(new Buffer<unsigned char>(ws_bytes));
    std::vector<lasp::Status> st_f(std::size_t(R), lasp::Status::kInternalError), st_b = st_f;

    auto view = [&](auto* base, index_t X, int r) { return rank_view(base, N, T, H, X, r); };
    using CB = const lasp::bf16*;
    auto phase = [&](auto&& body) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> th;
      for (int r = 0; r < R; ++r) th.emplace_back([&, r] { body(r); });
      for (auto& t : th) t.join();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    const double fwd_ms = phase([&](int r) {
      auto comm = group.comm(r);
      const lasp::ForwardArgs<lasp::bf16, lasp::decay::PerHead> a{
          shape, view(CB(q.p), D, r), view(CB(k.p), D, r),
          view(CB(v.p), E, r), view(o.p, E, r), scale, {slopes.data()}, nullptr,
          r == R - 1 ? fin.p : nullptr};
      st_f[std::size_t(r)] = lasp::forward<P>(a, comm, lasp::Workspace{ws[std::size_t(r)]->p, ws_bytes});
    });
    const double bwd_ms = phase([&](int r) {
      auto comm = group.comm(r);
      const lasp::BackwardArgs<lasp::bf16, lasp::decay::PerHead> a{
          shape, view(CB(q.p), D, r), view(CB(k.p), D, r),
          view(CB(v.p), E, r), view(CB(dout.p), E, r), view(dq.p, D, r),
          view(dk.p, D, r), view(dv.p, E, r), scale, {slopes.data()}};
      st_b[std::size_t(r)] = lasp::backward<P>(a, comm, lasp::Workspace{ws[std::size_t(r)]->p, ws_bytes});
    });
    for (auto* w : ws) delete w;

    bool ok = true;
    for (int r = 0; r < R; ++r) {
      if (st_f[std::size_t(r)] != lasp::Status::kSuccess || st_b[std::size_t(r)] != lasp::Status::kSuccess) {
        std::printf("  rank %d: forward: %s, backward: %s\n", r, lasp::to_string(st_f[std::size_t(r)]),
                    lasp::to_string(st_b[std::size_t(r)]));
        ok = false;
      }
    }
    // Worst rank for each tensor (each rank's slice against the whole-sequence reference).
    double e_o = 0, e_dq = 0, e_dk = 0, e_dv = 0;
    for (int r = 0; r < R; ++r) {
      const index_t t0 = index_t(r) * N, t1 = t0 + N;
      e_o = std::max(e_o, rel_err(o, r_o, B, T, H * E, t0, t1));
      e_dq = std::max(e_dq, rel_err(dq, r_dq, B, T, H * D, t0, t1));
      e_dk = std::max(e_dk, rel_err(dk, r_dk, B, T, H * D, t0, t1));
      e_dv = std::max(e_dv, rel_err(dv, r_dv, B, T, H * E, t0, t1));
    }
    double num = 0, den = 0;
    for (std::size_t i = 0; i < fin.n; ++i) {
      num += (fin[i] - r_fin[i]) * (fin[i] - r_fin[i]);
      den += r_fin[i] * r_fin[i];
    }
    const double e_fin = std::isnan(num) ? INFINITY : std::sqrt(num / den);
    ok = ok && std::max({e_o, e_dq, e_dk, e_dv}) <= tol_bf16 && e_fin <= tol_fp32;
    all_ok = all_ok && ok;
    std::printf("%-10s %5d %6lld %8.1f %8.1f %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e  %s\n", name, R, (long long)T,
                fwd_ms, bwd_ms, e_o, e_dq, e_dk, e_dv, std::max({e_o, e_dq, e_dk, e_dv}), e_fin, ok ? "PASS" : "FAIL");
  };
  run(lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>{}, "chain");
  run(lasp::Policy<lasp::decay::PerHead, lasp::schedule::AllGather>{}, "all-gather");

  std::printf("\nerrors: ||x - ref|| / ||ref|| for each rank's segment against the double reference on the whole\n"
              "sequence, worst rank shown; limits %.0e (bf16 o, dq, dk, dv) and %.0e (fp32 final state).\n"
              "reference (O(T^2), double): %.0f ms. %s\n",
              tol_bf16, tol_fp32, ref_ms, all_ok ? "All ranks match: PASS." : "FAILED.");
  return all_ok ? 0 : 1;
}
