#pragma once
// Argument structs of forward and backward for one SP rank's local segment.
#include <cstddef>
#include "config.hpp"
#include "tensor.hpp"
#include "workspace.hpp"

LASP_NAMESPACE_BEGIN

/// Forward: O = scale * causal linear attention of (Q, K, V) with decay, continuing the state
/// that enters this rank from the ranks before it.
///   q, k (B,N,H,D); v, o (B,N,H,E): element type T; any strides for b, n, h; last dim contiguous.
///   initial_state (B,H,D,E) fp32, read on SP rank 0 only (nullptr = zero state).
///   final_state   (B,H,D,E) fp32, written on the last SP rank only (nullptr = not wanted).
template <class T, class Decay>
struct ForwardArgs {
  Shape shape;
  Tensor<const T> q, k, v;
  Tensor<T> o;
  float scale = 1.f;
  typename Decay::Params decay{};
  const float* initial_state = nullptr;
  float* final_state = nullptr;
};

/// Backward of the forward above (the same workspace reserve must be passed: it holds what forward kept).
///   dout (B,N,H,E); dq, dk (B,N,H,D); dv (B,N,H,E).
///   dg (B,N,H) fp32 for decay::Gate (required there, ignored otherwise).
///   d_final_state (B,H,D,E) fp32, read on the last SP rank only (nullptr = zero).
///   d_initial_state (B,H,D,E) fp32, written on SP rank 0 only (nullptr = not wanted).
template <class T, class Decay>
struct BackwardArgs {
  Shape shape;
  Tensor<const T> q, k, v, dout;
  Tensor<T> dq, dk, dv;
  float scale = 1.f;
  typename Decay::Params decay{};
  GateTensor dg{};
  const float* d_final_state = nullptr;
  float* d_initial_state = nullptr;
};

LASP_NAMESPACE_END
