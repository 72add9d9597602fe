#pragma once
// Argument structs of forward and backward for one SP rank's local segment.
#include <cstddef>
#include <cstdint>
#include "config.hpp"
#include "tensor.hpp"
#include "workspace.hpp"

LASP_NAMESPACE_BEGIN

/// How the global sequence is split over the R ranks of the SP group (every rank must pass the
/// same value; the per-call agreement checks it: kPeerMismatch otherwise).
///   kContiguous (default): rank r holds tokens [t0_r, t0_r + N_r), t0_r = N_0 + ... + N_{r-1}.
///   kZigzag: the sequence is cut into 2R virtual segments, rank r holding segment r (its first
///     N_r / 2 rows: the "front") and segment 2R-1-r (its last N_r / 2 rows: the "back") in one
///     buffer (N_r even); segment v holds N_{v} / 2 tokens for v < R and N_{2R-1-v} / 2 for
///     v >= R, in global order 0, 1, ..., 2R-1. The load-balanced layout that softmax-attention
///     layers of hybrid models use: q, k, v, o stay where they are. The whole-sequence
///     initial_state is read on rank 0 (segment 0) and the final state, which leaves segment
///     2R-1, is written on rank 0 too (d_final_state read, d_initial_state written on rank 0).
enum class Sharding : int { kContiguous = 0, kZigzag = 1 };

/// Packed variable-length sequences ("documents") over the whole global sequence, B = 1.
/// The state is reset at every document start (to that document's initial state, or zero),
/// inside chunks and across ranks; documents may span any number of ranks. Every rank passes
/// the same offsets (checked by the per-call agreement: kPeerMismatch otherwise).
///   cu_seqlens        docs + 1 global token offsets (int32 or int64 as index_bits says), in the
///                     memory q/k/v live in (host memory for the host backend): 0 = o_0 <= o_1
///                     <= ... <= o_docs = total tokens of the group (the sum of every rank's N);
///                     document i holds global tokens [o_i, o_{i+1}) (empty documents allowed).
///                     With Sharding::kZigzag the positions are in global token order.
///   initial_states    optional pool of fp32 states (pool, H, D, E); document i starts from
///                     initial_states[state_index[i]] (state_index null: slot i, pool >= docs;
///                     an index of -1: zero). Read on the rank holding the document's first token.
///                     Memory: the backend's (CUDA: device memory, state_index included; its
///                     values are checked on the device, a bad one gives the deferred status
///                     kInvalidOffsets with nothing written; host backend: host memory).
///   final_states      optional (docs, H, D, E) fp32 output of forward: the state after each
///                     document's last token, written on the rank holding that token (for an
///                     empty document: the rank holding the token at its position, or for one
///                     at the very end the rank holding the sequence's last token); entries of
///                     documents written elsewhere are left untouched.
///   d_final_states    optional (docs, H, D, E) fp32 input of backward (gradient of final_states),
///                     read where final_states is written.
///   d_initial_states  optional (docs, H, D, E) fp32 output of backward: the gradient of each
///                     document's initial state (also for documents that start from zero),
///                     written where its initial state is read. With a pool, the gradient of a
///                     slot is the sum over the documents that use it (left to the caller).
/// Forward reads cu_seqlens, initial_states, state_index and writes final_states; backward
/// reads cu_seqlens, initial_states, state_index, d_final_states and writes d_initial_states
/// (backward needs the same initial states as its forward). The whole-sequence initial_state,
/// final_state, d_final_state and d_initial_state must be null with packed documents.
struct Packed {
  const void* cu_seqlens = nullptr;
  int index_bits = 32;  // 32 (int32_t offsets) or 64 (int64_t)
  /// The same offsets in device memory (same index width): required by the CUDA backend, whose
  /// kernels walk them (cu_seqlens stays host memory: the checks, the agreement and the geometry
  /// read it on the host). A device copy that differs from cu_seqlens in this rank's range is
  /// found on the device: the deferred status is kInvalidOffsets, nothing written. The host
  /// backend ignores it.
  const void* cu_seqlens_device = nullptr;
  index_t docs = 0;     // number of documents (cu_seqlens has docs + 1 entries)
  const float* initial_states = nullptr;
  const std::int32_t* state_index = nullptr;
  index_t pool = 0;     // states in initial_states
  float* final_states = nullptr;
  const float* d_final_states = nullptr;
  float* d_initial_states = nullptr;
  /// Packed documents given (cu_seqlens or docs set)?
  constexpr bool active() const { return cu_seqlens != nullptr || docs != 0; }
};

/// Empty shards (plain, packed and zigzag calls; host backend only: backends without
/// `kEmptyShards`, the CUDA backend among them, refuse N = 0 with kUnsupportedFeature, agreed like
/// any refusal): a rank may hold no token, shape.N = 0. Its token tensors (q, k, v, o, dout, dq,
/// dk, dv, dg, gates) are neither read nor written and may be null; it passes the state entering
/// it on unchanged (summary A = 1, L = 0), and the state gradient likewise; it still takes part in
/// the call, so rank 0 reads initial_state (d_initial_state written) and the last rank (zigzag:
/// rank 0) writes final_state (reads d_final_state) even when empty. Documents of a packed call
/// may cross empty ranks. Every rank empty (no token in the group) is allowed too: final states
/// are the initial ones. N < 0 is kInvalidShape.

/// Forward: O = scale * causal linear attention of (Q, K, V) with decay, continuing the state
/// that enters this rank from the ranks before it.
///   q, k (B,N,H,D); v, o (B,N,H,E): element type T; any strides for b, n, h; last dim contiguous.
///   initial_state (B,H,D,E) fp32, read on SP rank 0 only (nullptr = zero state).
///   final_state   (B,H,D,E) fp32, written on the last SP rank only (nullptr = not wanted;
///                 Sharding::kZigzag: on rank 0, which holds the last virtual segment).
///   packed        packed documents with per-document states (see Packed), sharding (Sharding).
template <class T, class Decay>
struct ForwardArgs {
  Shape shape;
  Tensor<const T> q, k, v;
  Tensor<T> o;
  float scale = 1.f;
  typename Decay::Params decay{};
  const float* initial_state = nullptr;
  float* final_state = nullptr;
  Packed packed{};                         // packed documents (B = 1); inactive by default
  Sharding sharding = Sharding::kContiguous;
  /// Which forward filled the reserve (the CUDA backend's fingerprint, checked by backward):
  /// 0 = derived from the q, k, v addresses and strides; non-zero = this id (with the shape,
  /// element type and policies), for callers whose backward sees the same inputs at other
  /// addresses (recomputed activations, torch.compile): e.g. a counter kept with the reserve.
  std::uint32_t forward_id = 0;
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
  Packed packed{};                         // the forward's documents (and d_final_states / d_initial_states)
  Sharding sharding = Sharding::kContiguous;
  std::uint32_t forward_id = 0;            // the forward's forward_id (see ForwardArgs)
};

LASP_NAMESPACE_END
