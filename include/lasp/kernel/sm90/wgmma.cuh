#pragma once
// Warpgroup-level building blocks of the sm_90a chunk kernels: 128-byte-swizzled shared-memory
// tiles in the canonical layout wgmma reads, shared-memory matrix descriptors, and
// wgmma.mma_async m64nNk16 (bf16 operands, fp32 accumulation) with A from shared memory or
// from registers. Device code only.
//
// Tiles: a [Rows][Cols] tile of 16-bit elements is stored as Cols/64 "atoms" of [Rows][64]
// (128-byte rows), the 16-byte chunks of each row XOR-swizzled by (row % 8): the 128B swizzle of
// wgmma and TMA. A tile of tokens x features serves both operand majors: K-major when the
// features are the reduction (Q K^T), MN-major when the tokens are (K^T V, P V), so one copy in
// shared memory feeds every product of a chunk.
//
// wgmma exists only in sm_90a code (__CUDA_ARCH_FEAT_SM90_ALL); compiled for any other target the
// wrappers trap, and the kernel table never picks this family there (LASP_SM90A, table.cuh).
#include <cuda_bf16.h>
#include <cstdint>
#include "../sm80/mma.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LASP_WGMMA_AVAILABLE 1
#else
#define LASP_WGMMA_AVAILABLE 0
#endif

#ifndef LASP_SM90_STAGES
#define LASP_SM90_STAGES 3
#endif

LASP_NAMESPACE_BEGIN
namespace kernel::sm90 {

using sm80::smem_u32;

/// Tile buffers of the sm_90 chunk kernels: Stages - 1 chunks load while one computes.
inline constexpr int kSm90Stages = LASP_SM90_STAGES;
#ifndef LASP_SM90_SPLIT
#define LASP_SM90_SPLIT 1
#endif
/// One warpgroup per CTA, the output columns split over CTAs (see FwdOutput).
inline constexpr bool kSm90Split = LASP_SM90_SPLIT != 0;

/// Element offset of (r, c) in a [Rows][Cols] tile stored as 128B-swizzled atoms of 64 columns.
template <int Rows>
struct Atoms {
  LASP_DEVICE static int off(int r, int c) {
    return (c >> 6) * (Rows * 64) + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
  }
};

/// Shared-memory matrix descriptor, 128-byte swizzle. lbo / sbo in bytes (multiples of 16).
LASP_DEVICE std::uint64_t smem_desc(const void* p, std::uint32_t lbo, std::uint32_t sbo) {
  std::uint64_t d = 0;
  d |= std::uint64_t((smem_u32(p) & 0x3FFFF) >> 4);
  d |= std::uint64_t((lbo >> 4) & 0x3FFF) << 16;
  d |= std::uint64_t((sbo >> 4) & 0x3FFF) << 32;
  d |= std::uint64_t(1) << 62;  // 128B swizzle
  return d;
}

/// K-major operand (rows = M or N, columns = the reduction): k-step kk (16 columns) of a
/// [Rows][Cols] atom tile. Inside an atom the k-steps are 32-byte offsets; the 8-row groups are
/// 1024 bytes apart (sbo); lbo is unused with the 128B swizzle.
template <int Rows, class Op>
LASP_DEVICE std::uint64_t desc_k(const Op* tile, int kk) {
  return smem_desc(tile + (kk >> 2) * (Rows * 64) + (kk & 3) * 16, 16, 1024);
}

/// MN-major operand (rows = the reduction, columns = M or N): k-step kk (16 rows) of atom `a`
/// (64 columns) of a [Rows][Cols] atom tile. The 8-row groups along the reduction are 1024 bytes
/// apart (sbo); lbo, the distance between atoms along M/N, is the atom size.
template <int Rows, class Op>
LASP_DEVICE std::uint64_t desc_mn(const Op* tile, int a, int kk) {
  return smem_desc(tile + a * (Rows * 64) + kk * 16 * 64, Rows * 128, 1024);
}

LASP_DEVICE void wg_fence() {
#if LASP_WGMMA_AVAILABLE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
LASP_DEVICE void wg_commit() {
#if LASP_WGMMA_AVAILABLE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
LASP_DEVICE void wg_wait() {
#if LASP_WGMMA_AVAILABLE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/// Shared-memory writes of this thread (st.shared, cp.async) become visible to the async proxy
/// (wgmma operand reads) after this fence and a barrier.
LASP_DEVICE void fence_async_smem() {
#if LASP_WGMMA_AVAILABLE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
LASP_DEVICE void no_wgmma() {
#if !LASP_WGMMA_AVAILABLE && defined(__CUDA_ARCH__)
  __trap();
#endif
}

/// acc[N/8][4] += A (64 x 16) * B (16 x N), bf16, in the accumulator layout of mma.sync per warp
/// (warp w of the warpgroup holds rows 16 w + gid and 16 w + gid + 8; column tile j holds columns
/// 8 j + 2 t4, +1). TA / TB: 1 = the operand is MN-major in shared memory.
template <int N> struct Wgmma;

#define LASP_WG_ACC16(d)                                                                                  \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),   \
      "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), \
      "+f"(d[3][2]), "+f"(d[3][3])
#define LASP_WG_ACC16_HI(d)                                                                               \
  "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]),   \
      "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), \
      "+f"(d[7][2]), "+f"(d[7][3])

template <>
struct Wgmma<64> {
  template <int TA, int TB>
  LASP_DEVICE static void ss(float (&d)[8][4], std::uint64_t a, std::uint64_t b) {
#if LASP_WGMMA_AVAILABLE
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
        " %32, %33, 1, 1, 1, %34, %35;\n"
        : LASP_WG_ACC16(d), LASP_WG_ACC16_HI(d)
        : "l"(a), "l"(b), "n"(TA), "n"(TB));
#else
    (void)d; (void)a; (void)b; no_wgmma();
#endif
  }
  template <int TB>
  LASP_DEVICE static void rs(float (&d)[8][4], const std::uint32_t (&a)[4], std::uint64_t b) {
#if LASP_WGMMA_AVAILABLE
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
        " {%32,%33,%34,%35}, %36, 1, 1, 1, %37;\n"
        : LASP_WG_ACC16(d), LASP_WG_ACC16_HI(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TB));
#else
    (void)d; (void)a; (void)b; no_wgmma();
#endif
  }
};

#undef LASP_WG_ACC16
#undef LASP_WG_ACC16_HI

/// Weights w(k) of the 16 k values of k-step kk that a thread's A fragment holds (k0 + 2 t4,
/// +1, +8, +9): computed once per chunk, used for every row tile.
template <class W>
LASP_DEVICE void a_weights(float (&w)[4], int kk, int lane, W f) {
  const int k0 = 16 * kk + 2 * (lane & 3);
  w[0] = f(k0); w[1] = f(k0 + 1); w[2] = f(k0 + 8); w[3] = f(k0 + 9);
}

/// A fragments (registers) of the transposed tile: rows [m0, m0 + 16) of A = T^T where T is a
/// [Rows][Cols] atom tile (A's k = T's rows), k-step kk, weighted by w (a_weights: exp(G - g_k)
/// for the keys of a state update).
template <int Rows, class Op>
LASP_DEVICE void load_a_trans(std::uint32_t (&a)[4], const Op* t, int m0, int kk, int lane, const float (&w)[4]) {
  const int i8 = lane & 7, mat = lane >> 3;
  sm80::ldmatrix_x4_trans(a, t + Atoms<Rows>::off(16 * kk + i8 + (mat >> 1) * 8, m0 + (mat & 1) * 8));
  float2 x;
  x = sm80::MmaOp<Op>::unpack(a[0]); a[0] = sm80::MmaOp<Op>::pack(x.x * w[0], x.y * w[1]);
  x = sm80::MmaOp<Op>::unpack(a[1]); a[1] = sm80::MmaOp<Op>::pack(x.x * w[0], x.y * w[1]);
  x = sm80::MmaOp<Op>::unpack(a[2]); a[2] = sm80::MmaOp<Op>::pack(x.x * w[2], x.y * w[3]);
  x = sm80::MmaOp<Op>::unpack(a[3]); a[3] = sm80::MmaOp<Op>::pack(x.x * w[2], x.y * w[3]);
}

/// A fragments (registers) of k-step kk from an accumulator of 16 rows x (>= 16 (kk + 1)) columns
/// (the accumulator layout above is the A layout of the next product: FlashAttention's trick).
template <class Op, int NT>
LASP_DEVICE void acc_to_a(std::uint32_t (&a)[4], const float (&acc)[NT][4], int kk) {
  a[0] = sm80::MmaOp<Op>::pack(acc[2 * kk][0], acc[2 * kk][1]);
  a[1] = sm80::MmaOp<Op>::pack(acc[2 * kk][2], acc[2 * kk][3]);
  a[2] = sm80::MmaOp<Op>::pack(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
  a[3] = sm80::MmaOp<Op>::pack(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}

}  // namespace kernel::sm90
LASP_NAMESPACE_END
