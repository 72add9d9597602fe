#pragma once
// Device-side checks (gate values) cannot return a status without synchronising; they record a
// verdict in the reserve's header (driver/layout.hpp, slot kDeviceStatus) and the kernels that
// write outputs skip their work. deferred_status reads it back.
#include <cuda_runtime.h>
#include <cstdint>
#include "../../driver/layout.hpp"
#include "launch.cuh"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

/// The verdict of the device-side checks of the last forward or backward on `ws` (synchronises
/// `stream`): kSuccess, kNotForwarded (backward got a reserve that no forward of the same
/// tensors filled: nothing was written) or kInvalidDecay (a gate value > 0 or not finite).
[[nodiscard]] inline Status deferred_status(const Workspace& ws, cudaStream_t stream) {
  if (!ws.ptr || ws.bytes < kRegionAlign) return Status::kWorkspaceTooSmall;
  std::uint32_t v = 0;
  LASP_CUDA_TRY(cudaMemcpyAsync(&v, static_cast<const std::uint32_t*>(ws.ptr) + driver::kDeviceStatus, sizeof v,
                                cudaMemcpyDeviceToHost, stream));
  LASP_CUDA_TRY(cudaStreamSynchronize(stream));
  if (v & 1u) return Status::kInvalidDecay;  // the root cause when both are set (no forward completed)
  return v & 2u ? Status::kNotForwarded : Status::kSuccess;
}

}  // namespace backend::cuda

/// The public name (lasp 0.1 and on).
namespace cuda {
using backend::cuda::deferred_status;
}  // namespace cuda

LASP_NAMESPACE_END
