#pragma once
// Error measures for lasp's tests. Plain C++17, no test framework.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace lasp_test {

/// Norm-wise relative error ||a - b|| / ||b|| (b is the reference). NaN anywhere in `a` gives
/// NaN (so any tolerance check fails); a zero reference gives ||a|| (absolute error).
template <class A, class B>
double rel_err(const A& a, const B& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::quiet_NaN();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = double(a[i]), y = double(b[i]);
    num += (x - y) * (x - y);
    den += y * y;
  }
  if (std::isnan(num)) return std::numeric_limits<double>::quiet_NaN();
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

/// Largest |a - b| (NaN if any element of a is NaN).
template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::quiet_NaN();
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return d;
    m = std::max(m, d);
  }
  return m;
}

template <class A>
bool all_finite(const A& a) {
  for (const auto& x : a)
    if (!std::isfinite(double(x))) return false;
  return true;
}

/// ||a||_2 in double.
template <class A>
double norm2(const A& a) {
  double s = 0;
  for (const auto& x : a) s += double(x) * double(x);
  return std::sqrt(s);
}

/// Tokens [t0, t1) of a (B, T, H, X) token-major array (the reference layout): one rank's slice.
template <class V>
std::vector<double> slice_tokens(const V& a, long long B, long long T, long long H, long long X, long long t0,
                                 long long t1) {
  std::vector<double> out;
  out.reserve(std::size_t(B * (t1 - t0) * H * X));
  for (long long b = 0; b < B; ++b)
    for (long long t = t0; t < t1; ++t)
      for (long long i = 0; i < H * X; ++i) out.push_back(double(a[std::size_t((b * T + t) * H * X + i)]));
  return out;
}

}  // namespace lasp_test
