#pragma once
// Device-side verdicts cannot return a status without synchronising: the checks of gate values
// on this rank, and the agreement of a call that another rank of the SP group refused
// (driver.hpp). They are recorded in the reserve's header (driver/layout.hpp, slot
// kDeviceStatus) and the kernels that write outputs skip their work. deferred_status reads it.
#include <cuda_runtime.h>
#include <cstdint>
#include "../../driver/layout.hpp"
#include "launch.cuh"

LASP_NAMESPACE_BEGIN
namespace backend::cuda {

/// The device-side verdict of the last forward or backward on `ws` (synchronises `stream`):
/// kSuccess; the status a rank of the SP group refused that call with (the same on every rank
/// that took part); else kInvalidDecay for a bad gate value on this rank, or kNotForwarded for a
/// backward whose reserve no forward of the same tensors filled (nothing was written).
[[nodiscard]] inline Status deferred_status(const Workspace& ws, cudaStream_t stream) {
  if (!ws.ptr || ws.bytes < kRegionAlign) return Status::kWorkspaceTooSmall;
  std::uint32_t v = 0;
  LASP_CUDA_TRY(cudaMemcpyAsync(&v, static_cast<const std::uint32_t*>(ws.ptr) + driver::kDeviceStatus, sizeof v,
                                cudaMemcpyDeviceToHost, stream));
  LASP_CUDA_TRY(cudaStreamSynchronize(stream));
  return driver::decode_verdict(v);
}

}  // namespace backend::cuda

/// The public name (lasp 0.1 and on).
namespace cuda {
using backend::cuda::deferred_status;
}  // namespace cuda

LASP_NAMESPACE_END
