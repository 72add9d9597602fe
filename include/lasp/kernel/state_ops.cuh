#pragma once
// Small fp32 kernels on D x E states, independent of the architecture and of N: the scan combine,
// the fold over a rank's segments, and the decay-gradient fix-ups. Kernel classes (launch.cuh).
#include <cuda_runtime.h>
#include <algorithm>
#include "../config.hpp"
#include "../tensor.hpp"
#include "doc_chunks.hpp"
#include "launch.cuh"

LASP_NAMESPACE_BEGIN
namespace kernel {

/// out[i,:] = A[i] * P[i,:] + L[i,:]; A null = 1, P null = 0; out may alias P or L.
/// `skip` non-null and non-zero: nothing is written (a user's buffer and a failed verdict).
struct Combine {
  struct Params {
    float* out;
    const float *A, *P, *L;
    index_t bh, de;
    const unsigned* skip;
  };
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) {
    const index_t n = p.bh * p.de;
    return dim3(unsigned(std::min<index_t>((n + 255) / 256, 1024)));
  }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    if (p.skip && *p.skip) return;
    const index_t n = p.bh * p.de;
    for (index_t x = blockIdx.x * index_t(blockDim.x) + threadIdx.x; x < n; x += index_t(gridDim.x) * blockDim.x) {
      const index_t i = x / p.de;
      const float a = p.A ? p.A[i] : 1.f;
      p.out[x] = (p.P ? a * p.P[x] : 0.f) + p.L[x];
    }
  }
};

/// The agreement of a call (driver.hpp): `words` holds R status words of `stride` 32-bit words
/// each, every byte of a word the Status code its rank refused the call with (0: accepted) in
/// bits 0-5 and the call's layout mode in bits 6-7.
/// *slot = (code of the lowest refusing rank) << shift, or 0: the call's verdict, which the
/// kernels that write outputs check. One thread; it also resets the slot for this call's
/// device-side checks (they OR their bits in afterwards).
struct Verdict {
  struct Params {
    const unsigned* words;
    int R;
    unsigned stride;
    unsigned* slot;
    unsigned shift;
    unsigned mismatch;  // the code of ranks whose layout modes (bits 6-7) differ
  };
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 32;
  static dim3 grid(const Params&) { return dim3(1); }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    if (threadIdx.x != 0) return;
    unsigned code = 0;
    bool same = true;
    const unsigned mode0 = (p.words[0] >> 6) & 3u;
    for (int j = 0; j < p.R; ++j) {
      const unsigned w = p.words[unsigned(j) * p.stride];
      if (!code) code = w & 0x3fu;
      same = same && ((w >> 6) & 3u) == mode0;
    }
    if (!code && !same) code = p.mismatch;
    *p.slot = code << p.shift;
  }
};

/// Fold the per-segment summaries of each (b,h), in place. Forward (Reverse = false):
/// seg_S[i] <- X_i = state after segments < i from zero, Apre[i] = prod_{j<i} A_j; rank summary
/// (A_r, L_r) = fold of all. Backward (Reverse = true): the same from the last segment down
/// (Y_i, Apost[i] = prod_{j>i} A_j; rank (A_r, M_r)).
/// A failed device-side check (`status` non-zero) makes the rank summary NaN: the ranks after
/// this one then produce NaN outputs instead of silently wrong ones (this rank writes nothing).
template <bool Reverse>
struct FoldSegments {
  struct Params {
    float* seg_S;
    const float* seg_A;
    float* seg_Apre;
    int nseg;
    index_t bh_count, de;
    float* rank_A;
    float* rank_L;
    const unsigned* status;
  };
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) { return dim3(unsigned(p.bh_count), unsigned((p.de + 255) / 256)); }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    const index_t bh = blockIdx.x;
    const index_t e = blockIdx.y * index_t(blockDim.x) + threadIdx.x;
    const bool lead = blockIdx.y == 0 && threadIdx.x == 0;
    float x = 0.f, a = 1.f;
    // The fold is a serial recurrence per element; load a batch of 8 segments' values up front so
    // the loads are in flight together instead of one latency per segment.
    constexpr int kBatch = 8;
    for (int k0 = 0; k0 < p.nseg; k0 += kBatch) {
      float Lb[kBatch], Ab[kBatch];
      #pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = k0 + u;
        const int i = Reverse ? p.nseg - 1 - k : k;
        const index_t idx = index_t(i) * p.bh_count + bh;
        Ab[u] = k < p.nseg ? p.seg_A[idx] : 1.f;
        Lb[u] = k < p.nseg && e < p.de ? p.seg_S[idx * p.de + e] : 0.f;
      }
      #pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = k0 + u;
        if (k >= p.nseg) break;
        const int i = Reverse ? p.nseg - 1 - k : k;
        const index_t idx = index_t(i) * p.bh_count + bh;
        if (e < p.de) p.seg_S[idx * p.de + e] = x;
        if (lead) p.seg_Apre[idx] = a;
        x = Ab[u] * x + Lb[u];
        a *= Ab[u];
      }
    }
    if (p.status && *p.status) x = a = __int_as_float(0x7fc00000);  // quiet NaN
    if (e < p.de && p.rank_L) p.rank_L[bh * p.de + e] = x;
    if (lead && p.rank_A) p.rank_A[bh] = a;
  }
};

/// Decay gradients: dg of segment i gets the dc totals of the later segments of this rank plus
/// `extra` (the final-state term on the last rank); dc_total[bh] = the rank's total. Segments
/// cover rows [row0 + i seg_len, ...) up to row1.
/// Packed documents (docs.p non-null; g0: global position of local row 0): a document start
/// stops the sum. Only the rows of segment i's last document get anything: the dc totals of the
/// later segments up to and including the first one that holds a document start (BwdDkDv leaves
/// in seg_dc the dc of a segment's rows before its first start). docs/packed-cuda.md section 4.
struct GateSegmentFixup {
  struct Params {
    GateTensor dg;
    const float* seg_dc;
    const float* extra;
    float* dc_total;
    int nseg;
    index_t B, H, N, seg_len;
    const unsigned* status;
    index_t row0 = 0, row1 = 0;
    DocOffsets docs{};
    index_t g0 = 0;
  };
  /// The segment [nb, ne) holds a document start: the document of its last row starts inside it.
  LASP_DEVICE static bool has_start(const Params& p, index_t nb, index_t ne) {
    return p.docs.at(p.docs.doc_at(p.g0 + ne - 1)) >= p.g0 + nb;
  }
  LASP_DEVICE static index_t seg_end(const Params& p, index_t nb) {
    return p.row1 < nb + p.seg_len ? p.row1 : nb + p.seg_len;
  }
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) { return dim3(unsigned(p.B * p.H), unsigned(p.nseg)); }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    if (*p.status) {  // a device-side check failed: dg stays untouched, later ranks' suffix goes NaN
      if (blockIdx.y == 0 && threadIdx.x == 0 && p.dc_total) p.dc_total[blockIdx.x] = __int_as_float(0x7fc00000);
      return;
    }
    const int seg = blockIdx.y;
    const index_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const index_t n_begin = p.row0 + seg * p.seg_len, n_end = seg_end(p, n_begin);
    float add = p.extra ? p.extra[bh] : 0.f;
    index_t from = n_begin;
    if (p.docs.p) {
      for (int j = seg + 1; j < p.nseg; ++j) {
        const index_t jb = p.row0 + j * p.seg_len;
        add += p.seg_dc[index_t(j) * p.B * p.H + bh];
        if (has_start(p, jb, seg_end(p, jb))) break;
      }
      const index_t lo = p.docs.at(p.docs.doc_at(p.g0 + n_end - 1)) - p.g0;  // this segment's last document
      from = lo > n_begin ? lo : n_begin;
    } else {
      for (int j = seg + 1; j < p.nseg; ++j) add += p.seg_dc[index_t(j) * p.B * p.H + bh];
      if (seg == 0 && threadIdx.x == 0 && p.dc_total) p.dc_total[bh] = add + p.seg_dc[bh];
    }
    if (add != 0.f)
      for (index_t n = from + threadIdx.x; n < n_end; n += blockDim.x) p.dg(b, n, h) += add;
  }
};

/// extra[bh] = <G[bh], S[bh]> over D*E (one block per (b,h)).
struct StateDot {
  struct Params {
    float* extra;
    const float *G, *S;
    index_t bh, de;
  };
  struct SharedStorage {
    float red[32];
  };
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) { return dim3(unsigned(p.bh)); }
  LASP_DEVICE static void run(const Params& p, unsigned char* smem) {
    float* red = reinterpret_cast<SharedStorage*>(smem)->red;
    const index_t bh = blockIdx.x;
    float acc = 0.f;
    for (index_t x = threadIdx.x; x < p.de; x += blockDim.x) acc += p.G[bh * p.de + x] * p.S[bh * p.de + x];
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
      acc = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.f;
      for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (threadIdx.x == 0) p.extra[bh] = acc;
    }
  }
};

/// dg[b,:,h] += suffix[b*H + h]. Grid: (B*H, up to 65535 blocks of 256 tokens, striding over N).
struct AddSuffix {
  struct Params {
    GateTensor dg;
    const float* suffix;
    index_t B, H, N;
    const unsigned* status;
  };
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) {
    return dim3(unsigned(p.B * p.H), unsigned(std::min<index_t>((p.N + 255) / 256, 65535)));
  }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    if (*p.status) return;
    const index_t bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    for (index_t n = blockIdx.y * index_t(blockDim.x) + threadIdx.x; n < p.N; n += index_t(gridDim.y) * blockDim.x)
      p.dg(b, n, h) += p.suffix[bh];
  }
};

}  // namespace kernel
LASP_NAMESPACE_END
