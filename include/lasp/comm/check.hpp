#pragma once
// Checking mode: do all SP ranks agree on the problem? (plain C++17; the device-memory version
// for CUDA communicators is in check.cuh).
//
// Every rank builds a fingerprint of what it is about to run (shape B, N, H, D, E, R, the
// communicator size, the element type, the policies and the lasp version), all-gathers it
// through the communicator, and compares all of them. All ranks see the same gathered data, so
// they all return the same status: kPeerMismatch if any two ranks differ, N included (for
// groups whose ranks hold different N, lasp::make_plan (plan.hpp) checks everything else and
// also fixes the schedule for the group). Meant for set-up, not for the hot path.
//
//   lasp::comm::HostGroup group(R);   // ranks as threads, each running:
//   auto comm = group.comm(r);
//   lasp::Status st = lasp::comm::check_peers<P, lasp::bf16>(shape, comm);  // same status on every rank
//
// The fingerprint is a vector of floats, each an integer chunk of 16 bits (exact in fp32), so it
// travels through any float communicator unchanged.
#include "../config.hpp"
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>
#include "../element.hpp"
#include "../policy/policy.hpp"
#include "../status.hpp"
#include "../tensor.hpp"
#include "../version.hpp"
#include "concept.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

namespace detail {

/// 64-bit FNV-1a of a string (stable across processes and platforms, unlike std::hash).
inline std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

/// The element-type code of T: lasp::DType of lasp's types, 15 for others (check.cuh maps CUDA's
/// __nv_bfloat16 / __half onto the codes of lasp::bf16 / lasp::fp16).
template <class T, class = void>
struct elem_code { static constexpr int value = 15; };
template <class T>
struct elem_code<T, std::void_t<decltype(dtype_of<std::remove_const_t<T>>::value)>> {
  static constexpr int value = int(dtype_of<std::remove_const_t<T>>::value);
};

}  // namespace detail

/// Number of 64-bit fields in a fingerprint, and floats it takes (4 x 16-bit chunks per field).
inline constexpr int kFingerprintFields = 12;
inline constexpr std::size_t kFingerprintFloats = std::size_t(kFingerprintFields) * 4;

/// The fingerprint of (Policy, element code, shape) on a communicator of `comm_size` ranks.
template <class Policy>
std::vector<float> fingerprint(const Shape& s, int comm_size, int elem_code, std::size_t elem_size) {
  const std::uint64_t fields[kFingerprintFields] = {
      0x4c415350u,  // "LASP"
      std::uint64_t(kVersionMajor) << 32 | std::uint64_t(kVersionMinor) << 16 | std::uint64_t(kVersionPatch),
      std::uint64_t(s.B), std::uint64_t(s.N), std::uint64_t(s.H), std::uint64_t(s.D), std::uint64_t(s.E),
      std::uint64_t(std::int64_t(s.R)), std::uint64_t(std::int64_t(comm_size)), std::uint64_t(elem_code),
      std::uint64_t(elem_size), detail::fnv1a(describe<Policy>())};
  std::vector<float> f(kFingerprintFloats);
  for (int i = 0; i < kFingerprintFields; ++i)
    for (int c = 0; c < 4; ++c) f[std::size_t(4 * i + c)] = float((fields[i] >> (16 * c)) & 0xffffu);
  return f;
}

/// kPeerMismatch unless all `R` fingerprints in `gathered` (R x kFingerprintFloats) are equal;
/// then kSpSizeMismatch if the (agreed) shape.R differs from the communicator size, else kSuccess.
inline Status compare_fingerprints(const float* gathered, int R, const Shape& s, int comm_size) {
  for (int r = 1; r < R; ++r)
    for (std::size_t i = 0; i < kFingerprintFloats; ++i)
      if (gathered[std::size_t(r) * kFingerprintFloats + i] != gathered[i]) return Status::kPeerMismatch;
  return s.R == comm_size ? Status::kSuccess : Status::kSpSizeMismatch;
}

/// Checking mode for host communicators (comm::HostSingle, comm::HostGroup): call on every rank
/// of the SP group, once, at set-up. Same status on every rank: kPeerMismatch when ranks differ
/// in B, N, H, D, E, R, element type, policies or lasp version; kSpSizeMismatch when they agree
/// on an R that is not the communicator size; kCommError if the all-gather fails.
template <class Policy, class T, class Comm>
[[nodiscard]] Status check_peers(const Shape& shape, Comm& comm) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  static_assert(!Comm::kDeviceMemory,
                "Device communicators: use check_peers(shape, comm, device_scratch, stream) of <lasp/comm/check.cuh>.");
  const int R = comm.size();
  const std::vector<float> mine =
      fingerprint<Policy>(shape, R, detail::elem_code<T>::value, sizeof(T));
  std::vector<float> all(kFingerprintFloats * std::size_t(R > 0 ? R : 1));
  LASP_RETURN_IF_ERROR(comm.all_gather(mine.data(), all.data(), kFingerprintFloats, typename Comm::stream_type{}));
  return compare_fingerprints(all.data(), R, shape, R);
}

}  // namespace comm
LASP_NAMESPACE_END
