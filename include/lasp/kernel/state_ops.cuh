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
/// Zigzag (nseg_back > 0): the segments [0, nseg) are the front half's and [nseg, nseg +
/// nseg_back) the back half's; each half folds alone, into (rank_A, rank_L) and (rank_A2,
/// rank_L2), in one launch (grid z = 2).
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
    int nseg_back = 0;
    float* rank_A2 = nullptr;
    float* rank_L2 = nullptr;
  };
  using SharedStorage = NoSharedStorage;
  static constexpr int kThreads = 256;
  static dim3 grid(const Params& p) {
    return dim3(unsigned(p.bh_count), unsigned((p.de + 255) / 256), p.nseg_back > 0 ? 2u : 1u);
  }
  LASP_DEVICE static void run(const Params& p, unsigned char*) {
    const index_t bh = blockIdx.x;
    const index_t e = blockIdx.y * index_t(blockDim.x) + threadIdx.x;
    const bool lead = blockIdx.y == 0 && threadIdx.x == 0;
    const bool back = blockIdx.z > 0;
    const int nseg = back ? p.nseg_back : p.nseg;
    const index_t base = back ? index_t(p.nseg) * p.bh_count + bh : bh;  // this half's first entry of (b,h)
    float* rank_A = back ? p.rank_A2 : p.rank_A;
    float* rank_L = back ? p.rank_L2 : p.rank_L;
    float x = 0.f, a = 1.f;
    // The fold is a serial recurrence per element; load a batch of 8 segments' values up front so
    // the loads are in flight together instead of one latency per segment.
    constexpr int kBatch = 8;
    for (int k0 = 0; k0 < nseg; k0 += kBatch) {
      float Lb[kBatch], Ab[kBatch];
      #pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = k0 + u;
        const int i = Reverse ? nseg - 1 - k : k;
        const index_t idx = index_t(i) * p.bh_count + base;
        Ab[u] = k < nseg ? p.seg_A[idx] : 1.f;
        Lb[u] = k < nseg && e < p.de ? p.seg_S[idx * p.de + e] : 0.f;
      }
      #pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int k = k0 + u;
        if (k >= nseg) break;
        const int i = Reverse ? nseg - 1 - k : k;
        const index_t idx = index_t(i) * p.bh_count + base;
        if (e < p.de) p.seg_S[idx * p.de + e] = x;
        if (lead) p.seg_Apre[idx] = a;
        x = Ab[u] * x + Lb[u];
        a *= Ab[u];
      }
    }
    if (p.status && *p.status) x = a = __int_as_float(0x7fc00000);  // quiet NaN
    if (e < p.de && rank_L) rank_L[bh * p.de + e] = x;
    if (lead && rank_A) rank_A[bh] = a;
  }
};

/// Decay gradients: dg of segment i gets the dc totals of the later segments of this rank plus
/// `extra` (the final-state term on the last rank); dc_total[bh] = the rank's total. Segments
/// cover rows [row0 + i seg_len, ...) up to row1.
/// Packed documents (docs.p non-null; g0: global position of local row 0): a document start
/// stops the sum. Only the rows of segment i's last document get anything: the dc totals of the
/// later segments up to and including the first one that holds a document start (BwdDkDv leaves
/// in seg_dc the dc of a segment's rows before its first start), and `extra` when no later
/// segment holds one (that document runs to the end of the rows). docs/packed-cuda.md section 4.
/// Packed and zigzag calls (driver::backward_segments) pass extra = <S_end, G> = <A P + L, G> of
/// the rows' virtual segment: the dc of everything after it plus the final-state term, so dg is
/// complete on every rank without a suffix sum across ranks (docs/packed-cuda.md section 3).
/// Zigzag (nseg_front > 0): segments [0, nseg_front) over rows [row0, row1) (global position
/// g0 + row) with `extra`, segments [nseg_front, nseg) over [row0b, row1b) (g0b + row) with
/// extra2; each half sums only its own segments.
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
    int nseg_front = 0;
    index_t row0b = 0, row1b = 0, g0b = 0;
    const float* extra2 = nullptr;
  };
  /// The rows of one half (all of them without zigzag): segments [first, last) from row0 to row1.
  struct Rows {
    int first, last;
    index_t row0, row1, g0, seg_len;
    LASP_DEVICE index_t begin(int j) const { return row0 + index_t(j - first) * seg_len; }
    LASP_DEVICE index_t end(int j) const { return row1 < begin(j) + seg_len ? row1 : begin(j) + seg_len; }
  };
  /// The segment [nb, ne) holds a document start: the document of its last row starts inside it.
  LASP_DEVICE static bool has_start(const Params& p, index_t g0, index_t nb, index_t ne) {
    return p.docs.at(p.docs.doc_at(g0 + ne - 1)) >= g0 + nb;
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
    const bool back = p.nseg_front > 0 && seg >= p.nseg_front;
    const Rows rows = back ? Rows{p.nseg_front, p.nseg, p.row0b, p.row1b, p.g0b, p.seg_len}
                           : Rows{0, p.nseg_front > 0 ? p.nseg_front : p.nseg, p.row0, p.row1, p.g0, p.seg_len};
    const float* extra = back ? p.extra2 : p.extra;
    const index_t n_begin = rows.begin(seg), n_end = rows.end(seg);
    float add = 0.f;
    index_t from = n_begin;
    if (p.docs.p) {
      bool open = true;  // no later segment of these rows holds a document start
      for (int j = seg + 1; j < rows.last; ++j) {
        add += p.seg_dc[index_t(j) * p.B * p.H + bh];
        if (has_start(p, rows.g0, rows.begin(j), rows.end(j))) {
          open = false;
          break;
        }
      }
      if (open && extra) add += extra[bh];
      const index_t lo = p.docs.at(p.docs.doc_at(rows.g0 + n_end - 1)) - rows.g0;  // this segment's last document
      from = lo > n_begin ? lo : n_begin;
    } else {
      add = extra ? extra[bh] : 0.f;
      for (int j = seg + 1; j < rows.last; ++j) add += p.seg_dc[index_t(j) * p.B * p.H + bh];
      if (seg == 0 && threadIdx.x == 0 && p.dc_total) p.dc_total[bh] = add + p.seg_dc[bh];
    }
    if (add != 0.f)
      for (index_t n = from + threadIdx.x; n < n_end; n += blockDim.x) p.dg(b, n, h) += add;
  }
};

/// extra[bh] = <G[bh], S[bh]> over D*E (one block per (b,h)); with A and P non-null, S is
/// A[bh] P[bh] + S[bh] (a segment's end state from its summary, without a temporary).
struct StateDot {
  struct Params {
    float* extra;
    const float *G, *S;
    index_t bh, de;
    const float* A = nullptr;
    const float* P = nullptr;
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
    if (p.A && p.P) {
      const float a = p.A[bh];
      for (index_t x = threadIdx.x; x < p.de; x += blockDim.x)
        acc += p.G[bh * p.de + x] * (a * p.P[bh * p.de + x] + p.S[bh * p.de + x]);
    } else {
      for (index_t x = threadIdx.x; x < p.de; x += blockDim.x) acc += p.G[bh * p.de + x] * p.S[bh * p.de + x];
    }
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
