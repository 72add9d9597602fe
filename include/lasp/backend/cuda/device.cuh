#pragma once
// What the CUDA backend needs to know of the current device, queried once per device and
// cached (cudaDeviceGetAttribute: no synchronisation): compute capability, SM count (the segment
// split) and the shared memory a block may opt in to (what a kernel can run with).
#include <cuda_runtime.h>
#include <atomic>
#include <cstddef>
#include <mutex>
#include "../../config.hpp"
#include "../../status.hpp"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

struct DeviceInfo {
  int id = 0;
  int major = 9, minor = 0;
  int sm_count = 132;              // H100/H200: the figure sizes take when no device answers
  std::size_t smem_optin = 232448; // bytes of shared memory per block with the opt-in attribute
};

namespace detail {
inline constexpr int kMaxDevices = 64;
struct DeviceCache {
  std::atomic<bool> ready[kMaxDevices] = {};
  DeviceInfo info[kMaxDevices];
  std::mutex fill;  // taken only on a device's first query
};
inline DeviceCache& device_cache() {
  static DeviceCache c;
  return c;
}
}  // namespace detail

/// The current device's figures. kCudaError if the runtime cannot tell (no device).
inline Status current_device(DeviceInfo* out) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    LASP_ON_ERROR(Status::kCudaError, "cudaGetDevice", __FILE__, __LINE__);
    return Status::kCudaError;
  }
  auto& c = detail::device_cache();
  if (dev >= 0 && dev < detail::kMaxDevices && c.ready[dev].load(std::memory_order_acquire)) {
    *out = c.info[dev];
    return Status::kSuccess;
  }
  DeviceInfo d;
  d.id = dev;
  int smem = 0;
  if (cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    LASP_ON_ERROR(Status::kCudaError, "cudaDeviceGetAttribute", __FILE__, __LINE__);
    return Status::kCudaError;
  }
  d.smem_optin = std::size_t(smem);
  if (dev >= 0 && dev < detail::kMaxDevices) {
    std::lock_guard<std::mutex> lk(c.fill);
    if (!c.ready[dev].load(std::memory_order_relaxed)) {
      c.info[dev] = d;
      c.ready[dev].store(true, std::memory_order_release);
    }
  }
  *out = d;
  return Status::kSuccess;
}

}  // namespace backend::cuda
LASP_NAMESPACE_END
