// Multi-GPU suite entry: one process drives every visible GPU (one thread per rank, NCCL
// communicators from ncclCommInitAll / ncclCommSplit). Reports "skipped" (exit 77, CTest
// SKIP_RETURN_CODE) with its reason when no GPU is visible, instead of passing silently or
// failing. With one GPU only the "1-GPU groups" cases run (R ranks as threads on that GPU over
// comm::DeviceGroup); the NCCL cases print their own skip message with the GPUs they need.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  // NVLink multicast (NVLS) stays off on these machines unless the user decided otherwise.
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n < 1) {
    std::printf("lasp multi-GPU suite: skipped (needs a CUDA device, found %d%s%s)\n", e == cudaSuccess ? n : 0,
                e == cudaSuccess ? "" : ": ", e == cudaSuccess ? "" : cudaGetErrorString(e));
    return 77;
  }
  int nccl = 0;
  ncclGetVersion(&nccl);
  std::printf("lasp multi-GPU suite: %d GPUs, NCCL %d, NCCL_NVLS_ENABLE=%s\n", n, nccl, std::getenv("NCCL_NVLS_ENABLE"));
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, d);
    std::printf("  device %d: %s (sm_%d%d)\n", d, prop.name, prop.major, prop.minor);
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
