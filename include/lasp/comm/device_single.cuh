#pragma once
// The single-device communicator: SP size 1, device memory, a CUDA stream.
#include "../config.hpp"
#include <cuda_runtime.h>
#include "concept.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

struct DeviceSingle {
  using stream_type = cudaStream_t;
  static constexpr bool kDeviceMemory = true;
  int rank() const { return 0; }
  int size() const { return 1; }
  Status send(const float*, std::size_t, int, cudaStream_t) { return Status::kCommError; }
  Status recv(float*, std::size_t, int, cudaStream_t) { return Status::kCommError; }
  Status all_gather(const float* s, float* r, std::size_t n, cudaStream_t st) {
    if (s != r && cudaMemcpyAsync(r, s, n * sizeof(float), cudaMemcpyDeviceToDevice, st) != cudaSuccess)
      return Status::kCudaError;
    return Status::kSuccess;
  }
};

}  // namespace comm
LASP_NAMESPACE_END
