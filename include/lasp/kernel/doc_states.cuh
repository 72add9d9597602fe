#pragma once
// Small kernels of packed documents on the CUDA backend (docs/packed-cuda.md): the device-side
// check of what the kernels read of a packed call on this rank (the device copy of the offsets
// against the host's, the state slots), and the per-document states of empty documents, which
// own no chunk. Kernel classes (launch.cuh).
#include <cuda_runtime.h>
#include <cstdint>
#include "../config.hpp"
#include "../tensor.hpp"
#include "doc_chunks.hpp"
#include "launch.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel {

/// A position-keyed hash of one offset; a range's hash is the sum of its entries' (mod 2^32), so
/// the host and any number of threads agree on it.
LASP_HD std::uint32_t doc_mix(index_t i, index_t x) {
  std::uint64_t z = std::uint64_t(x) * 0x9E3779B97F4A7C15ull ^ (std::uint64_t(i) + 1) * 0xC2B2AE3D27D4EB4Full;
  z ^= z >> 29;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 32;
  return std::uint32_t(z);
}

/// Checks, for this rank's range of documents, that the device offsets [i0, i1] hash to the
/// host's value and that the state slots of documents [i0, i1) lie in [-1, pool). Either
/// failing sets `bit` in *status: the output kernels then write nothing and the deferred status
/// says kInvalidOffsets. One block.
struct DocCheck {
  struct Params {
    DocOffsets off;
    index_t i0, i1;
    std::uint32_t expect;
    const std::int32_t* slot;  // null: no slots to check
    index_t pool;
    unsigned* status;
    unsigned bit;
  };
  struct SharedStorage {
    unsigned hash, bad;
  };
  static constexpr int kThreads = 256;
  static dim3 grid(const Params&) { return dim3(1); }
  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    auto& sm = *reinterpret_cast<SharedStorage*>(smem);
    if (threadIdx.x == 0) sm.hash = 0u, sm.bad = 0u;
    __syncthreads();
    std::uint32_t h = 0;
    unsigned bad = 0;
    for (index_t i = p.i0 + threadIdx.x; i <= p.i1; i += kThreads) {
      h += doc_mix(i, p.off.at(i));
      if (p.slot && i < p.i1) {
        const std::int32_t s = p.slot[i];
        bad |= (s < -1 || index_t(s) >= p.pool) ? 1u : 0u;
      }
    }
    atomicAdd(&sm.hash, h);
    if (bad) atomicOr(&sm.bad, 1u);
    __syncthreads();
    if (threadIdx.x == 0 && (sm.bad || sm.hash != p.expect)) atomicOr(p.status, p.bit);
  }
};

/// The per-document states of the empty documents (equal offsets) among [i0, i1) that this
/// segment owns (at a position < g1, or at the sequence's end `total` when `ends`): forward,
/// final = initial (src: the pool through the slots); backward, d_initial = d_final (src: one
/// state per document). A null source is zero. Writes nothing while *status is non-zero.
struct EmptyDocs {
  struct Params {
    DocOffsets off;
    index_t i0, i1, g1, total;
    bool ends;
    const float* pool_states;  // forward: (pool, H, D, E) with slots
    const std::int32_t* slot;
    index_t pool;
    const float* doc_states;   // backward: (docs, H, D, E)
    float* dst;                // (docs, H, D, E)
    index_t H, de;
    const unsigned* status;
  };
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) { return dim3(unsigned(p.i1 - p.i0 < 1024 ? p.i1 - p.i0 : 1024)); }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    if (*p.status) return;
    const index_t n = p.H * p.de;
    for (index_t j = p.i0 + blockIdx.x; j < p.i1; j += gridDim.x) {
      const index_t at = p.off.at(j);
      if (at != p.off.at(j + 1) || !(at < p.g1 || (p.ends && at == p.total))) continue;
      const float* src = p.doc_states ? p.doc_states + j * n : nullptr;
      if (p.pool_states) {
        const index_t s = p.slot ? index_t(p.slot[j]) : j;
        src = s < 0 || s >= p.pool ? nullptr : p.pool_states + s * n;
      }
      float* dst = p.dst + j * n;
      for (index_t x = threadIdx.x; x < n; x += kThreads) dst[x] = src ? src[x] : 0.f;
    }
  }
};

}  // namespace kernel
LASP_NAMESPACE_END
