#pragma once
// The oracle: causal linear attention with decay in its quadratic form (math.md section 1),
// in double precision, on one whole sequence. It shares no code with the chunked algorithm.
// Layouts are fixed and contiguous: q, k (B,T,H,D); v, o (B,T,H,E); log_decay (B,T,H) holding
// log a_t; states (B,H,D,E). T = 0 is allowed in forward, backward and dlog_pairs (no tokens:
// the final state is the initial one, d_init is d_final).
#include <algorithm>
#include <cmath>
#include <vector>
#include "../config.hpp"

LASP_NAMESPACE_BEGIN
namespace reference {

struct Problem {
  index_t B = 1, T = 1, H = 1, D = 1, E = 1;
  double scale = 1.0;
};

using Vec = std::vector<double>;

namespace detail {
struct Idx {
  const Problem& p;
  index_t qk(index_t b, index_t t, index_t h) const { return ((b * p.T + t) * p.H + h) * p.D; }
  index_t vo(index_t b, index_t t, index_t h) const { return ((b * p.T + t) * p.H + h) * p.E; }
  index_t g(index_t b, index_t t, index_t h) const { return (b * p.T + t) * p.H + h; }
  index_t st(index_t b, index_t h) const { return (b * p.H + h) * p.D * p.E; }
};
/// c_t = sum_{m<=t} log a_m for one (b,h).
inline Vec cumulative(const Problem& p, const Vec& log_decay, index_t b, index_t h) {
  Idx ix{p};
  Vec c(std::size_t(p.T));
  double acc = 0;
  for (index_t t = 0; t < p.T; ++t) c[std::size_t(t)] = acc += log_decay[std::size_t(ix.g(b, t, h))];
  return c;
}
inline double dot(const double* a, const double* b, index_t n) {
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
}  // namespace detail

/// o_t = scale (sum_{j<=t} exp(c_t - c_j)(q_t.k_j) v_j + exp(c_t) S_init^T q_t);
/// final = exp(c_{T-1}) S_init + sum_j exp(c_{T-1} - c_j) k_j v_j^T. `init` may be empty.
inline void forward(const Problem& p, const Vec& q, const Vec& k, const Vec& v, const Vec& log_decay, const Vec& init,
                    Vec& o, Vec& final_state) {
  detail::Idx ix{p};
  o.assign(std::size_t(p.B * p.T * p.H * p.E), 0.0);
  final_state.assign(std::size_t(p.B * p.H * p.D * p.E), 0.0);
  for (index_t b = 0; b < p.B; ++b)
    for (index_t h = 0; h < p.H; ++h) {
      const Vec c = detail::cumulative(p, log_decay, b, h);
      const double* S0 = init.empty() ? nullptr : &init[std::size_t(ix.st(b, h))];
      for (index_t t = 0; t < p.T; ++t) {
        double* ot = &o[std::size_t(ix.vo(b, t, h))];
        const double* qt = &q[std::size_t(ix.qk(b, t, h))];
        for (index_t j = 0; j <= t; ++j) {
          const double w = std::exp(c[t] - c[j]) * detail::dot(qt, &k[std::size_t(ix.qk(b, j, h))], p.D);
          const double* vj = &v[std::size_t(ix.vo(b, j, h))];
          for (index_t e = 0; e < p.E; ++e) ot[e] += w * vj[e];
        }
        if (S0) {
          const double w = std::exp(c[t]);
          for (index_t d = 0; d < p.D; ++d)
            for (index_t e = 0; e < p.E; ++e) ot[e] += w * S0[d * p.E + e] * qt[d];
        }
        for (index_t e = 0; e < p.E; ++e) ot[e] *= p.scale;
      }
      double* F = &final_state[std::size_t(ix.st(b, h))];
      const double cT = p.T > 0 ? c[std::size_t(p.T - 1)] : 0.0;  // T = 0: final = init
      for (index_t j = 0; j < p.T; ++j) {
        const double w = std::exp(cT - c[j]);
        const double* kj = &k[std::size_t(ix.qk(b, j, h))];
        const double* vj = &v[std::size_t(ix.vo(b, j, h))];
        for (index_t d = 0; d < p.D; ++d)
          for (index_t e = 0; e < p.E; ++e) F[d * p.E + e] += w * kj[d] * vj[e];
      }
      if (S0)
        for (index_t x = 0; x < p.D * p.E; ++x) F[x] += std::exp(cT) * S0[x];
    }
}

/// Gradients of L = <dout, o> + <d_final, final> with respect to q, k, v, log_decay (dlog, i.e.
/// dg for gates) and init. `d_final` and `init` may be empty.
inline void backward(const Problem& p, const Vec& q, const Vec& k, const Vec& v, const Vec& log_decay, const Vec& init,
                     const Vec& dout, const Vec& d_final, Vec& dq, Vec& dk, Vec& dv, Vec& dlog, Vec& d_init) {
  detail::Idx ix{p};
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  dlog.assign(std::size_t(p.B * p.T * p.H), 0.0);
  d_init.assign(std::size_t(p.B * p.H * p.D * p.E), 0.0);
  Vec o, fin;
  forward(p, q, k, v, log_decay, init, o, fin);
  for (index_t b = 0; b < p.B; ++b)
    for (index_t h = 0; h < p.H; ++h) {
      const Vec c = detail::cumulative(p, log_decay, b, h);
      const double cT = p.T > 0 ? c[std::size_t(p.T - 1)] : 0.0;  // T = 0: final = init
      const double* S0 = init.empty() ? nullptr : &init[std::size_t(ix.st(b, h))];
      const double* dF = d_final.empty() ? nullptr : &d_final[std::size_t(ix.st(b, h))];
      double* dS0 = &d_init[std::size_t(ix.st(b, h))];
      for (index_t t = 0; t < p.T; ++t) {
        const double* qt = &q[std::size_t(ix.qk(b, t, h))];
        const double* dot_ = &dout[std::size_t(ix.vo(b, t, h))];
        double* dqt = &dq[std::size_t(ix.qk(b, t, h))];
        for (index_t j = 0; j <= t; ++j) {
          const double w = p.scale * std::exp(c[t] - c[j]);
          const double* kj = &k[std::size_t(ix.qk(b, j, h))];
          const double* vj = &v[std::size_t(ix.vo(b, j, h))];
          const double dov = detail::dot(dot_, vj, p.E), qk = detail::dot(qt, kj, p.D);
          double* dkj = &dk[std::size_t(ix.qk(b, j, h))];
          double* dvj = &dv[std::size_t(ix.vo(b, j, h))];
          for (index_t d = 0; d < p.D; ++d) {
            dqt[d] += w * dov * kj[d];
            dkj[d] += w * dov * qt[d];
          }
          for (index_t e = 0; e < p.E; ++e) dvj[e] += w * qk * dot_[e];
        }
        const double w0 = p.scale * std::exp(c[t]);
        for (index_t d = 0; d < p.D; ++d)
          for (index_t e = 0; e < p.E; ++e) {
            if (S0) dqt[d] += w0 * S0[d * p.E + e] * dot_[e];
            dS0[d * p.E + e] += w0 * qt[d] * dot_[e];
          }
      }
      if (dF) {
        for (index_t j = 0; j < p.T; ++j) {
          const double w = std::exp(cT - c[j]);
          const double* kj = &k[std::size_t(ix.qk(b, j, h))];
          const double* vj = &v[std::size_t(ix.vo(b, j, h))];
          double* dkj = &dk[std::size_t(ix.qk(b, j, h))];
          double* dvj = &dv[std::size_t(ix.vo(b, j, h))];
          for (index_t d = 0; d < p.D; ++d)
            for (index_t e = 0; e < p.E; ++e) {
              dkj[d] += w * dF[d * p.E + e] * vj[e];
              dvj[e] += w * dF[d * p.E + e] * kj[d];
            }
        }
        for (index_t x = 0; x < p.D * p.E; ++x) dS0[x] += std::exp(cT) * dF[x];
      }
      // dL/dc_t = q_t.dq_t - k_t.dk_t (+ <dF, final> at the last token); dlog = reverse cumsum.
      Vec dc(std::size_t(p.T));
      for (index_t t = 0; t < p.T; ++t)
        dc[std::size_t(t)] = detail::dot(&q[std::size_t(ix.qk(b, t, h))], &dq[std::size_t(ix.qk(b, t, h))], p.D) -
                             detail::dot(&k[std::size_t(ix.qk(b, t, h))], &dk[std::size_t(ix.qk(b, t, h))], p.D);
      if (dF && p.T > 0) dc[std::size_t(p.T - 1)] += detail::dot(dF, &fin[std::size_t(ix.st(b, h))], p.D * p.E);
      double acc = 0;
      for (index_t t = p.T - 1; t >= 0; --t) dlog[std::size_t(ix.g(b, t, h))] = acc += dc[std::size_t(t)];
    }
}

/// dlog (dg for gates) in its pair form, without cancellation: with the pair terms
///   W_sj = scale exp(c_s - c_j) (q_s . k_j)(do_s . v_j)            0 <= j < s < T
///   W_s,-1 = scale exp(c_s) q_s^T S_init do_s                        (S_init: a key before token 0)
///   W_T,j = exp(c_{T-1} - c_j) k_j^T dS_final v_j                     (dS_final: a query after T-1)
///   W_T,-1 = exp(c_{T-1}) <S_init, dS_final>
/// dlog_m = sum of W_sj over s >= m > j: the pairs whose decay exp(c_s - c_j) contains a_m. Every
/// term enters once with its own sign (the reverse sum of q.dq - k.dk in backward() reaches the
/// same value by adding and removing the pairs with s >= j >= m). O(T^2 (D + E)) per (b,h).
/// `init` and `d_final` may be empty.
inline void dlog_pairs(const Problem& p, const Vec& q, const Vec& k, const Vec& v, const Vec& log_decay,
                       const Vec& init, const Vec& dout, const Vec& d_final, Vec& dlog) {
  detail::Idx ix{p};
  dlog.assign(std::size_t(p.B * p.T * p.H), 0.0);
  Vec X(std::size_t(p.T + 1));  // X[j + 1] = sum over the queries s >= m seen so far of W_sj
  for (index_t b = 0; b < p.B; ++b)
    for (index_t h = 0; h < p.H; ++h) {
      const Vec c = detail::cumulative(p, log_decay, b, h);
      const double cT = p.T > 0 ? c[std::size_t(p.T - 1)] : 0.0;  // T = 0: final = init
      const double* S0 = init.empty() ? nullptr : &init[std::size_t(ix.st(b, h))];
      const double* dF = d_final.empty() ? nullptr : &d_final[std::size_t(ix.st(b, h))];
      std::fill(X.begin(), X.end(), 0.0);
      // x^T M y for a (D x E) state M.
      auto bilinear = [&](const double* x, const double* M, const double* y) {
        double s = 0;
        for (index_t d = 0; d < p.D; ++d) s += x[d] * detail::dot(M + d * p.E, y, p.E);
        return s;
      };
      if (dF) {  // the final-state query s = T
        if (S0) X[0] += std::exp(cT) * detail::dot(S0, dF, p.D * p.E);
        for (index_t j = 0; j < p.T; ++j)
          X[std::size_t(j + 1)] += std::exp(cT - c[std::size_t(j)]) *
                                   bilinear(&k[std::size_t(ix.qk(b, j, h))], dF, &v[std::size_t(ix.vo(b, j, h))]);
      }
      for (index_t m = p.T - 1; m >= 0; --m) {
        const double* qm = &q[std::size_t(ix.qk(b, m, h))];
        const double* dom = &dout[std::size_t(ix.vo(b, m, h))];
        if (S0) X[0] += p.scale * std::exp(c[std::size_t(m)]) * bilinear(qm, S0, dom);
        for (index_t j = 0; j < m; ++j)
          X[std::size_t(j + 1)] += p.scale * std::exp(c[std::size_t(m)] - c[std::size_t(j)]) *
                                   detail::dot(qm, &k[std::size_t(ix.qk(b, j, h))], p.D) *
                                   detail::dot(dom, &v[std::size_t(ix.vo(b, j, h))], p.E);
        double acc = 0;
        for (index_t j = -1; j < m; ++j) acc += X[std::size_t(j + 1)];
        dlog[std::size_t(ix.g(b, m, h))] = acc;
      }
    }
}

/// dlog by the state recurrence, O(T D E) per (b,h): with S_t = a_t S_{t-1} + k_t v_t^T (S_{-1} =
/// S_init) and dS_t = dLoss/dS_t = scale q_t do_t^T + a_{t+1} dS_{t+1} (dS_final after the last
/// token), dlog_t = a_t <S_{t-1}, dS_t>_F: the same pairs as dlog_pairs, grouped through two states,
/// without cancellation. States are checkpointed every 64 tokens and recomputed block by block.
inline void dlog_states(const Problem& p, const Vec& q, const Vec& k, const Vec& v, const Vec& log_decay,
                        const Vec& init, const Vec& dout, const Vec& d_final, Vec& dlog) {
  constexpr index_t K = 64;
  detail::Idx ix{p};
  const index_t de = p.D * p.E, nblk = (p.T + K - 1) / K;
  dlog.assign(std::size_t(p.B * p.T * p.H), 0.0);
  Vec ck(std::size_t(nblk * de)), Sb(std::size_t((K + 1) * de)), dS(static_cast<std::size_t>(de));
  for (index_t b = 0; b < p.B; ++b)
    for (index_t h = 0; h < p.H; ++h) {
      auto a = [&](index_t t) { return std::exp(log_decay[std::size_t(ix.g(b, t, h))]); };
      // S <- a S + k v^T
      auto step = [&](const double* S, double* out, index_t t) {
        const double at = a(t);
        const double* kt = &k[std::size_t(ix.qk(b, t, h))];
        const double* vt = &v[std::size_t(ix.vo(b, t, h))];
        for (index_t d = 0; d < p.D; ++d)
          for (index_t e = 0; e < p.E; ++e) out[d * p.E + e] = at * S[d * p.E + e] + kt[d] * vt[e];
      };
      double* S = Sb.data();  // forward sweep: checkpoints S_{t0 - 1} at t0 = 0, K, 2K, ...
      if (init.empty()) std::fill(S, S + de, 0.0);
      else std::copy(&init[std::size_t(ix.st(b, h))], &init[std::size_t(ix.st(b, h))] + de, S);
      for (index_t t = 0; t < p.T; ++t) {
        if (t % K == 0) std::copy(S, S + de, &ck[std::size_t(t / K * de)]);
        step(S, S, t);
      }
      if (d_final.empty()) std::fill(dS.begin(), dS.end(), 0.0);
      else std::copy(&d_final[std::size_t(ix.st(b, h))], &d_final[std::size_t(ix.st(b, h))] + de, dS.begin());
      for (index_t blk = nblk - 1; blk >= 0; --blk) {
        const index_t t0 = blk * K, t1 = std::min(p.T, t0 + K);
        std::copy(&ck[std::size_t(blk * de)], &ck[std::size_t(blk * de)] + de, Sb.begin());  // Sb[i] = S_{t0 + i - 1}
        for (index_t t = t0; t < t1 - 1; ++t) step(&Sb[std::size_t((t - t0) * de)], &Sb[std::size_t((t - t0 + 1) * de)], t);
        for (index_t t = t1 - 1; t >= t0; --t) {
          const double* qt = &q[std::size_t(ix.qk(b, t, h))];
          const double* dot_ = &dout[std::size_t(ix.vo(b, t, h))];
          for (index_t d = 0; d < p.D; ++d)
            for (index_t e = 0; e < p.E; ++e) dS[std::size_t(d * p.E + e)] += p.scale * qt[d] * dot_[e];
          const double at = a(t);
          dlog[std::size_t(ix.g(b, t, h))] = at * detail::dot(&Sb[std::size_t((t - t0) * de)], dS.data(), de);
          for (double& x : dS) x *= at;
        }
      }
    }
}

}  // namespace reference
LASP_NAMESPACE_END
