#pragma once
// Launching a kernel class (kernel/launch.cuh) and turning CUDA failures into Status. The only
// place in lasp that launches kernels. A launch checks what the device can run first (shared
// memory, grid limits), raises the kernel's shared-memory limit once per device, and reports
// the result of its own launch (cudaLaunchKernel's return value), never an unrelated error left
// on the thread by earlier work.
#include <cuda_runtime.h>
#include <atomic>
#include <cstddef>
#include <type_traits>
#include "../../kernel/launch.cuh"
#include "../../status.hpp"
#include "device.cuh"

// Evaluate a cudaError_t expression; on failure call LASP_ON_ERROR and return kCudaError.
#ifndef LASP_CUDA_TRY
#define LASP_CUDA_TRY(expr)                                                  \
  do {                                                                       \
    const cudaError_t lasp_cuda_error_ = (expr);                             \
    if (lasp_cuda_error_ != cudaSuccess) {                                   \
      LASP_ON_ERROR(::lasp::Status::kCudaError, #expr, __FILE__, __LINE__);  \
      return ::lasp::Status::kCudaError;                                     \
    }                                                                        \
  } while (0)
#endif

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

template <class K>
constexpr std::size_t smem_bytes() {
  return std::is_empty_v<typename K::SharedStorage> ? 0 : sizeof(typename K::SharedStorage);
}

/// Can the device run K with these parameters? kUnsupportedDevice (shared memory) or
/// kInvalidShape (grid beyond the device's limits), else kSuccess.
template <class K>
Status can_launch(const typename K::Params& p, const DeviceInfo& dev) {
  if (smem_bytes<K>() > dev.smem_optin) return Status::kUnsupportedDevice;
  const dim3 g = K::grid(p);
  if (g.y > 65535u || g.z > 65535u) return Status::kInvalidShape;
  return Status::kSuccess;
}

/// Raise the dynamic shared-memory limit of `func` (a kernel K's entry) on device `dev` (needed
/// above 48 KB), once per device and entry. Keyed by the entry's address, not only by K: nvcc
/// gives each translation unit its own host stub and module for a template kernel, so the same K
/// launched from two .cu files of one program is two functions, each needing the attribute.
template <class K>
Status opt_in_smem(const void* func, int dev) {
  static std::atomic<const void*> done[detail::kMaxDevices] = {};
  const bool cached = dev >= 0 && dev < detail::kMaxDevices;
  if (cached && done[dev].load(std::memory_order_acquire) == func) return Status::kSuccess;
  LASP_CUDA_TRY(cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes<K>())));
  if (cached) done[dev].store(func, std::memory_order_release);
  return Status::kSuccess;
}

/// Launch K on `stream`. `dev` describes the current device (needed when K has shared storage).
/// Define LASP_DEBUG_SYNC to synchronise after every launch (like CUB_DEBUG_SYNC).
template <class K>
Status launch(const typename K::Params& p, cudaStream_t stream, const DeviceInfo& dev = {}) {
  constexpr std::size_t smem = smem_bytes<K>();
  const void* func = reinterpret_cast<const void*>(&kernel::entry<K>);
  if constexpr (smem > 0) {
    LASP_RETURN_IF_ERROR(can_launch<K>(p, dev));
    LASP_RETURN_IF_ERROR(opt_in_smem<K>(func, dev.id));
  }
  void* args[] = {const_cast<void*>(static_cast<const void*>(&p))};
  LASP_CUDA_TRY(cudaLaunchKernel(func, K::grid(p), dim3(K::kThreads), args, smem, stream));
#ifdef LASP_DEBUG_SYNC
  LASP_CUDA_TRY(cudaStreamSynchronize(stream));
#endif
  return Status::kSuccess;
}

}  // namespace backend::cuda
LASP_NAMESPACE_END
