#pragma once
// Checking mode for device communicators (comm::Nccl, comm::DeviceSingle): do all SP ranks
// agree on the problem? See check.hpp for the fingerprint and the host version.
//
//   lasp::comm::Nccl comm(sp_comm);
//   float* scratch;  // device memory, check_peers_scratch_floats(comm.size()) floats
//   cudaMalloc(&scratch, lasp::comm::check_peers_scratch_floats(comm.size()) * sizeof(float));
//   lasp::Status st = lasp::comm::check_peers<P, __nv_bfloat16>(shape, comm, scratch, stream);
//   // st is the same on every rank: kSuccess, kPeerMismatch, kSpSizeMismatch or an error.
//
// Unlike forward/backward this SYNCHRONISES `stream` (it reads the gathered fingerprints back to
// the host; while waiting it polls the communicator for asynchronous errors when it has a
// check() member, as comm::Nccl does). Call it once at set-up, on every rank of the SP group:
// it is a collective, so a rank that skips it leaves the others waiting. It allocates no device
// memory (the caller's scratch), only a few host floats.
#include "../config.hpp"
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#include "check.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

namespace detail {
/// Element code of T, with CUDA's 16-bit types mapped onto lasp::bf16 / lasp::fp16's codes.
template <class T>
constexpr int device_elem_code() {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, __nv_bfloat16>) return int(DType::kBF16);
  else if constexpr (std::is_same_v<U, __half>) return int(DType::kF16);
  else return elem_code<U>::value;
}

template <class C, class = void>
struct has_check : std::false_type {};
template <class C>
struct has_check<C, std::void_t<decltype(std::declval<const C&>().check())>> : std::true_type {};
}  // namespace detail

/// Device scratch (floats) that check_peers needs on a communicator of `comm_size` ranks: this
/// rank's fingerprint followed by the gathered ones.
constexpr std::size_t check_peers_scratch_floats(int comm_size) {
  return kFingerprintFloats * std::size_t(1 + (comm_size > 0 ? comm_size : 0));
}

/// Checking mode for device communicators. `d_scratch`: device memory of at least
/// check_peers_scratch_floats(comm.size()) floats on the communicator's GPU, 16-byte aligned.
/// Returns, identically on every rank: kSuccess; kPeerMismatch when ranks differ in B, N, H, D,
/// E, R, element type, policies or lasp version; kSpSizeMismatch when they agree on an R that is
/// not the communicator size. kCommError / kCudaError when the all-gather or a copy fails (then
/// ranks may disagree). kNullPointer for a null scratch (without communicating: pass one on
/// every rank). Synchronises `stream`.
template <class Policy, class T, class Comm>
[[nodiscard]] Status check_peers(const Shape& shape, Comm& comm, float* d_scratch, cudaStream_t stream) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  static_assert(Comm::kDeviceMemory, "Host communicators: use check_peers(shape, comm) of <lasp/comm/check.hpp>.");
  if (!d_scratch) return Status::kNullPointer;
  const int R = comm.size();
  if (R < 1) return Status::kCommError;
  const std::vector<float> mine = fingerprint<Policy>(shape, R, detail::device_elem_code<T>(), sizeof(T));
  std::vector<float> all(kFingerprintFloats * std::size_t(R));
  float* d_mine = d_scratch;
  float* d_all = d_scratch + kFingerprintFloats;
  if (cudaMemcpyAsync(d_mine, mine.data(), kFingerprintFloats * sizeof(float), cudaMemcpyHostToDevice, stream) !=
      cudaSuccess)
    return Status::kCudaError;
  LASP_RETURN_IF_ERROR(comm.all_gather(d_mine, d_all, kFingerprintFloats, stream));
  if (cudaMemcpyAsync(all.data(), d_all, all.size() * sizeof(float), cudaMemcpyDeviceToHost, stream) != cudaSuccess)
    return Status::kCudaError;
  // Wait, polling the communicator: a peer that died must not hang this rank silently.
  for (;;) {
    const cudaError_t q = cudaStreamQuery(stream);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) return Status::kCudaError;
    if constexpr (detail::has_check<Comm>::value) LASP_RETURN_IF_ERROR(comm.check());
    std::this_thread::yield();
  }
  return compare_fingerprints(all.data(), R, shape, R);
}

}  // namespace comm
LASP_NAMESPACE_END
