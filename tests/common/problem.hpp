#pragma once
// A whole-sequence ("global") problem for lasp's tests: random inputs for T = R*N tokens, the
// layouts they are stored in, rank r's segment as strided lasp::Tensor views, unpacking of
// outputs and the double-precision reference on exactly the values lasp reads.
//
// Plain C++17 with no test framework, so the GPU suites reuse it: they copy the packed host
// buffers (`*_buf`) to the device and build views with the same SeqLayout/GateLayout over
// device pointers.
//
//   lasp_test::ProblemSpec s;  s.B = 2; s.N = 33; s.R = 3; s.layout = lasp_test::Layout::kHeadMajor;
//   lasp_test::GlobalProblem<lasp::bf16> p(s);                  // random, seeded, never zeros
//   auto ref = lasp_test::run_reference<lasp::decay::Gate>(p);  // double, on the rounded inputs
//   ... run lasp on p.view_q(r) ... -> p.o_buf ...
//   double e = lasp_test::rel_err(p.o(), ref.o);
#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>
#include <lasp/args.hpp>
#include <lasp/element.hpp>
#include <lasp/decay/decay.hpp>
#include <lasp/reference/naive.hpp>
#include <lasp/tensor.hpp>
#include "buffer.hpp"
#include "compare.hpp"

namespace lasp_test {

using lasp::index_t;

enum class Layout { kTokenMajor, kHeadMajor };
inline const char* to_string(Layout l) { return l == Layout::kTokenMajor ? "token-major" : "head-major"; }

inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }
/// Elements of type T in 16 bytes: lasp's stride granularity.
template <class T>
constexpr index_t kElemsPer16B = index_t(16 / sizeof(T));

/// The unit roundoff u of an element type (|fl(x) - x| <= u |x| for round-to-nearest).
template <class T> constexpr double unit_roundoff();
template <> constexpr double unit_roundoff<float>() { return 5.9604644775390625e-08; }  // 2^-24
template <> constexpr double unit_roundoff<lasp::bf16>() { return 0.00390625; }        // 2^-8
template <> constexpr double unit_roundoff<lasp::fp16>() { return 0.00048828125; }     // 2^-11

/// x rounded to element type T and back (what lasp reads when given x stored as T).
template <class T>
float round_to(float x) { return lasp::to_float(lasp::from_float<T>(x)); }

/// A global tensor (B, T, H, X) stored token-major [B,T,H,pitch] or head-major [B,H,T,pitch].
/// Elements X..pitch-1 of every row are padding that lasp must neither read nor write.
struct SeqLayout {
  index_t B = 1, T = 1, H = 1, X = 1, pitch = 1;
  Layout layout = Layout::kTokenMajor;

  std::size_t size() const { return std::size_t(B * T * H * pitch); }
  index_t stride_b() const { return T * H * pitch; }
  index_t stride_n() const { return layout == Layout::kTokenMajor ? H * pitch : pitch; }
  index_t stride_h() const { return layout == Layout::kTokenMajor ? pitch : T * pitch; }
  std::size_t offset(index_t b, index_t t, index_t h) const {
    return std::size_t(b * stride_b() + t * stride_n() + h * stride_h());
  }
  bool is_padding(std::size_t i) const { return index_t(i) % pitch >= X; }
  /// The view of tokens [t0, t0 + N) (rank r's segment with t0 = r*N); the strides of the global tensor.
  template <class U>
  lasp::Tensor<U> view(U* base, index_t t0) const {
    return {base + t0 * stride_n(), stride_b(), stride_n(), stride_h()};
  }
};

/// Global fp32 log-gates (B, T, H), token-major [B,T,H] or head-major [B,H,T].
struct GateLayout {
  index_t B = 1, T = 1, H = 1;
  Layout layout = Layout::kTokenMajor;

  std::size_t size() const { return std::size_t(B * T * H); }
  index_t stride_b() const { return T * H; }
  index_t stride_n() const { return layout == Layout::kTokenMajor ? H : 1; }
  index_t stride_h() const { return layout == Layout::kTokenMajor ? 1 : T; }
  std::size_t offset(index_t b, index_t t, index_t h) const {
    return std::size_t(b * stride_b() + t * stride_n() + h * stride_h());
  }
  lasp::GateTensor view(float* base, index_t t0) const { return {base + t0 * stride_n(), stride_b(), stride_n(), stride_h()}; }
  lasp::ConstGateTensor cview(const float* base, index_t t0) const {
    return {base + t0 * stride_n(), stride_b(), stride_n(), stride_h()};
  }
};

/// TransNormerLLM / ALiBi slopes s_h = 2^(-8(h+1)/H).
inline std::vector<float> tnl_slopes(index_t H) {
  std::vector<float> s(static_cast<std::size_t>(H));
  for (index_t h = 0; h < H; ++h) s[std::size_t(h)] = float(std::exp2(-8.0 * double(h + 1) / double(H)));
  return s;
}

/// Seeded generators. Data is never zero: a draw that is 0 after rounding is redrawn.
struct Rng {
  std::mt19937 gen;
  explicit Rng(std::uint32_t seed) : gen(seed) {}
  float normal(float stddev = 1.f) {
    std::normal_distribution<float> d(0.f, stddev);
    float x;
    do x = d(gen); while (x == 0.f);
    return x;
  }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
  /// Normal values rounded to T; stored as float/double, or as T when v holds T.
  template <class T, class V>
  void fill_normal(V& v, float stddev = 1.f) {
    using X = std::decay_t<decltype(v[0])>;
    for (auto& x : v) {
      float y;
      do y = round_to<T>(normal(stddev)); while (y == 0.f);
      if constexpr (std::is_floating_point_v<X>) x = X(y);
      else x = lasp::from_float<X>(y);
    }
  }
  template <class V>
  void fill_uniform(V& v, float lo, float hi) {
    for (auto& x : v) x = uniform(lo, hi);
  }
};

struct ProblemSpec {
  index_t B = 1, N = 16, H = 2, D = 8, E = 8;  // N: tokens per rank
  int R = 1;                                    // ranks; the whole sequence has T = R*N tokens
  /// Tokens of each rank when they differ (R values; empty: N on every rank). Then the whole
  /// sequence has their sum and rank r holds the tokens after those of ranks 0..r-1.
  std::vector<index_t> rank_N;
  Layout layout = Layout::kTokenMajor;
  index_t pad = 0;             // extra elements after every row (rounded up to 16 bytes)
  float scale = 1.f;
  bool initial_state = true;   // S_init given (else nullptr, zero state)
  bool final_state = true;     // final state requested, and its gradient dS_final given
  std::uint32_t seed = 1;
};

/// Inputs (canonical vectors in the reference layout, and packed buffers in the spec's layout),
/// output buffers, and the views of each rank's segment.
namespace detail {
template <class P, class = void>
struct has_slopes : std::false_type {};
template <class P>
struct has_slopes<P, std::void_t<decltype(std::declval<P&>().slopes)>> : std::true_type {};
}  // namespace detail

template <class Elem_>
struct GlobalProblem {
  using Elem = Elem_;
  ProblemSpec spec;
  index_t T = 0;            // tokens of the whole sequence
  SeqLayout lq, lv;         // q, k, dq, dk (X = D); v, o, dout, dv (X = E)
  GateLayout lg;            // gates, dg

  // Inputs as lasp sees them (already rounded to Elem), reference layout: (B,T,H,X), gates
  // (B,T,H), states (B,H,D,E). Edit them, then call pack().
  std::vector<float> q, k, v, dout;
  std::vector<float> gates;   // log-gates g <= 0 (decay::Gate); default U[-0.5, 0)
  std::vector<float> slopes;  // (H) slopes s_h >= 0 (decay::PerHead); default tnl_slopes(H)
  AlignedVec<float> init, dfinal;  // (B,H,D,E) fp32; read directly by lasp (no packing)

  // Packed inputs (padding filled with NaN) and outputs (poisoned with NaN by poison_outputs()).
  AlignedVec<Elem> q_buf, k_buf, v_buf, dout_buf, o_buf, dq_buf, dk_buf, dv_buf;
  AlignedVec<float> g_buf, dg_buf;
  AlignedVec<float> final_buf, dinit_buf;  // (B,H,D,E)

  explicit GlobalProblem(const ProblemSpec& s) : spec(s) {
    T = 0;
    for (int r = 0; r < s.R; ++r) T += n_of(r);
    const index_t a = kElemsPer16B<Elem>;
    lq = {s.B, T, s.H, s.D, round_up(s.D + s.pad, a), s.layout};
    lv = {s.B, T, s.H, s.E, round_up(s.E + s.pad, a), s.layout};
    lg = {s.B, T, s.H, s.layout};
    Rng rng(s.seed);
    const std::size_t nqk = std::size_t(s.B * T * s.H * s.D), nvo = std::size_t(s.B * T * s.H * s.E);
    const std::size_t nst = std::size_t(s.B * s.H * s.D * s.E);
    q.resize(nqk), k.resize(nqk), v.resize(nvo), dout.resize(nvo);
    rng.fill_normal<Elem>(q), rng.fill_normal<Elem>(k), rng.fill_normal<Elem>(v), rng.fill_normal<Elem>(dout);
    gates.resize(lg.size());
    rng.fill_uniform(gates, -0.5f, 0.f);
    slopes = tnl_slopes(s.H);
    // Drawn whatever the flags, so that flags change nothing else about the problem.
    init.resize(nst), rng.fill_normal<float>(init);
    dfinal.resize(nst), rng.fill_normal<float>(dfinal);
    if (!s.initial_state) init.clear();
    if (!s.final_state) dfinal.clear();
    q_buf.resize(lq.size()), k_buf.resize(lq.size()), dq_buf.resize(lq.size()), dk_buf.resize(lq.size());
    v_buf.resize(lv.size()), dout_buf.resize(lv.size()), o_buf.resize(lv.size()), dv_buf.resize(lv.size());
    g_buf.resize(lg.size()), dg_buf.resize(lg.size());
    final_buf.resize(nst), dinit_buf.resize(nst);
    pack();
    poison_outputs();
  }

  /// Canonical inputs -> packed buffers; canonical values are re-rounded to Elem.
  void pack() {
    pack_one(q, q_buf, lq), pack_one(k, k_buf, lq), pack_one(v, v_buf, lv), pack_one(dout, dout_buf, lv);
    for (index_t b = 0; b < spec.B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < spec.H; ++h) g_buf[lg.offset(b, t, h)] = gates[ref_g(b, t, h)];
  }
  void poison_outputs() {
    poison(o_buf), poison(dq_buf), poison(dk_buf), poison(dv_buf), poison(dg_buf), poison(final_buf),
        poison(dinit_buf);
  }

  // ---- rank views ----
  /// Tokens of rank r, and the global position of its first token.
  index_t n_of(int r) const { return spec.rank_N.empty() ? spec.N : spec.rank_N[std::size_t(r)]; }
  index_t t0(int r) const {
    index_t t = 0;
    for (int j = 0; j < r; ++j) t += n_of(j);
    return t;
  }
  /// The shape of rank r's call; shape() is rank 0's (every rank's unless rank_N is given).
  lasp::Shape shape_of(int r) const { return {spec.B, n_of(r), spec.H, spec.D, spec.E, spec.R}; }
  lasp::Shape shape() const { return shape_of(0); }
  lasp::Tensor<const Elem> view_q(int r) const { return lq.view<const Elem>(q_buf.data(), t0(r)); }
  lasp::Tensor<const Elem> view_k(int r) const { return lq.view<const Elem>(k_buf.data(), t0(r)); }
  lasp::Tensor<const Elem> view_v(int r) const { return lv.view<const Elem>(v_buf.data(), t0(r)); }
  lasp::Tensor<const Elem> view_dout(int r) const { return lv.view<const Elem>(dout_buf.data(), t0(r)); }
  lasp::Tensor<Elem> view_o(int r) { return lv.view(o_buf.data(), t0(r)); }
  lasp::Tensor<Elem> view_dq(int r) { return lq.view(dq_buf.data(), t0(r)); }
  lasp::Tensor<Elem> view_dk(int r) { return lq.view(dk_buf.data(), t0(r)); }
  lasp::Tensor<Elem> view_dv(int r) { return lv.view(dv_buf.data(), t0(r)); }
  lasp::ConstGateTensor view_g(int r) const { return lg.cview(g_buf.data(), t0(r)); }
  lasp::GateTensor view_dg(int r) { return lg.view(dg_buf.data(), t0(r)); }

  /// The decay parameters of rank r (slopes are host memory for every backend; a scheme whose
  /// Params has a `slopes` pointer gets the problem's slopes).
  template <class Decay>
  typename Decay::Params decay_params(int r) const {
    if constexpr (detail::has_slopes<typename Decay::Params>::value) {
      return {slopes.data()};
    } else if constexpr (std::is_same_v<Decay, lasp::decay::Gate>) {
      return {view_g(r)};
    } else {
      (void)r;
      return {};
    }
  }

  // ---- outputs, unpacked to the reference layout ----
  std::vector<double> o() const { return unpack(o_buf, lv); }
  std::vector<double> dq() const { return unpack(dq_buf, lq); }
  std::vector<double> dk() const { return unpack(dk_buf, lq); }
  std::vector<double> dv() const { return unpack(dv_buf, lv); }
  std::vector<double> dg() const {
    std::vector<double> out(lg.size());
    for (index_t b = 0; b < spec.B; ++b)
      for (index_t t = 0; t < T; ++t)
        for (index_t h = 0; h < spec.H; ++h) out[ref_g(b, t, h)] = dg_buf[lg.offset(b, t, h)];
    return out;
  }
  std::vector<double> final_state() const { return {final_buf.begin(), final_buf.end()}; }
  std::vector<double> d_initial_state() const { return {dinit_buf.begin(), dinit_buf.end()}; }

  /// Padding of every packed buffer (inputs and outputs) still holds the NaN pattern.
  bool padding_intact() const {
    return pad_ok(q_buf, lq) && pad_ok(k_buf, lq) && pad_ok(dq_buf, lq) && pad_ok(dk_buf, lq) && pad_ok(v_buf, lv) &&
           pad_ok(dout_buf, lv) && pad_ok(o_buf, lv) && pad_ok(dv_buf, lv);
  }

  /// L = <dout, o> + <dS_final, S_final> from the current outputs (for finite differences).
  double loss() const {
    double l = 0;
    const auto ov = o();
    for (std::size_t i = 0; i < ov.size(); ++i) l += double(dout[i]) * ov[i];
    if (spec.final_state)
      for (std::size_t i = 0; i < dfinal.size(); ++i) l += double(dfinal[i]) * double(final_buf[i]);
    return l;
  }

  std::size_t ref_g(index_t b, index_t t, index_t h) const { return std::size_t((b * T + t) * spec.H + h); }

 private:
  void pack_one(std::vector<float>& canon, AlignedVec<Elem>& buf, const SeqLayout& l) {
    poison(buf);
    for (index_t b = 0; b < l.B; ++b)
      for (index_t t = 0; t < l.T; ++t)
        for (index_t h = 0; h < l.H; ++h)
          for (index_t x = 0; x < l.X; ++x) {
            float& c = canon[std::size_t(((b * l.T + t) * l.H + h) * l.X + x)];
            const Elem e = lasp::from_float<Elem>(c);
            c = lasp::to_float(e);
            buf[l.offset(b, t, h) + std::size_t(x)] = e;
          }
  }
  static std::vector<double> unpack(const AlignedVec<Elem>& buf, const SeqLayout& l) {
    std::vector<double> out(std::size_t(l.B * l.T * l.H * l.X));
    for (index_t b = 0; b < l.B; ++b)
      for (index_t t = 0; t < l.T; ++t)
        for (index_t h = 0; h < l.H; ++h)
          for (index_t x = 0; x < l.X; ++x)
            out[std::size_t(((b * l.T + t) * l.H + h) * l.X + x)] = lasp::to_float(buf[l.offset(b, t, h) + std::size_t(x)]);
    return out;
  }
  static bool pad_ok(const AlignedVec<Elem>& buf, const SeqLayout& l) {
    const auto* p = reinterpret_cast<const unsigned char*>(buf.data());
    for (std::size_t i = 0; i < buf.size(); ++i)
      if (l.is_padding(i))
        for (std::size_t j = 0; j < sizeof(Elem); ++j)
          if (p[i * sizeof(Elem) + j] != kNaNByte) return false;
    return true;
  }
};

/// Everything the double reference gives for a problem.
struct RefResult {
  lasp::reference::Vec o, final_state, dq, dk, dv, dlog, dinit;
};

/// log a_t (B,T,H) of decay policy Decay for the problem's slopes / gates, in double.
template <class Decay, class Elem>
lasp::reference::Vec reference_log_decay(const GlobalProblem<Elem>& p) {
  lasp::reference::Vec ld(std::size_t(p.spec.B * p.T * p.spec.H), 0.0);
  for (index_t b = 0; b < p.spec.B; ++b)
    for (index_t t = 0; t < p.T; ++t)
      for (index_t h = 0; h < p.spec.H; ++h) {
        double& x = ld[p.ref_g(b, t, h)];
        if constexpr (std::is_same_v<Decay, lasp::decay::PerHead>) x = -double(p.slopes[std::size_t(h)]);
        if constexpr (std::is_same_v<Decay, lasp::decay::Gate>) x = double(p.gates[p.ref_g(b, t, h)]);
      }
  return ld;
}

/// The double-precision O(T^2) reference on the whole sequence (the values lasp reads).
template <class Decay, class Elem>
RefResult run_reference(const GlobalProblem<Elem>& p, bool backward = true) {
  namespace ref = lasp::reference;
  const ProblemSpec& s = p.spec;
  ref::Problem rp{s.B, p.T, s.H, s.D, s.E, double(s.scale)};
  auto d = [](const auto& v) { return ref::Vec(v.begin(), v.end()); };
  const ref::Vec q = d(p.q), k = d(p.k), v = d(p.v), ld = reference_log_decay<Decay>(p), init = d(p.init);
  RefResult r;
  ref::forward(rp, q, k, v, ld, init, r.o, r.final_state);
  if (backward) ref::backward(rp, q, k, v, ld, init, d(p.dout), d(p.dfinal), r.dq, r.dk, r.dv, r.dlog, r.dinit);
  return r;
}

}  // namespace lasp_test
