#pragma once
// Error limits of lasp's tests: norm-wise relative error ||x - ref|| / ||ref|| against the
// double reference computed on the inputs rounded to the element type (so input rounding is not
// counted). Plain C++17, no test framework.
#include <type_traits>
#include <lasp/element.hpp>
#include "problem.hpp"

namespace lasp_test {

/// fp32 arithmetic with fp32 states over the suites' problems (T <= ~200 tokens, D, E <= 64):
/// the host backend measures 1e-7..5e-7 on o, dq, dk, dv and the states. The limit leaves 10x.
constexpr double kTolF32 = 5e-6;

/// dg = reverse cumsum over the whole sequence of q.dq - k.dk: two nearly cancelling fp32 dot
/// products per token, then a running sum; measured up to 2e-6 with gates in [-0.5, 0].
constexpr double kTolDg = 2e-5;

/// Outputs of element type T (o, dq, dk, dv) are accumulated in fp32 and then rounded once to T:
/// each element gains at most u|x| (round to nearest), so norm-wise at most u on top of the fp32
/// error. bf16: u = 2^-8 (3.9e-3); fp16: u = 2^-11 (4.9e-4); fp32 outputs: kTolF32.
/// (Measured: bf16 ~1.6e-3, fp16 ~2.1e-4: the RMS of uniform rounding errors is ~u/sqrt(3).)
template <class T>
constexpr double output_tolerance() {
  return std::is_same_v<T, float> ? kTolF32 : unit_roundoff<T>() + kTolF32;
}

/// fp32 outputs (final state, d_initial_state, dg) keep fp32 accuracy whatever the element type,
/// because lasp accumulates and stores them in fp32 from the exactly-read rounded inputs.
constexpr double state_tolerance() { return kTolF32; }

}  // namespace lasp_test
