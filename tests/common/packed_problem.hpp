#pragma once
// Packed documents, the zigzag layout and empty shards: a global problem split over ranks of any
// N (0 included) with its per-document states, and its double reference (each document alone:
// lasp/reference/packed.hpp). Plain C++17, no test framework: the CPU suite
// (cpu/packed_support.hpp runs it on the host backend) and the GPU suites
// (common/packed_cuda.cuh) share it.
#include <stdexcept>
#include <type_traits>
#include <vector>
#include <lasp/args.hpp>
#include <lasp/decay/decay.hpp>
#include <lasp/reference/packed.hpp>
#include "buffer.hpp"
#include "problem.hpp"

namespace lasp_test {
namespace packed {

using namespace lasp;
namespace ref = lasp::reference;

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
      if (o_ != T) throw std::invalid_argument("PSpec: document lengths do not add up to the ranks' tokens");
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
  /// Global position of row n of rank r (the reference's statement of args.hpp's layouts).
  index_t pos(int r, index_t n) const {
    return ref::position(s.zigzag ? Sharding::kZigzag : Sharding::kContiguous, s.rank_N, r, n);
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

/// The double reference: each document separately (packed: reference::documents), or the whole
/// sequence (B >= 1, whole-sequence states).
template <class Decay>
PRef packed_reference(const PProblem& p) {
  const PSpec& s = p.s;
  const index_t st = s.H * s.D * s.E;
  const ref::Problem rp{s.B, p.T, s.H, s.D, s.E, double(s.scale)};
  auto d = [](const std::vector<float>& a) { return ref::Vec(a.begin(), a.end()); };
  ref::Vec ld(std::size_t(s.B * p.T * s.H));
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t < p.T; ++t)
      for (index_t h = 0; h < s.H; ++h) ld[std::size_t((b * p.T + t) * s.H + h)] = log_decay<Decay>(p, b, t, h);
  const ref::Vec q = d(p.q), k = d(p.k), v = d(p.v), dout = d(p.dout);
  PRef r;
  if (p.packed()) {
    std::vector<ref::Vec> init(std::size_t(p.ndocs)), dfin(init.size());
    for (index_t i = 0; i < p.ndocs; ++i) {
      if (const float* I = p.doc_init(i)) init[std::size_t(i)].assign(I, I + st);
      if (s.final) dfin[std::size_t(i)].assign(p.dF.data() + i * st, p.dF.data() + (i + 1) * st);
    }
    const std::vector<index_t> offsets(p.off64.begin(), p.off64.end());
    ref::Documents out;
    ref::documents(rp, offsets, q, k, v, ld, init, dout, dfin, /*want_dlog=*/true, out);
    r.o = std::move(out.o), r.dq = std::move(out.dq), r.dk = std::move(out.dk), r.dv = std::move(out.dv);
    r.dg = std::move(out.dlog), r.fin = std::move(out.final_states), r.dinit = std::move(out.d_initial_states);
  } else {
    const ref::Vec init = s.init ? ref::Vec(p.init_whole.begin(), p.init_whole.end()) : ref::Vec{};
    const ref::Vec dfin = s.final ? ref::Vec(p.dfinal_whole.begin(), p.dfinal_whole.end()) : ref::Vec{};
    ref::forward(rp, q, k, v, ld, init, r.o, r.fin);
    ref::backward(rp, q, k, v, ld, init, dout, dfin, r.dq, r.dk, r.dv, r.dg, r.dinit);
    // dg in its pair form (no cancellation: backward's q.dq - k.dk leaves rounding residue where
    // the exact value is 0, e.g. a one-token document without initial state).
    ref::dlog_pairs(rp, q, k, v, ld, init, dout, dfin, r.dg);
  }
  return r;
}

/// Tokens [t0, t0 + L) of a (B=1, T, H, X) array.
inline std::vector<double> doc_slice(const std::vector<double>& a, index_t H, index_t X, index_t t0, index_t L) {
  return std::vector<double>(a.begin() + t0 * H * X, a.begin() + (t0 + L) * H * X);
}

}  // namespace packed
}  // namespace lasp_test
