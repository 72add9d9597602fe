#pragma once
// The host (CPU) backend: the chunked algorithm of math.md section 2 in fp32 with fp32 states,
// written to be read rather than to be fast. It is the oracle the CUDA kernels are checked
// against and the path the demo takes on a machine without a GPU.
// One file of ~420 lines on purpose: an oracle is read top to bottom beside math.md (forward,
// backward with the cancellation-free dg of docs/dg-accuracy.md, the agreement's host verdict);
// split into files, the sweeps and the state they share would be harder to check by eye.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#include "../../comm/concept.hpp"
#include "../../driver/driver.hpp"
#include "../../element.hpp"
#include "../../policy/policy.hpp"
#include "../select.hpp"

LASP_NAMESPACE_BEGIN
namespace backend::host {

namespace detail {
template <class Tile> struct chunk_of { static constexpr int value = 64; };
template <int C, int W, int S> struct chunk_of<tile::Tile<C, W, S>> { static constexpr int value = C; };

/// One (b,h) pair's view of the local segment: rows of q/k/v/... as float, and log-decays.
template <class Decay, class P>
inline std::vector<float> log_decays(const P& params, index_t b, index_t h, index_t N) {
  std::vector<float> l(static_cast<std::size_t>(N));
  for (index_t n = 0; n < N; ++n) l[std::size_t(n)] = Decay::log_decay(params, b, n, h);
  return l;
}
template <class T>
inline void load_row(const Tensor<const T>& t, index_t b, index_t n, index_t h, index_t X, float* out) {
  const T* p = t.at(b, n, h);
  for (index_t x = 0; x < X; ++x) out[x] = to_float(p[x]);
}
template <class T>
inline void store_row(const Tensor<T>& t, index_t b, index_t n, index_t h, index_t X, const float* in) {
  T* p = t.at(b, n, h);
  for (index_t x = 0; x < X; ++x) p[x] = from_float<std::remove_const_t<T>>(in[x]);
}
inline float dotf(const float* a, const float* b, index_t n) {
  float s = 0;
  for (index_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
constexpr std::uint32_t kForwardTag = 0x1a5f0a11u;
inline std::uint32_t shape_tag(const Shape& s, std::uint32_t layout_tag) {
  std::uint64_t h = 1469598103934665603ull;
  for (index_t x : {s.B, s.N, s.H, s.D, s.E, index_t(s.R)}) h = (h ^ std::uint64_t(x)) * 1099511628211ull;
  h = (h ^ std::uint64_t(layout_tag)) * 1099511628211ull;
  return std::uint32_t(h ^ (h >> 32));
}

/// One chunk of the host walk: local rows [n0, n1), never across a document start; start_doc:
/// the document that starts at n0 (else -1), end_doc: the document whose last token is n1 - 1
/// (else -1).
struct HostChunk {
  index_t n0 = 0, n1 = 0, start_doc = -1, end_doc = -1;
};
/// The chunks of one segment (math.md 2; packed: cut at document starts, then every C tokens),
/// the empty documents placed in it, and whether a document starts in it.
struct Walk {
  std::vector<HostChunk> chunks;
  std::vector<index_t> empty_docs;
  bool has_start = false;
};
inline Walk walk(const driver::Segment& sg, const driver::Docs* docs, int C) {
  Walk w;
  auto piece = [&](index_t p0, index_t p1, index_t sd, index_t ed) {
    for (index_t c0 = p0; c0 < p1; c0 += C) {
      const index_t c1 = std::min<index_t>(c0 + C, p1);
      w.chunks.push_back({c0, c1, c0 == p0 ? sd : -1, c1 == p1 ? ed : -1});
    }
  };
  if (!docs) {
    piece(sg.n0, sg.n1, -1, -1);
    return w;
  }
  const index_t g0 = sg.g0, g1 = sg.g0 + (sg.n1 - sg.n0), T = docs->total();
  index_t i = docs->upper(g0) - 1;  // the document holding g0: o_i <= g0 < o_{i+1}
  for (index_t pos = g0; pos < g1 && i < docs->count; ++i) {
    const index_t ds = docs->at(i), de = docs->at(i + 1);
    if (de <= pos) continue;  // empty documents
    const index_t pe = std::min(de, g1);
    const bool starts = ds == pos;
    w.has_start = w.has_start || starts;
    piece(sg.n0 + (pos - g0), sg.n0 + (pe - g0), starts ? i : -1, de <= g1 ? i : -1);
    pos = pe;
  }
  // Empty documents at a position of this segment (at T: the segment that ends the sequence,
  // Segment::ends, which may be an empty one when the group holds no token).
  for (index_t j = docs->lower(g0); j < docs->count && docs->at(j) <= g1; ++j)
    if (docs->at(j) == docs->at(j + 1) && (docs->at(j) < g1 || (docs->at(j) == T && sg.ends))) w.empty_docs.push_back(j);
  return w;
}
/// Document `doc`'s state row of head h in a (docs, H, D, E) array (B = 1).
template <class F>
inline F* doc_state(F* base, index_t doc, index_t h, const Shape& s) {
  return base + (doc * s.H + h) * s.D * s.E;
}
/// S = document `doc`'s initial state of head h, or zero.
inline void load_initial(const Packed& p, index_t doc, index_t h, const Shape& s, float* S) {
  const index_t de = s.D * s.E;
  const index_t slot = !p.initial_states ? -1 : p.state_index ? index_t(p.state_index[doc]) : doc;
  if (slot < 0) {
    std::fill(S, S + de, 0.f);
  } else {
    const float* I = doc_state(p.initial_states, slot, h, s);
    std::copy(I, I + de, S);
  }
}
}  // namespace detail

struct Backend {
  using stream_type = host_stream;
  static constexpr index_t kMaxHeadDim = 1024;
  /// Host memory: the agreement's verdict is read at once (driver.hpp).
  static constexpr bool kSyncVerdict = true;
  /// Runs packed documents and the zigzag layout (driver/packed.hpp).
  static constexpr bool kPackedSequences = true;
  /// Runs calls in which a rank holds no token (N = 0; driver/packed.hpp).
  static constexpr bool kEmptyShards = true;

  // ---- state ops (schedule/common.hpp) ----
  static Status zero(float* p, std::size_t n, host_stream) {
    std::memset(p, 0, n * sizeof(float));
    return Status::kSuccess;
  }
  static Status copy(float* d, const float* s, std::size_t n, host_stream) {
    if (d != s) std::memmove(d, s, n * sizeof(float));
    return Status::kSuccess;
  }
  static Status combine(float* out, const float* A, const float* P, const float* L, index_t bh, index_t de,
                        host_stream, const std::uint32_t* skip = nullptr) {
    if (skip && *skip) return Status::kSuccess;
    for (index_t i = 0; i < bh; ++i) {
      const float a = A ? A[i] : 1.f;
      for (index_t x = 0; x < de; ++x) {
        const std::size_t j = std::size_t(i * de + x);
        out[j] = (P ? a * P[j] : 0.f) + L[j];
      }
    }
    return Status::kSuccess;
  }

  // ---- the agreement (schedule::agree) ----
  /// A rank's status word: its Status code (an exact integer in fp32), the call's layout mode
  /// (driver/packed.hpp layout_mode), then zeros.
  static Status put_status(float* word, Status st, host_stream, int mode = 0) {
    word[0] = float(int(st));
    for (std::size_t i = 1; i < schedule::kStatusFloats; ++i) word[i] = 0.f;
    word[1] = float(mode);
    return Status::kSuccess;
  }
  /// The verdict of R status words: the status of the lowest rank that refused, else kSuccess.
  static Status verdict(const float* all, int R, std::uint32_t* /*slot*/, host_stream) {
    for (int j = 0; j < R; ++j) {
      const float code = all[std::size_t(j) * schedule::kStatusFloats];
      if (code != 0.f) return code > 0.f && code < 256.f ? Status(int(code)) : Status::kCommError;
    }
    return Status::kSuccess;
  }

  // ---- workspace and checks ----
  /// Nothing beyond the driver's regions (the host backend allocates its own scratch: it is an oracle).
  struct Regions {};
  template <class Policy, class T>
  static Regions carve(const Shape&, Carver&, Carver&) { return {}; }
  /// Host memory is all this backend reads; plain C++ cannot tell device pointers apart.
  template <class Args>
  static Status check_memory(const Args&, const Workspace&, int, int) { return Status::kSuccess; }

  /// What this backend cannot run whatever the arguments (make_plan checks it too).
  template <class Policy, class T>
  static Status check_common(const Shape& s) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, fp16>,
                  "The host backend takes float, lasp::bf16 or lasp::fp16 elements.");
    if (s.D > kMaxHeadDim || s.E > kMaxHeadDim) return Status::kUnsupportedHeadDim;
    return Status::kSuccess;
  }
  template <class Policy, class T>
  static Status check_forward(const ForwardArgs<T, typename Policy::Decay>& a) {
    LASP_RETURN_IF_ERROR((check_common<Policy, T>(a.shape)));
    return Policy::Decay::check_values(a.decay, a.shape);
  }
  template <class Policy, class T>
  static Status check_backward(const BackwardArgs<T, typename Policy::Decay>& a) {
    LASP_RETURN_IF_ERROR((check_common<Policy, T>(a.shape)));
    return Policy::Decay::check_values(a.decay, a.shape);
  }

  using Ctx = driver::Ctx<host_stream, Regions>;

  static Status unmark_forwarded(Ctx& c) {
    c.lay.header[driver::kForwardTag] = 0;
    return Status::kSuccess;
  }
  static Status mark_forwarded(const Shape& s, Ctx& c) {
    c.lay.header[driver::kForwardTag] = detail::kForwardTag;
    c.lay.header[driver::kShapeTag] = detail::shape_tag(s, c.tag);
    return Status::kSuccess;
  }
  static Status check_forwarded(const Shape& s, Ctx& c) {
    return c.lay.header[driver::kForwardTag] == detail::kForwardTag &&
                   c.lay.header[driver::kShapeTag] == detail::shape_tag(s, c.tag)
               ? Status::kSuccess
               : Status::kNotForwarded;
  }

  // ---- forward ----
  /// A_r = exp(sum of log-decays), L_r = state after the segment from a zero state, chunk by chunk:
  /// S <- exp(G) S + sum_j exp(G - g_j) k_j v_j^T. Packed documents (math.md 3.5): at a document
  /// start S becomes that document's initial state (or zero) and A_r = 0.
  template <class Policy, class T>
  static Status rank_summary(const ForwardArgs<T, typename Policy::Decay>& a, float* AL, Ctx& c) {
    using Decay = typename Policy::Decay;
    constexpr int C = detail::chunk_of<typename Policy::Tile>::value;
    const Shape& s = a.shape;
    const index_t D = s.D, E = s.E, bh = s.B * s.H;
    const detail::Walk w = detail::walk(driver::segment_of(s, c), driver::docs_of(c), C);
    std::vector<float> kr(static_cast<std::size_t>(D)), vr(static_cast<std::size_t>(E));
    for (index_t b = 0; b < s.B; ++b)
      for (index_t h = 0; h < s.H; ++h) {
        const auto ld = detail::log_decays<Decay>(a.decay, b, h, s.N);
        float* S = AL + bh + (b * s.H + h) * D * E;
        std::fill(S, S + D * E, 0.f);
        float total = 0;
        for (const detail::HostChunk& ch : w.chunks) {
          if (ch.start_doc >= 0) detail::load_initial(a.packed, ch.start_doc, h, s, S);
          const index_t c0 = ch.n0, len = ch.n1 - ch.n0;
          std::vector<float> g(static_cast<std::size_t>(len));
          float acc = 0;
          for (index_t i = 0; i < len; ++i) g[std::size_t(i)] = acc += ld[std::size_t(c0 + i)];
          const float G = acc;
          total += G;
          const float eG = std::exp(G);
          for (index_t x = 0; x < D * E; ++x) S[x] *= eG;
          for (index_t j = 0; j < len; ++j) {
            detail::load_row(a.k, b, c0 + j, h, D, kr.data());
            detail::load_row(a.v, b, c0 + j, h, E, vr.data());
            const float wj = std::exp(G - g[std::size_t(j)]);
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) S[d * E + e] += wj * kr[std::size_t(d)] * vr[std::size_t(e)];
          }
        }
        AL[b * s.H + h] = w.has_start ? 0.f : std::exp(total);
      }
    return Status::kSuccess;
  }

  /// O_chunk = scale (((Q K^T) .* M) V + diag(exp(g)) Q S_prev), S carried from P (reset at
  /// document starts; each document's final state written after its last token).
  template <class Policy, class T>
  static Status forward_outputs(const ForwardArgs<T, typename Policy::Decay>& a, const float* P, Ctx& c) {
    using Decay = typename Policy::Decay;
    constexpr int C = detail::chunk_of<typename Policy::Tile>::value;
    const Shape& s = a.shape;
    const index_t D = s.D, E = s.E;
    const detail::Walk w = detail::walk(driver::segment_of(s, c), driver::docs_of(c), C);
    std::vector<float> Q(static_cast<std::size_t>(C * D)), K(static_cast<std::size_t>(C * D)), V(static_cast<std::size_t>(C * E)), o(static_cast<std::size_t>(E));
    std::vector<float> S(static_cast<std::size_t>(D * E));
    for (index_t b = 0; b < s.B; ++b)
      for (index_t h = 0; h < s.H; ++h) {
        const auto ld = detail::log_decays<Decay>(a.decay, b, h, s.N);
        std::copy(P + (b * s.H + h) * D * E, P + (b * s.H + h + 1) * D * E, S.begin());
        for (const detail::HostChunk& ch : w.chunks) {
          if (ch.start_doc >= 0) detail::load_initial(a.packed, ch.start_doc, h, s, S.data());
          const index_t c0 = ch.n0, len = ch.n1 - ch.n0;
          std::vector<float> g(static_cast<std::size_t>(len));
          float acc = 0;
          for (index_t i = 0; i < len; ++i) g[std::size_t(i)] = acc += ld[std::size_t(c0 + i)];
          for (index_t i = 0; i < len; ++i) {
            detail::load_row(a.q, b, c0 + i, h, D, &Q[std::size_t(i * D)]);
            detail::load_row(a.k, b, c0 + i, h, D, &K[std::size_t(i * D)]);
            detail::load_row(a.v, b, c0 + i, h, E, &V[std::size_t(i * E)]);
          }
          for (index_t i = 0; i < len; ++i) {
            std::fill(o.begin(), o.end(), 0.f);
            const float* qi = &Q[std::size_t(i * D)];
            for (index_t j = 0; j <= i; ++j) {
              const float wt = std::exp(g[std::size_t(i)] - g[std::size_t(j)]) * detail::dotf(qi, &K[std::size_t(j * D)], D);
              for (index_t e = 0; e < E; ++e) o[std::size_t(e)] += wt * V[std::size_t(j * E + e)];
            }
            const float wi = std::exp(g[std::size_t(i)]);
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) o[std::size_t(e)] += wi * qi[d] * S[std::size_t(d * E + e)];
            for (float& x : o) x *= a.scale;
            detail::store_row(a.o, b, c0 + i, h, E, o.data());
          }
          const float G = g[std::size_t(len - 1)], eG = std::exp(G);
          for (float& x : S) x *= eG;
          for (index_t j = 0; j < len; ++j) {
            const float wj = std::exp(G - g[std::size_t(j)]);
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) S[std::size_t(d * E + e)] += wj * K[std::size_t(j * D + d)] * V[std::size_t(j * E + e)];
          }
          if (ch.end_doc >= 0 && a.packed.final_states)
            std::copy(S.begin(), S.end(), detail::doc_state(a.packed.final_states, ch.end_doc, h, s));
        }
        if (a.packed.final_states)  // empty documents: the final state is the initial one
          for (index_t j : w.empty_docs) detail::load_initial(a.packed, j, h, s, detail::doc_state(a.packed.final_states, j, h, s));
      }
    return Status::kSuccess;
  }

  // ---- backward ----
  /// M_r = scale sum_t exp(c_t - c_start) q_t do_t^T  (c_t - c_start: log-decay from the segment
  /// start through t, always <= 0). Packed: only the tokens before the segment's first document
  /// start reach the state entering it, and with them the final-state gradient of the document
  /// they belong to when it ends in the segment.
  template <class Policy, class T>
  static Status backward_summary(const BackwardArgs<T, typename Policy::Decay>& a, const float*, float* M, Ctx& cx) {
    using Decay = typename Policy::Decay;
    constexpr int C = detail::chunk_of<typename Policy::Tile>::value;
    const Shape& s = a.shape;
    const index_t D = s.D, E = s.E;
    const detail::Walk w = detail::walk(driver::segment_of(s, cx), driver::docs_of(cx), C);
    std::vector<float> qr(static_cast<std::size_t>(D)), dr(static_cast<std::size_t>(E));
    for (index_t b = 0; b < s.B; ++b)
      for (index_t h = 0; h < s.H; ++h) {
        const auto ld = detail::log_decays<Decay>(a.decay, b, h, s.N);
        float* Mb = M + (b * s.H + h) * D * E;
        std::fill(Mb, Mb + D * E, 0.f);
        float c = 0;
        for (const detail::HostChunk& ch : w.chunks) {
          if (ch.start_doc >= 0) break;
          for (index_t t = ch.n0; t < ch.n1; ++t) {
            c += ld[std::size_t(t)];
            detail::load_row(a.q, b, t, h, D, qr.data());
            detail::load_row(a.dout, b, t, h, E, dr.data());
            const float wt = a.scale * std::exp(c);
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) Mb[d * E + e] += wt * qr[std::size_t(d)] * dr[std::size_t(e)];
          }
          if (ch.end_doc >= 0) {
            if (a.packed.d_final_states) {
              const float* dF = detail::doc_state(a.packed.d_final_states, ch.end_doc, h, s);
              const float wt = std::exp(c);
              for (index_t x = 0; x < D * E; ++x) Mb[x] += wt * dF[x];
            }
            break;
          }
        }
      }
    return Status::kSuccess;
  }

  /// Nothing to overlap on the host: backward_outputs does all the rank-local work.
  template <class Policy, class T>
  static Status backward_local(const BackwardArgs<T, typename Policy::Decay>&, const float*, Ctx&) {
    return Status::kSuccess;
  }

  /// dq by a forward sweep over chunks (state S from P), dk and dv by a reverse sweep (state
  /// gradient dS from G). Gates: dg_m is the sum of the pair terms W_sj over s >= m > j
  /// (docs/dg-accuracy.md), split by where j and s sit relative to m's chunk c, each part a sum of
  /// pair terms (no cancellation):
  ///   T1(m) = sum_{s >= m} sum_{j < m} W_sj, j and s in c      (staircase sum of the in-chunk W)
  ///   T2(m) = sum_{s >= m in c} scale exp(g_s) q_s^T S_prev do_s   (keys before c, via S_prev)
  ///   T3(m) = sum_{j < m in c} exp(G - g_j) k_j^T dS_end v_j       (queries after c, via dS_end)
  ///   T4    = exp(G) <S_prev, dS_end>                              (keys before c, queries after c)
  /// S_prev and dS_end are the full state entering c and state gradient leaving it (P_r and G_r,
  /// hence S_init, dS_final and the other ranks, included), so dg is complete here: the rank total
  /// passed to the schedule's suffix_sum is 0. Packed documents: chunks never cross a document
  /// start; S_prev is the document's initial state (or zero) at its start and dS_end its final
  /// state's gradient (or zero) at its end, so nothing crosses a document boundary, dg included;
  /// the state gradient reaching a document's start is its d_initial_states.
  template <class Policy, class T>
  static Status backward_outputs(const BackwardArgs<T, typename Policy::Decay>& a, const float* P, const float* Gr,
                                 const float* s_final, float* dc_total, Ctx& cx) {
    using Decay = typename Policy::Decay;
    constexpr int C = detail::chunk_of<typename Policy::Tile>::value;
    const Shape& s = a.shape;
    const index_t D = s.D, E = s.E, N = s.N;
    const driver::Segment sg = driver::segment_of(s, cx);
    const detail::Walk w = detail::walk(sg, driver::docs_of(cx), C);
    std::vector<float> Q(static_cast<std::size_t>(N * D)), K(static_cast<std::size_t>(N * D)), V(static_cast<std::size_t>(N * E)), dO(static_cast<std::size_t>(N * E));
    std::vector<float> dQ(static_cast<std::size_t>(N * D)), dK(static_cast<std::size_t>(N * D)), dV(static_cast<std::size_t>(N * E));
    std::vector<float> S(static_cast<std::size_t>(D * E)), dS(static_cast<std::size_t>(D * E)), g(static_cast<std::size_t>(N));
    // Gates: the state entering each chunk, the in-chunk pair terms W, per-token inter-chunk dots.
    const index_t nchunks = Decay::kHasGradient ? index_t(w.chunks.size()) : 0;
    std::vector<float> Sc(static_cast<std::size_t>(nchunks * D * E)), Wc(Decay::kHasGradient ? std::size_t(C * C) : 0);
    std::vector<float> qdq_inter(Decay::kHasGradient ? std::size_t(N) : 0), kdk_inter(qdq_inter.size()),
        T1(Decay::kHasGradient ? std::size_t(C) : 0);
    (void)s_final;  // the final-state pairs reach dg through G_r (dS_end of the last chunk)
    const Packed& pk = a.packed;
    for (index_t b = 0; b < s.B; ++b)
      for (index_t h = 0; h < s.H; ++h) {
        const auto ld = detail::log_decays<Decay>(a.decay, b, h, N);
        for (index_t t = sg.n0; t < sg.n1; ++t) {
          detail::load_row(a.q, b, t, h, D, &Q[std::size_t(t * D)]);
          detail::load_row(a.k, b, t, h, D, &K[std::size_t(t * D)]);
          detail::load_row(a.v, b, t, h, E, &V[std::size_t(t * E)]);
          detail::load_row(a.dout, b, t, h, E, &dO[std::size_t(t * E)]);
        }
        // g: log-decay local to each chunk (g_i = c_{s+i} - c_{s-1}).
        for (const detail::HostChunk& ch : w.chunks) {
          float acc = 0;
          for (index_t i = ch.n0; i < ch.n1; ++i) g[std::size_t(i)] = acc += ld[std::size_t(i)];
        }
        std::fill(dQ.begin(), dQ.end(), 0.f);
        std::fill(dK.begin(), dK.end(), 0.f);
        std::fill(dV.begin(), dV.end(), 0.f);
        // Forward sweep: dq_i = scale (sum_{j<=i} exp(g_i - g_j)(do_i.v_j) k_j + exp(g_i) S do_i).
        const index_t off = (b * s.H + h) * D * E;
        std::copy(P + off, P + off + D * E, S.begin());
        for (std::size_t ci = 0; ci < w.chunks.size(); ++ci) {
          const detail::HostChunk& ch = w.chunks[ci];
          const index_t c0 = ch.n0, c1 = ch.n1;
          if (ch.start_doc >= 0) detail::load_initial(pk, ch.start_doc, h, s, S.data());
          if constexpr (Decay::kHasGradient) std::copy(S.begin(), S.end(), Sc.begin() + index_t(ci) * D * E);  // S_prev for T4
          for (index_t i = c0; i < c1; ++i) {
            float* dq = &dQ[std::size_t(i * D)];
            for (index_t j = c0; j <= i; ++j) {
              const float wt = a.scale * std::exp(g[std::size_t(i)] - g[std::size_t(j)]) *
                               detail::dotf(&dO[std::size_t(i * E)], &V[std::size_t(j * E)], E);
              for (index_t d = 0; d < D; ++d) dq[d] += wt * K[std::size_t(j * D + d)];
            }
            const float wi = a.scale * std::exp(g[std::size_t(i)]);
            float qdq = 0;  // gates, T2: q_i . (the inter-chunk part of dq_i)
            for (index_t d = 0; d < D; ++d) {
              const float x = wi * detail::dotf(&S[std::size_t(d * E)], &dO[std::size_t(i * E)], E);
              dq[d] += x;
              if constexpr (Decay::kHasGradient) qdq += Q[std::size_t(i * D + d)] * x;
            }
            if constexpr (Decay::kHasGradient) qdq_inter[std::size_t(i)] = qdq;
          }
          const float G = g[std::size_t(c1 - 1)], eG = std::exp(G);
          for (float& x : S) x *= eG;
          for (index_t j = c0; j < c1; ++j) {
            const float wj = std::exp(G - g[std::size_t(j)]);
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) S[std::size_t(d * E + e)] += wj * K[std::size_t(j * D + d)] * V[std::size_t(j * E + e)];
          }
        }
        // Reverse sweep: dS enters the last chunk as G_r.
        std::copy(Gr + off, Gr + off + D * E, dS.begin());
        for (std::size_t ci = w.chunks.size(); ci-- > 0;) {
          const detail::HostChunk& ch = w.chunks[ci];
          const index_t c0 = ch.n0, c1 = ch.n1;
          if (ch.end_doc >= 0) {  // a document's last token: dS is its final state's gradient
            if (pk.d_final_states) {
              const float* dF = detail::doc_state(pk.d_final_states, ch.end_doc, h, s);
              std::copy(dF, dF + D * E, dS.begin());
            } else {
              std::fill(dS.begin(), dS.end(), 0.f);
            }
          }
          const float Gc = g[std::size_t(c1 - 1)];
          const index_t len = c1 - c0;
          for (index_t j = c0; j < c1; ++j) {
            float* dk = &dK[std::size_t(j * D)];
            float* dv = &dV[std::size_t(j * E)];
            for (index_t i = j; i < c1; ++i) {
              const float wt = a.scale * std::exp(g[std::size_t(i)] - g[std::size_t(j)]);
              const float dov = detail::dotf(&dO[std::size_t(i * E)], &V[std::size_t(j * E)], E);
              const float qk = detail::dotf(&Q[std::size_t(i * D)], &K[std::size_t(j * D)], D);
              for (index_t d = 0; d < D; ++d) dk[d] += wt * dov * Q[std::size_t(i * D + d)];
              for (index_t e = 0; e < E; ++e) dv[e] += wt * qk * dO[std::size_t(i * E + e)];
              if constexpr (Decay::kHasGradient) Wc[std::size_t((i - c0) * C + (j - c0))] = wt * qk * dov;  // W_ij
            }
            const float wj = std::exp(Gc - g[std::size_t(j)]);
            float kdk = 0;  // gates, T3: k_j . (the inter-chunk part of dk_j)
            for (index_t d = 0; d < D; ++d) {
              const float x = wj * detail::dotf(&dS[std::size_t(d * E)], &V[std::size_t(j * E)], E);
              dk[d] += x;
              if constexpr (Decay::kHasGradient) kdk += K[std::size_t(j * D + d)] * x;
            }
            if constexpr (Decay::kHasGradient) kdk_inter[std::size_t(j)] = kdk;
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) dv[e] += wj * dS[std::size_t(d * E + e)] * K[std::size_t(j * D + d)];
          }
          if constexpr (Decay::kHasGradient) {
            // dS = dS_end of this chunk here: T4, T1 (staircase), then dg.
            const float t4 = std::exp(Gc) * detail::dotf(&Sc[std::size_t(index_t(ci) * D * E)], dS.data(), D * E);
            // T1(m) = sum_{s >= m} X_s(m), X_s(m) = sum_{j < m} W_sj: row prefixes, then column sums
            // from the diagonal down (both over pair terms only).
            for (index_t m = 0; m < len; ++m) T1[std::size_t(m)] = 0.f;
            for (index_t si = 1; si < len; ++si) {
              float x = 0;
              for (index_t m = 1; m <= si; ++m) {
                x += Wc[std::size_t(si * C + m - 1)];
                T1[std::size_t(m)] += x;
              }
            }
            float t2 = 0, t3 = 0;  // T2 by a suffix over s >= m, T3 by a prefix over j < m
            for (index_t m = len - 1; m >= 0; --m) {
              t2 += qdq_inter[std::size_t(c0 + m)];
              T1[std::size_t(m)] += t2;
            }
            for (index_t m = 0; m < len; ++m) {
              a.dg(b, c0 + m, h) = T1[std::size_t(m)] + t3 + t4;
              t3 += kdk_inter[std::size_t(c0 + m)];
            }
          }
          const float eG = std::exp(Gc);
          for (float& x : dS) x *= eG;
          for (index_t i = c0; i < c1; ++i) {
            const float wt = a.scale * std::exp(g[std::size_t(i)]);
            for (index_t d = 0; d < D; ++d)
              for (index_t e = 0; e < E; ++e) dS[std::size_t(d * E + e)] += wt * Q[std::size_t(i * D + d)] * dO[std::size_t(i * E + e)];
          }
          if (ch.start_doc >= 0 && pk.d_initial_states)  // dS: the gradient of the document's initial state
            std::copy(dS.begin(), dS.end(), detail::doc_state(pk.d_initial_states, ch.start_doc, h, s));
        }
        for (index_t t = sg.n0; t < sg.n1; ++t) {
          detail::store_row(a.dq, b, t, h, D, &dQ[std::size_t(t * D)]);
          detail::store_row(a.dk, b, t, h, D, &dK[std::size_t(t * D)]);
          detail::store_row(a.dv, b, t, h, E, &dV[std::size_t(t * E)]);
        }
        if (pk.d_initial_states)  // empty documents: d initial state = d final state
          for (index_t j : w.empty_docs) {
            float* out = detail::doc_state(pk.d_initial_states, j, h, s);
            if (pk.d_final_states) {
              const float* dF = detail::doc_state(pk.d_final_states, j, h, s);
              std::copy(dF, dF + D * E, out);
            } else {
              std::fill(out, out + D * E, 0.f);
            }
          }
        if constexpr (Decay::kHasGradient) dc_total[b * s.H + h] = 0.f;  // nothing left for earlier ranks
      }
    return Status::kSuccess;
  }
  template <class Policy, class T>
  static Status add_dg_suffix(const BackwardArgs<T, typename Policy::Decay>& a, const float* suffix, Ctx&) {
    const Shape& s = a.shape;
    for (index_t b = 0; b < s.B; ++b)
      for (index_t n = 0; n < s.N; ++n)
        for (index_t h = 0; h < s.H; ++h) a.dg(b, n, h) += suffix[b * s.H + h];
    return Status::kSuccess;
  }
};

}  // namespace backend::host

template <>
struct backend::select<false> {
  using type = backend::host::Backend;
};

LASP_NAMESPACE_END
