#pragma once
// Warp-level building blocks of the sm_80 chunk kernels: swizzled shared-memory tiles, cp.async
// tile loads with row masking, ldmatrix fragment loads and mma.sync m16n8k16 with fp32
// accumulation. The products a kernel asks for are named by what they multiply: mma_ab (A*B),
// mma_abt (A*B^T), mma_atb (A^T*B), mma_a_sreg (A*S, S from registers), mma_a_streg (A*S^T).
// Device code only; no streams, no launches.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <type_traits>
#include "../../config.hpp"

LASP_NAMESPACE_BEGIN
namespace kernel::sm80 {

/// Shared-memory tile of 16-bit elements, `Cols` per row (a multiple of 64), with the 16-byte
/// chunks of each row XOR-swizzled by (row % 8) so that ldmatrix (8 rows, same column) and
/// 16-byte row stores hit 8 distinct bank groups.
template <int Cols>
struct Swz {
  static_assert(Cols % 64 == 0, "Swizzled tiles need rows of at least 64 16-bit elements.");
  LASP_DEVICE static int off(int r, int c) { return r * Cols + ((((c >> 3) ^ r) & 7) | ((c >> 3) & ~7)) * 8 + (c & 7); }
};

template <class T> struct MmaOp;

LASP_DEVICE index_t imin(index_t a, index_t b) { return a < b ? a : b; }

LASP_DEVICE std::uint32_t smem_u32(const void* p) { return static_cast<std::uint32_t>(__cvta_generic_to_shared(p)); }

/// Shared-memory byte addresses of one thread's elements (r0 + R, c0 + C) of a Swz<Cols> tile of
/// 16-bit elements, for a runtime (r0, c0) and offsets (R, C) that are compile-time constants
/// once the caller's loops are unrolled, with R % 8 == 0 and C % 8 == 0.
///
/// Why: computing Swz::off per access cost ~6 integer instructions per ldmatrix / store (ncu,
/// sm_80 kernels on H200: IMAD, LOP3, LEA, SHF were 40% of all instructions, HMMA 10-13%).
/// R % 8 == 0 leaves r & 7 (the swizzle key) unchanged, and for a chunk index x = c0 / 8 + C / 8
/// written as x0 + b + 8a (b = (C / 8) % 8), the physical chunk is phys(x0 + b) + 8a. So eight
/// per-thread bases (one per b; the compiler drops those a caller never uses) turn every access
/// into base[b] + an immediate: LDSM / STS take [register + immediate] addresses.
template <int Cols>
struct SwzAddr {
  std::uint32_t base[8];
  LASP_DEVICE SwzAddr(const void* tile, int r0, int c0) {
    const std::uint32_t t = smem_u32(tile);
    #pragma unroll
    for (int b = 0; b < 8; ++b) {
      const int x = (c0 >> 3) + b;
      base[b] = t + 2u * std::uint32_t(r0 * Cols + ((((x ^ r0) & 7) | (x & ~7)) << 3) + (c0 & 7));
    }
  }
  /// Byte address of element (r0 + R, c0 + C); R, C must fold to constants (unrolled loops).
  LASP_DEVICE std::uint32_t at(int R, int C) const {
    return base[(C >> 3) & 7] + 2u * std::uint32_t(R * Cols + ((C >> 6) << 6));
  }
};

LASP_DEVICE void cp_async16(std::uint32_t smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(valid ? 16 : 0));
}
LASP_DEVICE void st_shared_u128(std::uint32_t a, std::uint32_t x, std::uint32_t y, std::uint32_t z, std::uint32_t w) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
}
LASP_DEVICE void cp_async16(void* smem, const void* gmem, bool valid) {
  // src-size 0 zero-fills the 16 bytes: padded rows of a tail chunk read as zeros.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
LASP_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
LASP_DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/// Load rows [0, Rows) x cols [0, Cols) of a global (row stride `ld` elements) into a swizzled
/// 16-bit tile; rows >= valid_rows are zero-filled. All `Threads` threads take part. 16-bit
/// sources are copied with cp.async; fp32 sources are read into registers and rounded to the
/// tile's type (their loads complete before the tile is stored, so they do not overlap).
/// Layout::off(r, c) places an element (Swz here; sm_90's wgmma atoms elsewhere).
///
/// Each thread keeps one 16-byte column slot and steps down the rows by Threads / (Cols / 8), a
/// compile-time trip count: a loop starting at tid with a runtime bound was not unrolled and cost
/// ~15 integer instructions (and spills) per cp.async.
template <int Rows, int Cols, int Threads, class Layout = Swz<Cols>, class T, class G>
LASP_DEVICE void load_tile_async(T* s, const G* g, index_t ld, int valid_rows, int tid) {
  static_assert(sizeof(T) == 2, "16-bit tiles");
  constexpr int kPerRow = Cols / 8;  // 16-byte pieces per row
  static_assert(Threads % kPerRow == 0, "every thread keeps its column slot");
  constexpr int kRowStep = Threads / kPerRow;
  constexpr int kIters = (Rows + kRowStep - 1) / kRowStep;
  const int r0 = tid / kPerRow, c = (tid % kPerRow) * 8;
  const G* src = g + index_t(r0) * ld + c;
  const index_t step = index_t(kRowStep) * ld;
  constexpr bool kSwz = std::is_same_v<Layout, Swz<Cols>> && kRowStep % 8 == 0;
  const SwzAddr<Cols> dst(s, r0, c);  // used when kSwz (dead code otherwise)
  #pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int r = r0 + k * kRowStep;
    if (Rows % kRowStep != 0 && r >= Rows) break;
    const bool ok = r < valid_rows;
    const std::uint32_t d = kSwz ? dst.at(k * kRowStep, 0) : smem_u32(s + Layout::off(r, c));
    if constexpr (std::is_same_v<G, T>) {
      cp_async16(d, ok ? src + k * step : g, ok);
    } else {
      static_assert(std::is_same_v<G, float>, "16-bit tiles load from the same type or from fp32");
      float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
      if (ok) {
        a = *reinterpret_cast<const float4*>(src + k * step);
        b = *reinterpret_cast<const float4*>(src + k * step + 4);
      }
      st_shared_u128(d, MmaOp<T>::pack(a.x, a.y), MmaOp<T>::pack(a.z, a.w), MmaOp<T>::pack(b.x, b.y),
                     MmaOp<T>::pack(b.z, b.w));
    }
  }
}

LASP_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
LASP_DEVICE void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
LASP_DEVICE void st_shared_u32(std::uint32_t a, std::uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory");
}
LASP_DEVICE std::uint32_t ld_shared_u32(std::uint32_t a) {
  std::uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
  return v;
}
LASP_DEVICE void ldmatrix_x4(std::uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
LASP_DEVICE void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

template <> struct MmaOp<__nv_bfloat16> {
  LASP_DEVICE static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  LASP_DEVICE static __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
  LASP_DEVICE static float to(__nv_bfloat16 x) { return __bfloat162float(x); }
  LASP_DEVICE static std::uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&v);
  }
  LASP_DEVICE static float2 unpack(std::uint32_t x) { return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x)); }
};
template <> struct MmaOp<__half> {
  LASP_DEVICE static void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  LASP_DEVICE static __half from(float x) { return __float2half_rn(x); }
  LASP_DEVICE static float to(__half x) { return __half2float(x); }
  LASP_DEVICE static std::uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&v);
  }
  LASP_DEVICE static float2 unpack(std::uint32_t x) { return __half22float2(*reinterpret_cast<__half2*>(&x)); }
};

/// No per-k scaling of the A operand.
struct NoKScale {};

/// The 16-bit tensor-core operand type for a global element type G: bf16 and fp16 as they are;
/// fp32 inputs are rounded to bf16 when staged in shared memory (bf16 operand precision, fp32
/// accumulation and states; range of fp32).
template <class G> struct op_for { using type = G; };
template <> struct op_for<float> { using type = __nv_bfloat16; };
template <class G> using op_for_t = typename op_for<G>::type;

/// Two consecutive elements of global type G to / from fp32.
template <class G>
LASP_DEVICE void store2(G* p, float a, float b) {
  if constexpr (std::is_same_v<G, float>) *reinterpret_cast<float2*>(p) = make_float2(a, b);
  else *reinterpret_cast<std::uint32_t*>(p) = MmaOp<G>::pack(a, b);
}
template <class G>
LASP_DEVICE float2 load2(const G* p) {
  if constexpr (std::is_same_v<G, float>) return *reinterpret_cast<const float2*>(p);
  else return MmaOp<G>::unpack(*reinterpret_cast<const std::uint32_t*>(p));
}

/// acc[MT][NT] (+)= A[m0 : m0+16 MT, 0:K] * B[0:K, n0 : n0+8 NT] for one warp (use the named
/// forms below: mma_ab, mma_abt, mma_atb).
///   A_KM = false: A stored row-major [M][K] (tile of KA columns); true: stored [K][M] (tile of KA columns = M extent).
///   B_KN = false: B stored [N][K]; true: stored [K][N].
/// Accumulator layout is mma's C layout: acc[i][j][0..1] = (row m0+16i+gid, cols n0+8j+2t4+{0,1}),
/// acc[i][j][2..3] = row +8. (gid = lane/4, t4 = lane%4.)
template <int MT, int NT, int K, bool A_KM, bool B_KN, int ColsA, int ColsB, class Op, class KScale = NoKScale>
LASP_DEVICE void warp_mma(float (&acc)[MT][NT][4], const Op* sA, int m0, const Op* sB, int n0, int lane,
                          KScale kscale = {}) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time.");
  // A diag(w) B = A (diag(w) B): the weights go on whichever operand has fewer values per k-step
  // (A: 8 per m-tile, B: 4 per n-tile); e.g. FwdOutput's state update weights its 32-column
  // slice of V rather than all 128 rows of K^T (4x fewer multiplies and repacks).
  constexpr bool kScaleB = NT < 2 * MT;
  const int i8 = lane & 7, mat = lane >> 3, t4 = lane & 3;
  // Runtime parts of the fragment coordinates; the unrolled k0, i, j parts are multiples of 8
  // rows / 16 columns (SwzAddr). m0, n0 are multiples of 8 in every caller.
  const SwzAddr<ColsA> pa = !A_KM ? SwzAddr<ColsA>(sA, m0 + (lane & 15), (lane >> 4) * 8)
                                  : SwzAddr<ColsA>(sA, i8 + (mat >> 1) * 8, m0 + (mat & 1) * 8);
  const SwzAddr<ColsB> pb = !B_KN ? SwzAddr<ColsB>(sB, n0 + i8 + (mat >> 1) * 8, (mat & 1) * 8)
                                  : SwzAddr<ColsB>(sB, i8 + (mat & 1) * 8, n0 + (mat >> 1) * 8);
  #pragma unroll
  for (int k0 = 0; k0 < K; k0 += 16) {
    std::uint32_t a[MT][4];
    #pragma unroll
    for (int i = 0; i < MT; ++i) {
      if constexpr (!A_KM) {
        ldmatrix_x4(a[i], pa.at(16 * i, k0));
      } else {
        ldmatrix_x4_trans(a[i], pa.at(k0, 16 * i));
      }
    }
    if constexpr (!std::is_same_v<KScale, NoKScale> && !kScaleB) {
      // A <- A diag(w): registers 0,1 hold k = k0 + 2 t4 + {0,1}, registers 2,3 hold k + 8.
      const float w0 = kscale(k0 + 2 * t4), w1 = kscale(k0 + 2 * t4 + 1);
      const float w2 = kscale(k0 + 8 + 2 * t4), w3 = kscale(k0 + 9 + 2 * t4);
      #pragma unroll
      for (int i = 0; i < MT; ++i) {
        float2 x;
        x = MmaOp<Op>::unpack(a[i][0]); a[i][0] = MmaOp<Op>::pack(x.x * w0, x.y * w1);
        x = MmaOp<Op>::unpack(a[i][1]); a[i][1] = MmaOp<Op>::pack(x.x * w0, x.y * w1);
        x = MmaOp<Op>::unpack(a[i][2]); a[i][2] = MmaOp<Op>::pack(x.x * w2, x.y * w3);
        x = MmaOp<Op>::unpack(a[i][3]); a[i][3] = MmaOp<Op>::pack(x.x * w2, x.y * w3);
      }
    }
    #pragma unroll
    for (int j = 0; j < NT; j += 2) {
      std::uint32_t b[4];
      if constexpr (!B_KN) {
        ldmatrix_x4(b, pb.at(8 * j, k0));
      } else {
        ldmatrix_x4_trans(b, pb.at(k0, 8 * j));
      }
      if constexpr (!std::is_same_v<KScale, NoKScale> && kScaleB) {
        // B <- diag(w) B: registers 0, 2 hold k = k0 + 2 t4 + {0,1}, registers 1, 3 hold k + 8.
        const float w0 = kscale(k0 + 2 * t4), w1 = kscale(k0 + 2 * t4 + 1);
        const float w2 = kscale(k0 + 8 + 2 * t4), w3 = kscale(k0 + 9 + 2 * t4);
        float2 x;
        x = MmaOp<Op>::unpack(b[0]); b[0] = MmaOp<Op>::pack(x.x * w0, x.y * w1);
        x = MmaOp<Op>::unpack(b[2]); b[2] = MmaOp<Op>::pack(x.x * w0, x.y * w1);
        x = MmaOp<Op>::unpack(b[1]); b[1] = MmaOp<Op>::pack(x.x * w2, x.y * w3);
        x = MmaOp<Op>::unpack(b[3]); b[3] = MmaOp<Op>::pack(x.x * w2, x.y * w3);
      }
      #pragma unroll
      for (int i = 0; i < MT; ++i) {
        MmaOp<Op>::mma(acc[i][j], a[i], b[0], b[1]);
        MmaOp<Op>::mma(acc[i][j + 1], a[i], b[2], b[3]);
      }
    }
  }
}

/// Per-k weight exp(G - g_k) (rows of K scaled to the chunk end), read from shared memory.
struct ToEndScale {
  const float* g;
  float G;
  LASP_DEVICE float operator()(int k) const { return __expf(G - g[k]); }
};
/// Per-k weight f * exp(g_k) (rows of Q scaled from the chunk start).
struct FromStartScale {
  const float* g;
  float f;
  LASP_DEVICE float operator()(int k) const { return f * __expf(g[k]); }
};

/// fp16's range for fp32 values rounded to fp16 tensor-core operands (the state, or the state
/// gradient, which can exceed 65504 where q, k, v cannot): they are multiplied by `down`, a power
/// of two (exact), and the product is multiplied back by `up` = 1 / down. `down` = 1 (the
/// default) packs as before; bf16 operands have fp32's range and never scale.
struct Fp16Range {
  float down = 1.f, up = 1.f;
  template <class Op>
  LASP_DEVICE std::uint32_t pack(float lo, float hi) const {
    if constexpr (std::is_same_v<Op, __half>) return MmaOp<Op>::pack(lo * down, hi * down);
    else return MmaOp<Op>::pack(lo, hi);
  }
  /// The scale for values whose largest magnitude is m (>= 0): 2^-e with e the smallest that
  /// brings m below 2^15 (half of fp16's largest finite value). Not finite: no scale.
  LASP_DEVICE static Fp16Range for_max(float m) {
    Fp16Range r;
    int ex = 0;
    frexpf(m, &ex);  // m < 2^ex
    const int e = isfinite(m) && ex > 15 ? ex - 15 : 0;
    r.down = __int_as_float((127 - e) << 23);
    r.up = __int_as_float((127 + e) << 23);
    return r;
  }
};

/// The largest |x| over a warp's accumulator tiles (every lane gets it).
template <int MT, int NT>
LASP_DEVICE float warp_abs_max(const float (&a)[MT][NT][4]) {
  float m = 0.f;
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j)
      #pragma unroll
      for (int e = 0; e < 4; ++e) m = fmaxf(m, fabsf(a[i][j][e]));
  #pragma unroll
  for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

/// Transpose an 8x8 matrix of 16-bit pairs held in mma fragment layout (movmatrix, sm_75+).
LASP_DEVICE std::uint32_t movmatrix_trans(std::uint32_t x) {
  std::uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

/// acc[MT][NT] += A[0 : 16 MT, 0 : 16 KT] * S where the B operand S (16 KT x 8 NT) is this warp's
/// own fp32 accumulator tiles (C layout, rows = k): each 8x8 half is packed to 16 bits and
/// transposed in registers with movmatrix into the B fragment, so the state never visits shared
/// memory. A is read from a swizzled row-major tile.
template <int MT, int NT, int KT, int ColsA, class Op>
LASP_DEVICE void mma_a_sreg(float (&acc)[MT][NT][4], const Op* sA, const float (&S)[KT][NT][4], int lane,
                            Fp16Range range = {}) {
  const SwzAddr<ColsA> pa(sA, lane & 15, (lane >> 4) * 8);
  #pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    std::uint32_t a[MT][4];
    #pragma unroll
    for (int i = 0; i < MT; ++i) ldmatrix_x4(a[i], pa.at(16 * i, 16 * kt));
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      const std::uint32_t b0 = movmatrix_trans(range.pack<Op>(S[kt][j][0], S[kt][j][1]));
      const std::uint32_t b1 = movmatrix_trans(range.pack<Op>(S[kt][j][2], S[kt][j][3]));
      #pragma unroll
      for (int i = 0; i < MT; ++i) MmaOp<Op>::mma(acc[i][j], a[i], b0, b1);
    }
  }
}

/// acc[MT][NQ] += A[0 : 16 MT, 0 : 16 KT] * S^T-slice, where the B operand B[k = e][n = d] = S[d][e]
/// comes from this warp's own row-partitioned state accumulators S[NQ/2][2 KT] (rows d, cols e):
/// that is exactly the accumulator layout, so register pairs pack straight into B fragments.
template <int MT, int NQ, int KT, int ColsA, class Op>
LASP_DEVICE void mma_a_streg(float (&acc)[MT][NQ][4], const Op* sA, const float (&S)[NQ / 2][2 * KT][4], int lane,
                             Fp16Range range = {}) {
  const SwzAddr<ColsA> pa(sA, lane & 15, (lane >> 4) * 8);
  #pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
    std::uint32_t a[MT][4];
    #pragma unroll
    for (int i = 0; i < MT; ++i) ldmatrix_x4(a[i], pa.at(16 * i, 16 * kk));
    #pragma unroll
    for (int jn = 0; jn < NQ; ++jn) {
      const int i = jn / 2, hf = (jn % 2) * 2;
      const std::uint32_t b0 = range.pack<Op>(S[i][2 * kk][hf], S[i][2 * kk][hf + 1]);
      const std::uint32_t b1 = range.pack<Op>(S[i][2 * kk + 1][hf], S[i][2 * kk + 1][hf + 1]);
      #pragma unroll
      for (int m = 0; m < MT; ++m) MmaOp<Op>::mma(acc[m][jn], a[m], b0, b1);
    }
  }
}

template <int MT, int NT>
LASP_DEVICE void zero_acc(float (&acc)[MT][NT][4]) {
  #pragma unroll
  for (int i = 0; i < MT; ++i)
    #pragma unroll
    for (int j = 0; j < NT; ++j)
      #pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
}

/// Write accumulators (optionally scaled per row by rs(row)) to a swizzled 16-bit tile.
template <int MT, int NT, int Cols, class Op, class RowScale>
LASP_DEVICE void store_acc(Op* s, const float (&acc)[MT][NT][4], int m0, int n0, int lane, RowScale rs) {
  const int gid = lane >> 2, t4 = lane & 3;
  const SwzAddr<Cols> ps(s, m0 + gid, n0 + 2 * t4);  // n0 % 8 == 0
  #pragma unroll
  for (int i = 0; i < MT; ++i) {
    const int r0 = m0 + 16 * i + gid, r1 = r0 + 8;
    const float f0 = rs(r0), f1 = rs(r1);
    #pragma unroll
    for (int j = 0; j < NT; ++j) {
      st_shared_u32(ps.at(16 * i, 8 * j), MmaOp<Op>::pack(acc[i][j][0] * f0, acc[i][j][1] * f0));
      st_shared_u32(ps.at(16 * i + 8, 8 * j), MmaOp<Op>::pack(acc[i][j][2] * f1, acc[i][j][3] * f1));
    }
  }
}

struct NoScale {
  LASP_DEVICE float operator()(int) const { return 1.f; }
};

/// acc += A * B: A stored row-major [M][K] (tile of ColsA columns), B stored row-major [K][N].
template <int MT, int NT, int K, int ColsA, int ColsB, class Op, class KScale = NoKScale>
LASP_DEVICE void mma_ab(float (&acc)[MT][NT][4], const Op* sA, int m0, const Op* sB, int n0, int lane, KScale w = {}) {
  warp_mma<MT, NT, K, false, true, ColsA, ColsB>(acc, sA, m0, sB, n0, lane, w);
}
/// acc += A * B^T: A stored [M][K], B stored [N][K] (both with K contiguous).
template <int MT, int NT, int K, int ColsA, int ColsB, class Op, class KScale = NoKScale>
LASP_DEVICE void mma_abt(float (&acc)[MT][NT][4], const Op* sA, int m0, const Op* sB, int n0, int lane, KScale w = {}) {
  warp_mma<MT, NT, K, false, false, ColsA, ColsB>(acc, sA, m0, sB, n0, lane, w);
}
/// acc += A^T * B: A stored [K][M], B stored [K][N] (rows are k: keys times values).
template <int MT, int NT, int K, int ColsA, int ColsB, class Op, class KScale = NoKScale>
LASP_DEVICE void mma_atb(float (&acc)[MT][NT][4], const Op* sA, int m0, const Op* sB, int n0, int lane, KScale w = {}) {
  warp_mma<MT, NT, K, true, true, ColsA, ColsB>(acc, sA, m0, sB, n0, lane, w);
}

}  // namespace kernel::sm80
LASP_NAMESPACE_END
