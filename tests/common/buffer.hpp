#pragma once
// Host buffers for lasp's tests: 64-byte aligned storage (std::vector only guarantees alignof(T)),
// poisoning and bit-exact snapshots. Plain C++17, no test framework.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

namespace lasp_test {

template <class T, std::size_t Align = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(Align))); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(Align)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, Align>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const AlignedAllocator<U, Align>&) const noexcept { return false; }
};

/// A std::vector whose data() is 64-byte aligned (so views into it pass lasp's 16-byte rule).
template <class T>
using AlignedVec = std::vector<T, AlignedAllocator<T>>;

/// Byte pattern 0xFF: a NaN in fp32, bf16 and fp16 alike. Outputs are poisoned with it before a
/// call so that an element the library forgot to write shows up as NaN.
constexpr unsigned char kNaNByte = 0xFF;
/// A finite sentinel pattern (0x5A5A5A5A = 1.5e16f) for buffers that must not be written at all.
constexpr unsigned char kSentinelByte = 0x5A;

template <class V>
void fill_bytes(V& v, unsigned char byte) {
  if (!v.empty()) std::memset(static_cast<void*>(v.data()), byte, v.size() * sizeof(v[0]));
}
template <class V>
void poison(V& v) { fill_bytes(v, kNaNByte); }

/// Bit-exact copy of a buffer's bytes.
template <class V>
std::vector<unsigned char> snapshot(const V& v) {
  std::vector<unsigned char> s(v.size() * sizeof(v[0]));
  if (!s.empty()) std::memcpy(s.data(), static_cast<const void*>(v.data()), s.size());
  return s;
}
template <class V>
bool unchanged(const V& v, const std::vector<unsigned char>& snap) {
  return snap.size() == v.size() * sizeof(v[0]) &&
         (snap.empty() || std::memcmp(snap.data(), static_cast<const void*>(v.data()), snap.size()) == 0);
}
/// True when every element of the buffer still holds the byte pattern `byte`.
template <class V>
bool all_bytes(const V& v, unsigned char byte) {
  const auto* p = reinterpret_cast<const unsigned char*>(v.data());
  for (std::size_t i = 0; i < v.size() * sizeof(v[0]); ++i)
    if (p[i] != byte) return false;
  return true;
}

}  // namespace lasp_test
