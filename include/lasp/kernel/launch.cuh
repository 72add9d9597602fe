#pragma once
// The one __global__ entry point of lasp. Every kernel is a class (the CUTLASS shape):
//   using Params = ...;              passed by value
//   struct SharedStorage { ... };    dynamic shared memory the kernel needs (may be empty)
//   static constexpr int kThreads;   threads per block
//   static dim3 grid(const Params&); the grid for these parameters
//   __device__ static void run(const Params&, unsigned char* smem);
// and the backend launches entry<K> (backend/cuda/launch.cuh), which checks what the device can
// run (shared memory, grid limits) before it launches.
#include <cuda_runtime.h>
#include "../config.hpp"

LASP_NAMESPACE_BEGIN
namespace kernel {

template <class K>
__global__ void __launch_bounds__(K::kThreads) entry(const typename K::Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  K::run(p, smem);
}

/// For kernels that need no shared memory of their own.
struct NoSharedStorage {};

}  // namespace kernel
LASP_NAMESPACE_END
