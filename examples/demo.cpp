// lasp demo, host build: sequence-parallel linear attention over R simulated ranks on the CPU.
//
// This is the demo built when no GPU path is compiled in (no CUDA compiler, or
// -DLASP_ENABLE_CUDA=OFF): it runs lasp's host backend, the plain C++17 implementation of the same
// chunked algorithm and schedules that the CUDA backend runs, with each SP rank a thread and
// lasp::comm::HostGroup as the communicator. With CUDA, examples/demo.cu replaces it (and calls
// it when no GPU is visible, or for --packed / --zigzag, which the CUDA backend refuses today).
//
// What it does, for each schedule (Chain = LASP ring, AllGather = LASP-2):
//   - a sequence of T = R*N tokens, B x H heads, D = E, bf16 q/k/v/dout, per-head decay with the
//     TransNormerLLM slopes s_h = 2^(-8(h+1)/H);
//   - lasp::forward then lasp::backward on every rank (rank r holds tokens [r*N, (r+1)*N), or
//     with --zigzag virtual segments r and 2R-1-r of N/2 tokens each);
//   - every rank's o, dq, dk, dv (and the final state) against lasp's double-precision O(T^2)
//     reference on the whole sequence; prints a table and exits non-zero on failure.
//   - --packed: the sequence is packed documents (lengths drawn from {1, 2, 63, 64, 65, 1000},
//     the last one the rest, crossing rank boundaries) with per-document initial states in and
//     final states out (and their gradients); the reference runs each document alone
//     (lasp/reference/packed.hpp), and every document is checked on its own too.
//
//   lasp_demo [--ranks R] [--tokens N] [--heads H] [--dim D] [--batch B] [--seed S]
//             [--packed [--no-doc-states]] [--zigzag]
//   (--tokens is N, the tokens per rank; the whole sequence has R*N.)
#include <lasp/lasp.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using lasp::index_t;

struct Options {
  int ranks = 4;
  index_t tokens = 1024;  // per rank
  index_t heads = 4, dim = 32, batch = 1;
  unsigned seed = 2024;
  bool packed = false, zigzag = false, doc_states = true;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [--ranks R] [--tokens N] [--heads H] [--dim D] [--batch B] [--seed S]\n"
      "          [--packed [--no-doc-states]] [--zigzag]\n"
      "  --ranks R        simulated sequence-parallel ranks (threads), default 4\n"
      "  --tokens N       tokens per rank (the sequence has R*N), default 1024\n"
      "  --heads H        heads, default 4\n"
      "  --dim D          head dimension D = E (a multiple of 8 for bf16 rows), default 32\n"
      "  --batch B        batch size, default 1\n"
      "  --seed S         random seed, default 2024\n"
      "  --packed         packed documents (B = 1): lengths drawn from {1, 2, 63, 64, 65, 1000}, the last\n"
      "                   one the rest, across rank boundaries; per-document initial and final states\n"
      "  --no-doc-states  with --packed: no per-document states (every document starts from zero)\n"
      "  --zigzag         the zigzag layout: rank r holds segments r and 2R-1-r of N/2 tokens (N even)\n",
      argv0);
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      std::exit(0);
    }
    if (a == "--packed") { o.packed = true; continue; }
    if (a == "--zigzag") { o.zigzag = true; continue; }
    if (a == "--no-doc-states") { o.doc_states = false; continue; }
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
  if (o.packed && o.batch != 1) {
    std::fprintf(stderr, "--packed needs --batch 1 (packed documents make one sequence)\n");
    return false;
  }
  if (o.zigzag && o.tokens % 2 != 0) {
    std::fprintf(stderr, "--zigzag needs an even --tokens (two halves per rank)\n");
    return false;
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

/// ||a - b|| / ||b|| over n tokens of (B, T, H, X) arrays, token i being row rows(i).first of a
/// (bf16, in the ranks' order) and row rows(i).second of b (double, in global order).
template <class Rows>
double rel_err(const Buffer<lasp::bf16>& a, const std::vector<double>& b, index_t B, index_t T, index_t HX, index_t n,
               Rows rows) {
  double num = 0, den = 0;
  for (index_t bb = 0; bb < B; ++bb)
    for (index_t t = 0; t < n; ++t) {
      const std::pair<index_t, index_t> ij = rows(t);
      for (index_t i = 0; i < HX; ++i) {
        const double x = lasp::to_float(a[std::size_t((bb * T + ij.first) * HX + i)]),
                     y = b[std::size_t((bb * T + ij.second) * HX + i)];
        num += (x - y) * (x - y);
        den += y * y;
      }
    }
  return std::isnan(num) ? INFINITY : std::sqrt(num / (den > 0 ? den : 1));
}
/// ||a - b|| / ||b|| of n fp32 values against double ones.
double rel_err(const float* a, const double* b, std::size_t n) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < n; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::isnan(num) ? INFINITY : std::sqrt(num / (den > 0 ? den : 1));
}

/// Rank r's rows [r*N, (r+1)*N) of a token-major [B, T, H, X] array in the ranks' order.
template <class U>
lasp::Tensor<U> rank_view(U* base, index_t N, index_t T, index_t H, index_t X, int r) {
  return {base + index_t(r) * N * H * X, T * H * X, H * X, X};
}

/// Document offsets over T tokens: lengths drawn from {1, 2, 63, 64, 65, 1000} while they fit,
/// then the rest (docs + 1 offsets, 0 first, T last).
std::vector<index_t> draw_documents(index_t T, std::mt19937& rng) {
  static const index_t kLengths[] = {1, 2, 63, 64, 65, 1000};
  std::uniform_int_distribution<int> pick(0, 5);
  std::vector<index_t> off = {0};
  for (;;) {
    const index_t L = kLengths[pick(rng)];
    if (off.back() + L >= T) break;
    off.push_back(off.back() + L);
  }
  off.push_back(T);
  return off;
}

}  // namespace

// examples/demo.cu includes this file and calls the host demo by another name when no GPU is
// visible, and for --packed / --zigzag (setting host_reason).
#ifdef LASP_DEMO_FROM_CUDA
namespace {
const char* host_reason = "this build has CUDA but no GPU is visible";
}  // namespace
#endif
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
  const char* why = host_reason;
#else
  const char* why = "no GPU path is compiled in (this build has no CUDA)";
#endif
  std::printf("lasp %d.%d.%d demo: %s, so it runs the HOST backend:\n"
              "the same chunked algorithm and schedules on the CPU, %d sequence-parallel ranks simulated as threads.\n"
              "(The CUDA build of this demo runs sequence parallel over every visible GPU.)\n\n",
              LASP_VERSION_MAJOR, LASP_VERSION_MINOR, LASP_VERSION_PATCH, why, R);
  std::printf("problem: B=%lld H=%lld D=E=%lld, %d ranks x N=%lld tokens = T=%lld tokens, bf16 inputs/outputs,\n"
              "         per-head decay with TNL slopes 2^(-8(h+1)/H), scale 1/sqrt(D), forward + backward\n",
              (long long)B, (long long)H, (long long)D, R, (long long)N, (long long)T);

  // ---- layout: where row n of rank r sits in the global sequence (reference/packed.hpp) ----
  namespace ref = lasp::reference;
  const lasp::Sharding sharding = opt.zigzag ? lasp::Sharding::kZigzag : lasp::Sharding::kContiguous;
  const std::vector<index_t> rank_N(std::size_t(R), N);
  std::vector<index_t> gpos(static_cast<std::size_t>(T)), row_of(static_cast<std::size_t>(T));  // ranks' row -> global token, and back
  for (int r = 0; r < R; ++r)
    for (index_t n = 0; n < N; ++n) {
      const index_t row = index_t(r) * N + n, g = ref::position(sharding, rank_N, r, n);
      gpos[std::size_t(row)] = g;
      row_of[std::size_t(g)] = row;
    }
  if (opt.zigzag)
    std::printf("layout:  zigzag, rank r holds virtual segments r and %d-r of N/2=%lld tokens "
                "(rank 0: tokens [0, %lld) and [%lld, %lld))\n",
                2 * R - 1, (long long)(N / 2), (long long)(N / 2), (long long)(T - N / 2), (long long)T);
  else
    std::printf("layout:  contiguous, rank r holds tokens [r*N, (r+1)*N)\n");

  // ---- inputs: whole sequence, token-major [B, T, H, X] in global order ----
  const std::size_t nqk = std::size_t(B * T * H * D), nvo = std::size_t(B * T * H * E);
  Buffer<lasp::bf16> q(nqk), k(nqk), v(nvo), dout(nvo);
  std::mt19937 rng(opt.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (auto* buf : {&q, &k, &v, &dout})
    for (std::size_t i = 0; i < buf->n; ++i) (*buf)[i] = lasp::from_float<lasp::bf16>(normal(rng));
  std::vector<float> slopes(static_cast<std::size_t>(H));
  for (index_t h = 0; h < H; ++h) slopes[std::size_t(h)] = float(std::exp2(-8.0 * double(h + 1) / double(H)));
  const float scale = 1.f / std::sqrt(float(D));
  // The ranks' buffers: rank r's N rows at [r*N, (r+1)*N), row n being global token gpos[r*N + n]
  // (the identity for the contiguous layout).
  Buffer<lasp::bf16> qr(nqk), kr(nqk), vr(nvo), dr(nvo);
  auto to_ranks = [&](const Buffer<lasp::bf16>& g, Buffer<lasp::bf16>& out, index_t X) {
    for (index_t b = 0; b < B; ++b)
      for (index_t row = 0; row < T; ++row)
        std::memcpy(static_cast<void*>(out.p + (b * T + row) * H * X),
                    static_cast<const void*>(g.p + (b * T + gpos[std::size_t(row)]) * H * X),
                    std::size_t(H * X) * sizeof(lasp::bf16));
  };
  to_ranks(q, qr, D), to_ranks(k, kr, D), to_ranks(v, vr, E), to_ranks(dout, dr, E);

  // ---- packed documents (B = 1): offsets, per-document states ----
  const std::size_t st = std::size_t(H * D * E);
  std::vector<index_t> offsets;
  std::vector<std::int32_t> cu;
  index_t docs = 0;
  if (opt.packed) {
    offsets = draw_documents(T, rng);
    docs = index_t(offsets.size()) - 1;
    cu.assign(offsets.begin(), offsets.end());
  }
  const bool doc_states = opt.packed && opt.doc_states;
  Buffer<float> pool(doc_states ? std::size_t(docs) * st : 1), dfin_docs(pool.n);
  for (std::size_t i = 0; doc_states && i < pool.n; ++i) pool[i] = normal(rng), dfin_docs[i] = normal(rng);
  if (opt.packed) {
    index_t shortest = T, longest = 0, crossing = 0;
    for (index_t i = 0; i < docs; ++i) {
      const index_t a = offsets[std::size_t(i)], b = offsets[std::size_t(i + 1)];
      shortest = std::min(shortest, b - a), longest = std::max(longest, b - a);
      bool crosses = false;  // does a token of the document sit on another rank than its first?
      for (index_t g = a; g < b && !crosses; ++g) crosses = row_of[std::size_t(g)] / N != row_of[std::size_t(a)] / N;
      crossing += crosses;
    }
    std::printf("packed:  %lld documents of %lld..%lld tokens (drawn from {1, 2, 63, 64, 65, 1000}, the last one\n"
                "         the rest), %lld of them across ranks; %s\n",
                (long long)docs, (long long)shortest, (long long)longest, (long long)crossing,
                doc_states ? "per-document initial states in, final states out (and their gradients)"
                           : "no per-document states (every document starts from zero)");
  }
  std::printf("\n");

  // ---- the double-precision reference on exactly the bf16 values lasp reads ----
  const auto t_ref = std::chrono::steady_clock::now();
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
    if (opt.packed) {  // each document alone, from its initial state
      std::vector<ref::Vec> init(doc_states ? std::size_t(docs) : 0), dfin(init.size());
      for (std::size_t i = 0; i < init.size(); ++i) {
        init[i].assign(pool.p + i * st, pool.p + (i + 1) * st);
        dfin[i].assign(dfin_docs.p + i * st, dfin_docs.p + (i + 1) * st);
      }
      ref::Documents out;
      ref::documents(rp, offsets, qd, kd, vd, log_decay, init, dod, dfin, /*want_dlog=*/false, out);
      r_o = std::move(out.o), r_dq = std::move(out.dq), r_dk = std::move(out.dk), r_dv = std::move(out.dv);
      r_fin = std::move(out.final_states), r_dinit = std::move(out.d_initial_states);
    } else {
      ref::forward(rp, qd, kd, vd, log_decay, {}, r_o, r_fin);
      ref::backward(rp, qd, kd, vd, log_decay, {}, dod, {}, r_dq, r_dk, r_dv, r_dlog, r_dinit);
    }
  }
  const double ref_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_ref).count();

  // bf16 outputs are fp32 results rounded once: at most 2^-8 relative per element, so norm-wise
  // at most 2^-8 (3.9e-3) on top of the fp32 error; the states stay fp32.
  const double tol_bf16 = 5e-3, tol_fp32 = 1e-4;

  std::printf("%-10s %5s %6s %8s %8s %9s %9s %9s %9s %9s %9s", "schedule", "ranks", "tokens", "fwd ms", "bwd ms",
              "err o", "err dq", "err dk", "err dv", "max err", opt.packed ? "err S_doc" : "err S_fin");
  if (opt.packed) std::printf(" %9s", "worst doc");
  std::printf("  %s\n", "result");
  bool all_ok = true;

  auto run = [&](auto policy_tag, const char* name) {
    using P = decltype(policy_tag);
    const lasp::Shape shape{B, N, H, D, E, R};
    Buffer<lasp::bf16> o(nvo), dq(nqk), dk(nqk), dv(nvo);
    Buffer<float> fin(std::size_t(B * H * D * E)), fin_docs(pool.n), dinit_docs(pool.n);
    for (auto* buf : {&o, &dq, &dk, &dv}) std::memset(static_cast<void*>(buf->p), 0xff, buf->n * 2);  // NaN
    for (auto* buf : {&fin, &fin_docs, &dinit_docs}) std::memset(static_cast<void*>(buf->p), 0xff, buf->n * 4);
    lasp::comm::HostGroup group(R);
    const std::size_t ws_bytes = lasp::workspace_size<P, lasp::bf16>(shape, group.comm(0));
    std::vector<Buffer<unsigned char>*> ws;
    for (int r = 0; r < R; ++r) ws.push_back(new Buffer<unsigned char>(ws_bytes));
    std::vector<lasp::Status> st_f(std::size_t(R), lasp::Status::kInternalError), st_b = st_f;
    // The whole-sequence final state leaves the last rank (zigzag: rank 0, the last segment's).
    const int final_owner = opt.zigzag ? 0 : R - 1;
    lasp::Packed pk;
    if (opt.packed) {
      pk.cu_seqlens = cu.data();
      pk.index_bits = 32;
      pk.docs = docs;
      if (doc_states) pk.initial_states = pool.p, pk.pool = docs;  // document i starts from slot i
    }

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
      lasp::ForwardArgs<lasp::bf16, lasp::decay::PerHead> a{
          shape, view(CB(qr.p), D, r), view(CB(kr.p), D, r), view(CB(vr.p), E, r), view(o.p, E, r), scale,
          {slopes.data()}};
      if (!opt.packed && r == final_owner) a.final_state = fin.p;
      a.packed = pk;
      if (doc_states) a.packed.final_states = fin_docs.p;
      a.sharding = sharding;
      st_f[std::size_t(r)] = lasp::forward<P>(a, comm, lasp::Workspace{ws[std::size_t(r)]->p, ws_bytes});
    });
    const double bwd_ms = phase([&](int r) {
      auto comm = group.comm(r);
      lasp::BackwardArgs<lasp::bf16, lasp::decay::PerHead> a{
          shape, view(CB(qr.p), D, r), view(CB(kr.p), D, r),
          view(CB(vr.p), E, r), view(CB(dr.p), E, r), view(dq.p, D, r),
          view(dk.p, D, r), view(dv.p, E, r), scale, {slopes.data()}};
      a.packed = pk;
      if (doc_states) a.packed.d_final_states = dfin_docs.p, a.packed.d_initial_states = dinit_docs.p;
      a.sharding = sharding;
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
    // Worst rank for each tensor (each rank's rows against the reference at their global positions).
    double e_o = 0, e_dq = 0, e_dk = 0, e_dv = 0;
    for (int r = 0; r < R; ++r) {
      auto rows = [&](index_t n) {
        const index_t row = index_t(r) * N + n;
        return std::pair<index_t, index_t>{row, gpos[std::size_t(row)]};
      };
      e_o = std::max(e_o, rel_err(o, r_o, B, T, H * E, N, rows));
      e_dq = std::max(e_dq, rel_err(dq, r_dq, B, T, H * D, N, rows));
      e_dk = std::max(e_dk, rel_err(dk, r_dk, B, T, H * D, N, rows));
      e_dv = std::max(e_dv, rel_err(dv, r_dv, B, T, H * E, N, rows));
    }
    // States: the whole-sequence final state, or every document's final state and initial-state
    // gradient (worst document). Packed: the worst document's o, dq, dk, dv too.
    double e_state = 0, e_doc = 0;
    if (!opt.packed) {
      e_state = rel_err(fin.p, r_fin.data(), fin.n);
    } else {
      for (index_t i = 0; i < docs; ++i) {
        if (doc_states)
          e_state = std::max({e_state, rel_err(fin_docs.p + std::size_t(i) * st, r_fin.data() + std::size_t(i) * st, st),
                              rel_err(dinit_docs.p + std::size_t(i) * st, r_dinit.data() + std::size_t(i) * st, st)});
        const index_t a = offsets[std::size_t(i)], L = offsets[std::size_t(i + 1)] - a;
        auto rows = [&](index_t t) { return std::pair<index_t, index_t>{row_of[std::size_t(a + t)], a + t}; };
        e_doc = std::max({e_doc, rel_err(o, r_o, B, T, H * E, L, rows), rel_err(dq, r_dq, B, T, H * D, L, rows),
                          rel_err(dk, r_dk, B, T, H * D, L, rows), rel_err(dv, r_dv, B, T, H * E, L, rows)});
      }
    }
    const double worst = std::max({e_o, e_dq, e_dk, e_dv});
    ok = ok && worst <= tol_bf16 && e_state <= tol_fp32 && e_doc <= tol_bf16;
    all_ok = all_ok && ok;
    std::printf("%-10s %5d %6lld %8.1f %8.1f %9.2e %9.2e %9.2e %9.2e %9.2e ", name, R, (long long)T, fwd_ms, bwd_ms,
                e_o, e_dq, e_dk, e_dv, worst);
    if (opt.packed && !doc_states) std::printf("%9s", "-");
    else std::printf("%9.2e", e_state);
    if (opt.packed) std::printf(" %9.2e", e_doc);
    std::printf("  %s\n", ok ? "PASS" : "FAIL");
  };
  run(lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>{}, "chain");
  run(lasp::Policy<lasp::decay::PerHead, lasp::schedule::AllGather>{}, "all-gather");

  std::printf("\nerrors: ||x - ref|| / ||ref|| for each rank's rows against the double reference (%s),\n"
              "worst rank shown%s; limits %.0e (bf16 o, dq, dk, dv) and %.0e (fp32 %s).\n"
              "reference (O(T^2), double): %.0f ms. %s\n",
              opt.packed ? "each document run alone from its initial state" : "on the whole sequence",
              opt.packed ? ", and for each document on its own (worst doc: o, dq, dk, dv)" : "", tol_bf16, tol_fp32,
              opt.packed ? "final states and initial-state gradients, worst document" : "final state", ref_ms,
              all_ok ? "All ranks match: PASS." : "FAILED.");
  return all_ok ? 0 : 1;
}
