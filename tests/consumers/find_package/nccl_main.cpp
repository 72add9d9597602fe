// Packaging test: lasp::nccl from the installed package brings nccl.h, libnccl and the CUDA
// runtime to a plain C++ consumer. ncclGetVersion needs no GPU.
#include <lasp/lasp.hpp>
#include <nccl.h>

#include <cstdio>

int main() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess || version <= 0) return 1;
  std::printf("lasp::nccl consumer: NCCL %d, %s\n", version,
              lasp::to_string(lasp::Status::kSuccess));
  return 0;
}
