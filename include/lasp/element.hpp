#pragma once
// Element types. lasp::bf16 and lasp::fp16 are 16-bit storage types usable from plain C++17
// (host backend, reference, tests); the CUDA backend also accepts __nv_bfloat16 / __half, which
// have the same layout (see lasp.cuh). Arithmetic is always done in fp32 or wider.
#include "config.hpp"
#include <cmath>
#include <cstdint>
#include <cstring>

LASP_NAMESPACE_BEGIN

enum class DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

constexpr const char* to_string(DType t) {
  return t == DType::kF32 ? "fp32" : t == DType::kBF16 ? "bf16" : "fp16";
}

struct bf16 { std::uint16_t bits = 0; };
struct fp16 { std::uint16_t bits = 0; };

inline float to_float(float x) { return x; }
inline float to_float(double x) { return static_cast<float>(x); }
inline float to_float(bf16 x) {
  std::uint32_t u = std::uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_float(fp16 x) {
  // IEEE binary16 -> binary32, subnormals included.
  std::uint32_t sign = (x.bits & 0x8000u) << 16, exp = (x.bits >> 10) & 0x1f, man = x.bits & 0x3ffu;
  std::uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      u = sign | std::uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T> T from_float(float f);
template <> inline float from_float<float>(float f) { return f; }
template <> inline double from_float<double>(float f) { return f; }
template <> inline bf16 from_float<bf16>(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{std::uint16_t((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{std::uint16_t(u >> 16)};
}
template <> inline fp16 from_float<fp16>(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp16{std::uint16_t(sign | 0x7e00u)};
  if (a >= 0x477ff000u) return fp16{std::uint16_t(sign | 0x7c00u)};  // overflow -> inf
  if (a < 0x38800000u) {  // subnormal or zero in fp16
    float af;
    std::memcpy(&af, &a, 4);
    // 2^-24 is the fp16 subnormal unit; nearbyint rounds half to even in the default mode.
    return fp16{std::uint16_t(sign | std::uint16_t(std::nearbyint(af * 16777216.0f)))};
  }
  std::uint32_t r = a + 0xfffu + ((a >> 13) & 1u);  // round to nearest even on the 13 dropped bits
  return fp16{std::uint16_t(sign | ((r - 0x38000000u) >> 13))};
}

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::kF32; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::kBF16; };
template <> struct dtype_of<fp16> { static constexpr DType value = DType::kF16; };
template <class T> struct dtype_of<const T> : dtype_of<T> {};

LASP_NAMESPACE_END
