// Packed variable-length sequences across ranks (cu_seqlens, per-document states) and the zigzag
// layout (math.md 3.5, 3.6) on the host backend: every rank's outputs and gradients equal each
// document run separately through the double reference; zigzag equals contiguous after the
// permutation; bad offsets are refused identically on every rank with nothing written.
#include <functional>
#include <string>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

namespace ref = lasp::reference;

template <class Decay, class Schedule>
using PP = lasp::Policy<Decay, Schedule, caching::Recompute, tile::Tile<64>>;

struct PSpec {
  index_t B = 1, H = 2, D = 8, E = 8;
  std::vector<index_t> rank_N;   // tokens per rank (zigzag: even)
  std::vector<index_t> docs;     // document lengths (empty: not packed); sum = total tokens
  bool zigzag = false;
  bool init = true;              // packed: a pool of initial states (with indices); else whole-sequence S_init
  bool final = true;             // final states requested and their gradients given
  bool shared_slots = false;     // packed: indices with -1 and slots shared by several documents
  int bits = 32;
  float scale = 0.5f;
  std::uint32_t seed = 1;
};

/// A global problem, its reference (each document separately) and the outputs of a run.
struct PProblem {
  PSpec s;
  int R = 1;
  index_t T = 0, ndocs = 0, pool = 0;
  std::vector<float> q, k, v, dout, gates, slopes;  // (B,T,H,X), gates (B,T,H)
  AlignedVec<std::int32_t> off32, index;
  AlignedVec<std::int64_t> off64;
  AlignedVec<float> pool_states, dF;                // (pool,H,D,E), (docs,H,D,E)
  AlignedVec<float> init_whole, dfinal_whole;       // (B,H,D,E) (not packed)
  // Results of a run, in the reference layout.
  std::vector<double> o, dq, dk, dv, dg, fin, dinit;
  AlignedVec<float> fin_buf, dinit_buf;             // per-document (packed) or whole-sequence states

  explicit PProblem(const PSpec& sp) : s(sp) {
    R = int(s.rank_N.size());
    for (index_t n : s.rank_N) T += n;
    Rng rng(s.seed);
    const std::size_t nqk = std::size_t(s.B * T * s.H * s.D), nvo = std::size_t(s.B * T * s.H * s.E);
    q.resize(nqk), k.resize(nqk), v.resize(nvo), dout.resize(nvo), gates.resize(std::size_t(s.B * T * s.H));
    rng.fill_normal<float>(q), rng.fill_normal<float>(k), rng.fill_normal<float>(v), rng.fill_normal<float>(dout);
    rng.fill_uniform(gates, -0.5f, 0.f);
    slopes = tnl_slopes(s.H);
    const index_t st = s.H * s.D * s.E;
    if (packed()) {
      ndocs = index_t(s.docs.size());
      index_t o_ = 0;
      off32.push_back(0), off64.push_back(0);
      for (index_t L : s.docs) o_ += L, off32.push_back(std::int32_t(o_)), off64.push_back(o_);
      REQUIRE(o_ == T);
      pool = s.shared_slots ? 3 : ndocs;
      pool_states.resize(std::size_t(pool * st)), rng.fill_normal<float>(pool_states);
      index.resize(std::size_t(ndocs));
      for (index_t i = 0; i < ndocs; ++i)
        index[std::size_t(i)] = s.shared_slots ? std::int32_t(i % 4 == 3 ? -1 : (i * 2) % 3) : std::int32_t(i);
      dF.resize(std::size_t(ndocs * st)), rng.fill_normal<float>(dF);
      fin_buf.resize(std::size_t(ndocs * st)), dinit_buf.resize(fin_buf.size());
    } else {
      init_whole.resize(std::size_t(s.B * st)), rng.fill_normal<float>(init_whole);
      dfinal_whole.resize(init_whole.size()), rng.fill_normal<float>(dfinal_whole);
      fin_buf.resize(init_whole.size()), dinit_buf.resize(init_whole.size());
    }
  }
  bool packed() const { return !s.docs.empty(); }
  index_t n_of(int r) const { return s.rank_N[std::size_t(r)]; }
  /// Global position of row n of rank r.
  index_t pos(int r, index_t n) const {
    if (!s.zigzag) {
      index_t t0 = 0;
      for (int j = 0; j < r; ++j) t0 += n_of(j);
      return t0 + n;
    }
    const index_t half = n_of(r) / 2;
    index_t front = 0, back = 0;
    for (int j = 0; j < r; ++j) front += n_of(j) / 2;
    for (int j = 0; j < R; ++j) back += n_of(j) / 2;
    for (int j = R - 1; j > r; --j) back += n_of(j) / 2;
    return n < half ? front + n : back + (n - half);
  }
  /// The initial state of document i (null: zero).
  const float* doc_init(index_t i) const {
    if (!s.init) return nullptr;
    const std::int32_t slot = index[std::size_t(i)];
    return slot < 0 ? nullptr : pool_states.data() + std::size_t(slot) * std::size_t(s.H * s.D * s.E);
  }
  Packed packed_args() {
    Packed p;
    p.cu_seqlens = s.bits == 64 ? static_cast<const void*>(off64.data()) : static_cast<const void*>(off32.data());
    p.index_bits = s.bits;
    p.docs = ndocs;
    if (s.init) p.initial_states = pool_states.data(), p.state_index = index.data(), p.pool = pool;
    return p;
  }
};

template <class Decay>
double log_decay(const PProblem& p, index_t b, index_t t, index_t h) {
  if constexpr (std::is_same_v<Decay, decay::PerHead>) return -double(p.slopes[std::size_t(h)]);
  if constexpr (std::is_same_v<Decay, decay::Gate>) return double(p.gates[std::size_t((b * p.T + t) * p.s.H + h)]);
  (void)p, (void)b, (void)t, (void)h;
  return 0.0;
}

struct PRef {
  std::vector<double> o, dq, dk, dv, dg, fin, dinit;
};

/// The double reference: each document separately (packed), or the whole sequence.
template <class Decay>
PRef packed_reference(const PProblem& p) {
  const PSpec& s = p.s;
  const index_t st = s.H * s.D * s.E;
  PRef r;
  r.o.assign(std::size_t(s.B * p.T * s.H * s.E), 0), r.dv = r.o;
  r.dq.assign(std::size_t(s.B * p.T * s.H * s.D), 0), r.dk = r.dq;
  r.dg.assign(std::size_t(s.B * p.T * s.H), 0);
  auto run = [&](index_t b, index_t t0, index_t L, const float* init, const float* dfin, double* fin_out,
                 double* dinit_out) {
    ref::Problem rp{1, L, s.H, s.D, s.E, double(s.scale)};
    ref::Vec q(std::size_t(L * s.H * s.D)), k(q.size()), v(std::size_t(L * s.H * s.E)), d(v.size()),
        ld(std::size_t(L * s.H));
    for (index_t t = 0; t < L; ++t)
      for (index_t h = 0; h < s.H; ++h) {
        const std::size_t g = std::size_t((b * p.T + t0 + t) * s.H + h), l = std::size_t(t * s.H + h);
        for (index_t x = 0; x < s.D; ++x) q[l * s.D + x] = p.q[g * s.D + x], k[l * s.D + x] = p.k[g * s.D + x];
        for (index_t x = 0; x < s.E; ++x) v[l * s.E + x] = p.v[g * s.E + x], d[l * s.E + x] = p.dout[g * s.E + x];
        ld[l] = log_decay<Decay>(p, b, t0 + t, h);
      }
    const ref::Vec init_v = init ? ref::Vec(init, init + st) : ref::Vec{};
    const ref::Vec dfin_v = dfin ? ref::Vec(dfin, dfin + st) : ref::Vec{};
    ref::Vec o, fin, dq, dk, dv, dl, di;
    ref::forward(rp, q, k, v, ld, init_v, o, fin);
    ref::backward(rp, q, k, v, ld, init_v, d, dfin_v, dq, dk, dv, dl, di);
    // dg in its pair form (no cancellation: backward's q.dq - k.dk leaves rounding residue where
    // the exact value is 0, e.g. a one-token document without initial state).
    ref::dlog_pairs(rp, q, k, v, ld, init_v, d, dfin_v, dl);
    for (index_t t = 0; t < L; ++t)
      for (index_t h = 0; h < s.H; ++h) {
        const std::size_t g = std::size_t((b * p.T + t0 + t) * s.H + h), l = std::size_t(t * s.H + h);
        for (index_t x = 0; x < s.D; ++x) r.dq[g * s.D + x] = dq[l * s.D + x], r.dk[g * s.D + x] = dk[l * s.D + x];
        for (index_t x = 0; x < s.E; ++x) r.o[g * s.E + x] = o[l * s.E + x], r.dv[g * s.E + x] = dv[l * s.E + x];
        r.dg[g] = dl[l];
      }
    std::copy(fin.begin(), fin.end(), fin_out);
    std::copy(di.begin(), di.end(), dinit_out);
  };
  if (p.packed()) {
    r.fin.assign(std::size_t(p.ndocs * st), 0), r.dinit = r.fin;
    for (index_t i = 0; i < p.ndocs; ++i) {
      const index_t t0 = p.off64[std::size_t(i)], L = p.off64[std::size_t(i + 1)] - t0;
      const float* init = p.doc_init(i);
      const float* dfin = s.final ? p.dF.data() + i * st : nullptr;
      double* fo = r.fin.data() + i * st;
      double* dio = r.dinit.data() + i * st;
      if (L == 0) {  // an empty document: final = initial, d initial = d final
        for (index_t x = 0; x < st; ++x) fo[x] = init ? init[x] : 0.0, dio[x] = dfin ? dfin[x] : 0.0;
        continue;
      }
      run(0, t0, L, init, dfin, fo, dio);
    }
  } else {
    r.fin.assign(std::size_t(s.B * st), 0), r.dinit = r.fin;
    for (index_t b = 0; b < s.B; ++b)
      run(b, 0, p.T, s.init ? p.init_whole.data() + b * st : nullptr, s.final ? p.dfinal_whole.data() + b * st : nullptr,
          r.fin.data() + b * st, r.dinit.data() + b * st);
  }
  return r;
}

struct POpts {
  bool plan = false;
  /// Changes rank r's arguments before the call (bad offsets, ...).
  std::function<void(int, Shape&, Packed&, Sharding&)> tweak;
  int node_size = 0;  // comm::HostGroup::set_node_size (schedule::Hierarchical)
};
struct PRun {
  std::vector<Status> plan, fwd, bwd;
  bool untouched = true;  // a refused call wrote nothing (outputs still poisoned)
};

/// Every rank's forward then backward (thread ranks, comm::HostGroup), each with its own
/// buffers holding its rows (zigzag: front then back); outputs gathered into p's results.
template <class Policy>
PRun run_packed(PProblem& p, const POpts& opt = {}) {
  using Decay = typename Policy::Decay;
  const PSpec& s = p.s;
  const int R = p.R;
  struct Rank {
    AlignedVec<float> q, k, v, dout, o, dq, dk, dv, g, dg;
    AlignedVec<unsigned char> ws;
    Shape shape;
    Packed pk;
    Sharding sh = Sharding::kContiguous;
    Plan<Policy, float> plan;
  };
  std::vector<Rank> rk(static_cast<std::size_t>(R));
  comm::HostGroup group(R, std::chrono::milliseconds(20000));
  group.set_node_size(opt.node_size);
  poison(p.fin_buf), poison(p.dinit_buf);
  for (int r = 0; r < R; ++r) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = p.n_of(r);
    x.shape = Shape{s.B, N, s.H, s.D, s.E, R};
    x.sh = s.zigzag ? Sharding::kZigzag : Sharding::kContiguous;
    if (p.packed()) x.pk = p.packed_args();
    if (opt.tweak) opt.tweak(r, x.shape, x.pk, x.sh);
    auto fill = [&](AlignedVec<float>& buf, const std::vector<float>& src, index_t X) {
      buf.assign(std::size_t(s.B * N * s.H * X), 0.f);
      for (index_t b = 0; b < s.B; ++b)
        for (index_t n = 0; n < N; ++n)
          for (index_t i = 0; i < s.H * X; ++i)
            buf[std::size_t((b * N + n) * s.H * X + i)] = src[std::size_t((b * p.T + p.pos(r, n)) * s.H * X + i)];
    };
    fill(x.q, p.q, s.D), fill(x.k, p.k, s.D), fill(x.v, p.v, s.E), fill(x.dout, p.dout, s.E), fill(x.g, p.gates, 1);
    x.o.resize(x.v.size()), x.dv.resize(x.v.size()), x.dq.resize(x.q.size()), x.dk.resize(x.q.size()),
        x.dg.resize(x.g.size());
    poison(x.o), poison(x.dv), poison(x.dq), poison(x.dk), poison(x.dg);
    x.ws.resize(workspace_size<Policy, float>(x.shape, group.comm(r)) + 64);
    poison(x.ws);
  }
  auto params = [&](Rank& x) -> typename Decay::Params {
    if constexpr (std::is_same_v<Decay, decay::PerHead>) return {p.slopes.data()};
    else if constexpr (std::is_same_v<Decay, decay::Gate>) return {gates_token_major(static_cast<const float*>(x.g.data()), x.shape.N, s.H)};
    else return {};
  };
  PRun res;
  const index_t N0 = 0;
  (void)N0;
  if (opt.plan)
    res.plan = on_ranks(group, [&](int r, auto& c) {
      Rank& x = rk[std::size_t(r)];
      return make_plan<Policy, float>(x.shape, params(x), c, &x.plan);
    });
  const bool whole = !p.packed();
  const int final_owner = s.zigzag ? 0 : R - 1;
  res.fwd = on_ranks(group, [&](int r, auto& c) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = x.shape.N;
    ForwardArgs<float, Decay> a{x.shape, token_major<const float>(x.q.data(), N, s.H, s.D),
                                token_major<const float>(x.k.data(), N, s.H, s.D),
                                token_major<const float>(x.v.data(), N, s.H, s.E), token_major(x.o.data(), N, s.H, s.E),
                                s.scale, params(x)};
    a.packed = x.pk;
    a.sharding = x.sh;
    if (p.packed() && s.final) a.packed.final_states = p.fin_buf.data();
    if (whole && s.init && r == 0) a.initial_state = p.init_whole.data();
    if (whole && s.final && r == final_owner) a.final_state = p.fin_buf.data();
    const Workspace w{x.ws.data(), x.ws.size()};
    return opt.plan ? forward(x.plan, a, c, w) : forward<Policy>(a, c, w);
  });
  res.bwd = on_ranks(group, [&](int r, auto& c) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = x.shape.N;
    BackwardArgs<float, Decay> a{x.shape, token_major<const float>(x.q.data(), N, s.H, s.D),
                                 token_major<const float>(x.k.data(), N, s.H, s.D),
                                 token_major<const float>(x.v.data(), N, s.H, s.E),
                                 token_major<const float>(x.dout.data(), N, s.H, s.E),
                                 token_major(x.dq.data(), N, s.H, s.D), token_major(x.dk.data(), N, s.H, s.D),
                                 token_major(x.dv.data(), N, s.H, s.E), s.scale, params(x)};
    if constexpr (Decay::kHasGradient) a.dg = gates_token_major(x.dg.data(), N, s.H);
    a.packed = x.pk;
    a.sharding = x.sh;
    if (p.packed()) {
      if (s.final) a.packed.d_final_states = p.dF.data();
      a.packed.d_initial_states = p.dinit_buf.data();
    }
    if (whole && s.final && r == final_owner) a.d_final_state = p.dfinal_whole.data();
    if (whole && r == 0) a.d_initial_state = p.dinit_buf.data();
    const Workspace w{x.ws.data(), x.ws.size()};
    return opt.plan ? backward(x.plan, a, c, w) : backward<Policy>(a, c, w);
  });
  // Gather every rank's rows into the global results.
  p.o.assign(p.v.size(), 0), p.dv = p.o, p.dq.assign(p.q.size(), 0), p.dk = p.dq, p.dg.assign(p.gates.size(), 0);
  for (int r = 0; r < R; ++r) {
    Rank& x = rk[std::size_t(r)];
    const index_t N = p.n_of(r);
    res.untouched = res.untouched && all_bytes(x.o, kNaNByte) && all_bytes(x.dq, kNaNByte) &&
                    all_bytes(x.dk, kNaNByte) && all_bytes(x.dv, kNaNByte) && all_bytes(x.dg, kNaNByte);
    auto back = [&](const AlignedVec<float>& buf, std::vector<double>& dst, index_t X) {
      for (index_t b = 0; b < s.B; ++b)
        for (index_t n = 0; n < N; ++n)
          for (index_t i = 0; i < s.H * X; ++i)
            dst[std::size_t((b * p.T + p.pos(r, n)) * s.H * X + i)] = buf[std::size_t((b * N + n) * s.H * X + i)];
    };
    back(x.o, p.o, s.E), back(x.dq, p.dq, s.D), back(x.dk, p.dk, s.D), back(x.dv, p.dv, s.E), back(x.dg, p.dg, 1);
  }
  res.untouched = res.untouched && all_bytes(p.fin_buf, kNaNByte) && all_bytes(p.dinit_buf, kNaNByte);
  p.fin.assign(p.fin_buf.begin(), p.fin_buf.end());
  p.dinit.assign(p.dinit_buf.begin(), p.dinit_buf.end());
  return res;
}

/// Tokens [t0, t0 + L) of a (B=1, T, H, X) array.
std::vector<double> doc_slice(const std::vector<double>& a, index_t H, index_t X, index_t t0, index_t L) {
  return std::vector<double>(a.begin() + t0 * H * X, a.begin() + (t0 + L) * H * X);
}

/// Every output against the reference: whole arrays, and each document on its own (so that a
/// wrong one-token document is not hidden by the norm of the long ones).
template <class Decay>
void check_packed(const PProblem& p, const PRef& r) {
  const PSpec& s = p.s;
  CHECK(rel_err(p.o, r.o) <= kTolF32);
  CHECK(rel_err(p.dq, r.dq) <= kTolF32);
  CHECK(rel_err(p.dk, r.dk) <= kTolF32);
  CHECK(rel_err(p.dv, r.dv) <= kTolF32);
  if constexpr (Decay::kHasGradient) CHECK(rel_err(p.dg, r.dg) <= kTolDg);
  if (s.final) CHECK(rel_err(p.fin, r.fin) <= kTolF32);
  CHECK(rel_err(p.dinit, r.dinit) <= kTolF32);
  if (!p.packed()) return;
  const index_t st = s.H * s.D * s.E;
  for (index_t i = 0; i < p.ndocs; ++i) {
    const index_t t0 = p.off64[std::size_t(i)], L = p.off64[std::size_t(i + 1)] - t0;
    CAPTURE(i);
    CAPTURE(L);
    if (L > 0) {
      CHECK(rel_err(doc_slice(p.o, s.H, s.E, t0, L), doc_slice(r.o, s.H, s.E, t0, L)) <= kTolF32);
      CHECK(rel_err(doc_slice(p.dq, s.H, s.D, t0, L), doc_slice(r.dq, s.H, s.D, t0, L)) <= kTolF32);
      CHECK(rel_err(doc_slice(p.dk, s.H, s.D, t0, L), doc_slice(r.dk, s.H, s.D, t0, L)) <= kTolF32);
      CHECK(rel_err(doc_slice(p.dv, s.H, s.E, t0, L), doc_slice(r.dv, s.H, s.E, t0, L)) <= kTolF32);
      if constexpr (Decay::kHasGradient)
        CHECK(rel_err(doc_slice(p.dg, s.H, 1, t0, L), doc_slice(r.dg, s.H, 1, t0, L)) <= kTolDg);
    }
    auto st_slice = [&](const std::vector<double>& a) {
      return std::vector<double>(a.begin() + i * st, a.begin() + (i + 1) * st);
    };
    if (s.final) CHECK(rel_err(st_slice(p.fin), st_slice(r.fin)) <= kTolF32);
    CHECK(rel_err(st_slice(p.dinit), st_slice(r.dinit)) <= kTolF32);
  }
}

template <class Policy>
void run_and_check_packed(PProblem& p, const PRef& r, bool plan = false, int node_size = 0) {
  INFO("policy: ", describe<Policy>(), std::string(p.s.zigzag ? ", zigzag" : ", contiguous"),
       std::string(plan ? ", with a plan" : ""), ", R=", p.R, ", node size ", node_size);
  const PRun rr = run_packed<Policy>(p, POpts{plan, {}, node_size});
  for (Status st : rr.plan) REQUIRE(st == Status::kSuccess);
  for (Status st : rr.fwd) REQUIRE(st == Status::kSuccess);
  for (Status st : rr.bwd) REQUIRE(st == Status::kSuccess);
  check_packed<typename Policy::Decay>(p, r);
}

/// Documents of lengths {1, 2, 63, 64, 65, 1000, rest}, 1200 tokens: starts and ends on rank
/// and chunk (C = 64) boundaries, one-token documents at rank edges, the long document over 3
/// ranks with ranks holding only its middle.
const std::vector<index_t> kDocs = {64, 1, 2, 63, 65, 1000, 5};
std::vector<index_t> contiguous_split(int R) {
  switch (R) {
    case 1: return {1200};
    case 2: return {64, 1136};           // rank 1 starts with a document, on a chunk boundary
    case 3: return {65, 130, 1005};      // rank 0 ends with the one-token document; rank 2 starts with the long one
    case 4: return {130, 200, 400, 470}; // ranks 2 holds only the middle of the long document
    default: return {67, 63, 300, 300, 470};  // rank 1 is exactly one document; ranks 2-4 share the long one
  }
}

template <class Decay>
void every_schedule(int R, bool zigzag, std::uint32_t seed) {
  PSpec s;
  s.docs = kDocs;
  s.zigzag = zigzag;
  s.rank_N = zigzag ? std::vector<index_t>(std::size_t(R), 1200 / R) : contiguous_split(R);
  s.seed = seed;
  PProblem p(s);
  const PRef r = packed_reference<Decay>(p);
  run_and_check_packed<PP<Decay, schedule::Chain>>(p, r);
  run_and_check_packed<PP<Decay, schedule::AllGather>>(p, r);
  run_and_check_packed<PP<Decay, schedule::Truncated<schedule::Chain>>>(p, r);
  run_and_check_packed<PP<Decay, schedule::LogScan>>(p, r);
}

}  // namespace

TEST_CASE("packed: R=1..5 contiguous, every schedule, decay::None equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) every_schedule<decay::None>(R, false, 11000 + std::uint32_t(R));
}
TEST_CASE("packed: R=1..5 contiguous, every schedule, decay::PerHead equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) every_schedule<decay::PerHead>(R, false, 11010 + std::uint32_t(R));
}
TEST_CASE("packed: R=1..5 contiguous, every schedule, decay::Gate equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) every_schedule<decay::Gate>(R, false, 11020 + std::uint32_t(R));
}
TEST_CASE("packed + zigzag: R=1..5, every schedule and decay equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) {
    every_schedule<decay::None>(R, true, 11030 + std::uint32_t(R));
    every_schedule<decay::PerHead>(R, true, 11040 + std::uint32_t(R));
    every_schedule<decay::Gate>(R, true, 11050 + std::uint32_t(R));
  }
}

TEST_CASE("packed and zigzag with schedule::Hierarchical on nodes of 2 and 3 ranks (gates) equal each document") {
  using H = PP<decay::Gate, schedule::Hierarchical<>>;
  for (int R : {4, 5, 6}) {
    for (bool zz : {false, true}) {
      if (!zz && R > 5) continue;  // contiguous_split has R <= 5
      PSpec s;
      s.docs = kDocs;
      s.zigzag = zz;
      s.rank_N = zz ? std::vector<index_t>(std::size_t(R), 1200 / R) : contiguous_split(R);
      s.seed = 11200 + std::uint32_t(R * 2 + zz);
      PProblem p(s);
      const PRef r = packed_reference<decay::Gate>(p);
      for (int g : {2, 3})  // R = 5: no divisor (the fallback, one node)
        run_and_check_packed<H>(p, r, /*plan=*/zz, g);
    }
  }
}

TEST_CASE("zigzag without documents (B=2, whole-sequence S_init read and S_final written on rank 0) equals the reference") {
  for (int R = 1; R <= 4; ++R) {
    CAPTURE(R);
    PSpec s;
    s.B = 2, s.H = 2, s.D = 8, s.E = 4, s.seed = 11100 + std::uint32_t(R);
    s.rank_N = {};
    for (int r = 0; r < R; ++r) s.rank_N.push_back(index_t(2 * (37 + 11 * r)));  // uneven ranks, even N
    s.zigzag = true;
    PProblem p(s);
    const PRef rn = packed_reference<decay::None>(p), rh = packed_reference<decay::PerHead>(p), rg = packed_reference<decay::Gate>(p);
    run_and_check_packed<PP<decay::None, schedule::Chain>>(p, rn);
    run_and_check_packed<PP<decay::PerHead, schedule::AllGather>>(p, rh);
    run_and_check_packed<PP<decay::Gate, schedule::LogScan>>(p, rg);
    run_and_check_packed<PP<decay::Gate, schedule::Chain>>(p, rg, /*plan=*/true);
  }
}

TEST_CASE("zigzag equals contiguous after the permutation (packed, gates)") {
  PSpec s;
  s.docs = kDocs;
  s.seed = 11200;
  s.rank_N = {300, 300, 300, 300};
  PProblem contiguous(s);
  s.zigzag = true;
  PProblem zigzag(s);
  using P = PP<decay::Gate, schedule::AllGather>;
  REQUIRE(run_packed<P>(contiguous).fwd == std::vector<Status>(4, Status::kSuccess));
  REQUIRE(run_packed<P>(zigzag).bwd == std::vector<Status>(4, Status::kSuccess));
  // Both runs are gathered in global token order: the same sequence split two ways.
  CHECK(rel_err(zigzag.o, contiguous.o) <= kTolF32);
  CHECK(rel_err(zigzag.dq, contiguous.dq) <= kTolF32);
  CHECK(rel_err(zigzag.dk, contiguous.dk) <= kTolF32);
  CHECK(rel_err(zigzag.dv, contiguous.dv) <= kTolF32);
  CHECK(rel_err(zigzag.dg, contiguous.dg) <= kTolDg);
  CHECK(rel_err(zigzag.fin, contiguous.fin) <= kTolF32);
  CHECK(rel_err(zigzag.dinit, contiguous.dinit) <= kTolF32);
  // Rank 1 of the zigzag run holds global tokens [150, 300) and [900, 1050) (segments 1 and 6).
  CHECK(zigzag.pos(1, 0) == 150);
  CHECK(zigzag.pos(1, 150) == 900);
  CHECK(zigzag.pos(3, 150) == 600);
}

TEST_CASE("packed: int64 offsets, empty documents, shared and -1 state slots, no final states, with a plan") {
  for (int R : {1, 3}) {
    CAPTURE(R);
    PSpec s;
    s.docs = {0, 1, 63, 0, 64, 0, 65, 2, 200, 1, 0};  // empty documents first, inside and last
    s.bits = 64;
    s.shared_slots = true;
    s.rank_N = R == 1 ? std::vector<index_t>{396} : std::vector<index_t>{64, 65, 267};
    s.seed = 11300 + std::uint32_t(R);
    PProblem p(s);
    const PRef rg = packed_reference<decay::Gate>(p), rh = packed_reference<decay::PerHead>(p);
    run_and_check_packed<PP<decay::Gate, schedule::Chain>>(p, rg, /*plan=*/true);
    run_and_check_packed<PP<decay::PerHead, schedule::Auto>>(p, rh, /*plan=*/true);
    s.final = false;
    s.init = false;
    PProblem q(s);
    run_and_check_packed<PP<decay::Gate, schedule::AllGather>>(q, packed_reference<decay::Gate>(q));
  }
}

TEST_CASE("packed: strong per-head decay takes Truncated's single hops, documents still exact") {
  PSpec s;
  s.docs = kDocs;
  s.rank_N = contiguous_split(5);
  s.seed = 11400;
  PProblem p(s);
  p.slopes = {0.5f, 1.f};  // s N > 24 ln 2 on every rank (N >= 63)
  const PRef r = packed_reference<decay::PerHead>(p);
  run_and_check_packed<PP<decay::PerHead, schedule::Truncated<schedule::Chain>>>(p, r);
  run_and_check_packed<PP<decay::PerHead, schedule::Auto>>(p, r, /*plan=*/true);
  s.zigzag = true;
  s.rank_N = std::vector<index_t>(4, 300);
  PProblem z(s);
  z.slopes = p.slopes;
  run_and_check_packed<PP<decay::PerHead, schedule::Truncated<schedule::Chain>>>(z, packed_reference<decay::PerHead>(z));
}

namespace {
/// Runs a 3-rank packed call with rank `who`'s (or every rank's, who = -1) arguments changed;
/// every rank must return `want` from forward (and backward) and write nothing.
template <class Policy = PP<decay::Gate, schedule::Chain>>
void refused(Status want, int who, std::function<void(Shape&, Packed&, Sharding&)> f, bool plan = false) {
  PSpec s;
  s.docs = {10, 70, 48};
  s.rank_N = {40, 40, 48};
  PProblem p(s);
  POpts o;
  o.plan = plan;
  o.tweak = [&](int r, Shape& sh, Packed& pk, Sharding& z) {
    if (who < 0 || r == who) f(sh, pk, z);
  };
  const PRun rr = run_packed<Policy>(p, o);
  CHECK(rr.fwd == std::vector<Status>(3, want));
  // Backward (after the refused forward) is refused too, with one status on every rank.
  CHECK(rr.bwd == std::vector<Status>(3, rr.bwd[0]));
  CHECK((rr.bwd[0] == Status::kSuccess) == (want == Status::kSuccess));
  if (want != Status::kSuccess) CHECK(rr.untouched);
}
}  // namespace

TEST_CASE("packed: bad offsets and arguments are refused with the same status on every rank, nothing written") {
  static AlignedVec<std::int32_t> bad;
  auto offsets = [](std::vector<std::int32_t> v) {
    return [v](Shape&, Packed& pk, Sharding&) {
      bad.assign(v.begin(), v.end());
      pk.cu_seqlens = bad.data();
      pk.docs = index_t(v.size()) - 1;
    };
  };
  refused(Status::kSuccess, -1, [](Shape&, Packed&, Sharding&) {});
  SUBCASE("first offset not 0") { refused(Status::kInvalidOffsets, -1, offsets({1, 10, 80, 128})); }
  SUBCASE("decreasing") { refused(Status::kInvalidOffsets, -1, offsets({0, 80, 10, 128})); }
  SUBCASE("last below the total (seen only by the exchange, no plan)") {
    refused(Status::kInvalidOffsets, -1, offsets({0, 10, 80, 127}));
  }
  SUBCASE("last above the total, with a plan (seen on each rank alone)") {
    refused(Status::kInvalidOffsets, -1, offsets({0, 10, 80, 129}), true);
  }
  SUBCASE("bad offsets on one rank only: the ranks disagree") {
    refused(Status::kPeerMismatch, 1, offsets({0, 11, 80, 128}));
  }
  SUBCASE("one rank's offsets decreasing: its status everywhere") {
    refused(Status::kInvalidOffsets, 2, offsets({0, 80, 10, 128}));
  }
  SUBCASE("index width") { refused(Status::kInvalidOffsets, -1, [](Shape&, Packed& pk, Sharding&) { pk.index_bits = 16; }); }
  SUBCASE("no documents") { refused(Status::kInvalidOffsets, 0, [](Shape&, Packed& pk, Sharding&) { pk.docs = 0; pk.cu_seqlens = &pk; }); }
  SUBCASE("null offsets") { refused(Status::kNullPointer, 1, [](Shape&, Packed& pk, Sharding&) { pk.cu_seqlens = nullptr; }); }
  SUBCASE("state index out of range") {
    static AlignedVec<std::int32_t> idx = {0, 3, 1};
    refused(Status::kInvalidOffsets, -1, [](Shape&, Packed& pk, Sharding&) { pk.state_index = idx.data(); });
  }
  SUBCASE("one rank packed, the others not") {
    refused(Status::kPeerMismatch, 2, [](Shape&, Packed& pk, Sharding&) { pk = Packed{}; });
  }
  SUBCASE("zigzag with an odd N on one rank") {
    refused(Status::kInvalidShape, 0, [](Shape& sh, Packed&, Sharding& z) {
      z = Sharding::kZigzag;
      sh.N = 39;
    });
  }
  SUBCASE("one rank zigzag, the others contiguous") {
    refused(Status::kPeerMismatch, 1, [](Shape&, Packed&, Sharding& z) { z = Sharding::kZigzag; });
  }
  SUBCASE("misaligned int64 offsets") {
    refused(Status::kMisaligned, -1, [](Shape&, Packed& pk, Sharding&) { pk.index_bits = 64; pk.cu_seqlens = static_cast<const char*>(pk.cu_seqlens) + 4; });
  }
}

TEST_CASE("packed: whole-sequence states with documents are refused (kUnsupportedFeature); overlaps; layouts pair forward and backward") {
  using P = PP<decay::None, schedule::Chain>;
  PSpec s;
  s.docs = {3, 20};
  s.rank_N = {23};
  PProblem p(s);
  comm::HostSingle single;
  const Shape sh{1, 23, s.H, s.D, s.E, 1};
  AlignedVec<float> o(p.v.size()), dq(p.q.size()), dk(p.q.size()), dv(p.v.size());
  AlignedVec<float> qb(p.q.begin(), p.q.end()), kb(p.k.begin(), p.k.end()), vb(p.v.begin(), p.v.end()),
      db(p.dout.begin(), p.dout.end());
  AlignedVec<unsigned char> ws(workspace_size<P, float>(sh, single));
  const Workspace w{ws.data(), ws.size()};
  ForwardArgs<float, decay::None> fa{sh, token_major<const float>(qb.data(), 23, s.H, s.D),
                                     token_major<const float>(kb.data(), 23, s.H, s.D),
                                     token_major<const float>(vb.data(), 23, s.H, s.E), token_major(o.data(), 23, s.H, s.E)};
  fa.packed = p.packed_args();
  AlignedVec<float> st(std::size_t(s.H * s.D * s.E));
  fa.initial_state = st.data();
  CHECK(forward<P>(fa, single, w) == Status::kUnsupportedFeature);
  fa.initial_state = nullptr;
  fa.packed.final_states = o.data();  // overlaps the output
  CHECK(forward<P>(fa, single, w) == Status::kOverlap);
  fa.packed.final_states = reinterpret_cast<float*>(ws.data());  // overlaps the workspace
  CHECK(forward<P>(fa, single, w) == Status::kOverlap);
  fa.packed.final_states = p.fin_buf.data();
  REQUIRE(forward<P>(fa, single, w) == Status::kSuccess);
  BackwardArgs<float, decay::None> ba{sh, fa.q, fa.k, fa.v, token_major<const float>(db.data(), 23, s.H, s.E),
                                      token_major(dq.data(), 23, s.H, s.D), token_major(dk.data(), 23, s.H, s.D),
                                      token_major(dv.data(), 23, s.H, s.E)};
  CHECK(backward<P>(ba, single, w) == Status::kNotForwarded);  // forward was packed, this backward is not
  ba.packed = p.packed_args();
  ba.d_initial_state = st.data();
  CHECK(backward<P>(ba, single, w) == Status::kUnsupportedFeature);
  ba.d_initial_state = nullptr;
  ba.packed.d_initial_states = const_cast<float*>(p.pool_states.data());  // overlaps the initial states
  CHECK(backward<P>(ba, single, w) == Status::kOverlap);
  ba.packed.d_initial_states = p.dinit_buf.data();
  CHECK(backward<P>(ba, single, w) == Status::kSuccess);
  CHECK(can_implement<P>(ba, single, w) == Status::kSuccess);
  // B > 1 with documents: kInvalidShape (buffers of a B = 2 problem).
  PSpec s2;
  s2.B = 2, s2.rank_N = {23};
  PProblem p2(s2);
  const Shape sh2{2, 23, s.H, s.D, s.E, 1};
  AlignedVec<float> o2(p2.v.size()), q2(p2.q.begin(), p2.q.end());
  AlignedVec<unsigned char> ws2(workspace_size<P, float>(sh2, single));
  ForwardArgs<float, decay::None> f2{sh2, token_major<const float>(q2.data(), 23, s.H, s.D),
                                     token_major<const float>(q2.data(), 23, s.H, s.D),
                                     token_major<const float>(q2.data(), 23, s.H, s.E), token_major(o2.data(), 23, s.H, s.E)};
  REQUIRE(s.D == s.E);
  CHECK(can_implement<P>(f2, single, Workspace{ws2.data(), ws2.size()}) == Status::kSuccess);
  f2.packed = p.packed_args();
  CHECK(can_implement<P>(f2, single, Workspace{ws2.data(), ws2.size()}) == Status::kInvalidShape);
}
