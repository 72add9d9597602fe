// Output digests: runs forward + backward on the benchmark shapes (and small shapes with states,
// tails, every decay, bf16/fp16/fp32, both caching policies) with deterministic inputs and prints
// one 64-bit FNV-1a hash of every output's bytes per case. Two builds that print the same lines
// compute bit-identical results: a refactor is checked by building this one source against the
// headers before and after it (scripts/bitcheck.sh) and diffing the output on the same GPU.
// Uses only the public API of lasp 0.1 and later.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <lasp/lasp.cuh>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>
#include "../examples/cuda_utils.cuh"

namespace {

using lasp::index_t;

template <class T>
__global__ void fill(T* p, std::size_t n, unsigned seed, float lo, float hi) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    unsigned x = unsigned(i) * 2654435761u ^ seed;
    x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
    const float f = lo + (hi - lo) * float(x & 0xffff) / 65536.f;
    if constexpr (std::is_same_v<T, float>) p[i] = f;
    else if constexpr (std::is_same_v<T, __half>) p[i] = __float2half(f);
    else p[i] = __float2bfloat16(f);
  }
}

template <class T>
T* alloc(std::size_t n, unsigned seed, float lo, float hi) {
  T* p = nullptr;
  LASP_EXAMPLE_CUDA(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)));
  fill<<<512, 256>>>(p, n, seed, lo, hi);
  return p;
}

std::uint64_t fnv(std::uint64_t h, const void* dev, std::size_t bytes) {
  std::vector<unsigned char> b(bytes);
  LASP_EXAMPLE_CUDA(cudaMemcpy(b.data(), dev, bytes, cudaMemcpyDeviceToHost));
  for (unsigned char c : b) h = (h ^ c) * 1099511628211ull;
  return h;
}

template <class T, class Policy>
void run(const char* name, index_t B, index_t N, index_t H, index_t D, index_t E, bool states) {
  using Decay = typename Policy::Decay;
  const lasp::Shape shape{B, N, H, D, E, 1};
  const std::size_t nq = std::size_t(B * N * H * D), nv = std::size_t(B * N * H * E), ng = std::size_t(B * N * H),
                    ns = std::size_t(B * H * D * E);
  T *q = alloc<T>(nq, 1, -1, 1), *k = alloc<T>(nq, 2, -1, 1), *v = alloc<T>(nv, 3, -1, 1), *dout = alloc<T>(nv, 4, -1, 1);
  T *o = alloc<T>(nv, 5, 0, 0), *dq = alloc<T>(nq, 6, 0, 0), *dk = alloc<T>(nq, 7, 0, 0), *dv = alloc<T>(nv, 8, 0, 0);
  float *g = alloc<float>(ng, 9, -0.2f, -1e-3f), *dg = alloc<float>(ng, 10, 0, 0);
  float *init = alloc<float>(ns, 11, -1, 1), *dfin = alloc<float>(ns, 12, -1, 1);
  float *fin = alloc<float>(ns, 13, 0, 0), *dinit = alloc<float>(ns, 14, 0, 0);
  std::vector<float> slopes(static_cast<std::size_t>(H));
  for (index_t h = 0; h < H; ++h) slopes[std::size_t(h)] = std::exp2(-8.f * float(h + 1) / float(H));
  typename Decay::Params dp{};
  if constexpr (std::is_same_v<Decay, lasp::decay::PerHead>) dp = {slopes.data()};
  if constexpr (std::is_same_v<Decay, lasp::decay::Gate>) dp = {lasp::gates_token_major(static_cast<const float*>(g), N, H)};
  lasp::comm::DeviceSingle comm;
  const std::size_t wsb = lasp::workspace_size<Policy, T>(shape, comm);
  void* ws = nullptr;
  LASP_EXAMPLE_CUDA(cudaMalloc(&ws, wsb));
  lasp::ForwardArgs<T, Decay> fa{};
  fa.shape = shape;
  fa.q = lasp::token_major<const T>(q, N, H, D);
  fa.k = lasp::token_major<const T>(k, N, H, D);
  fa.v = lasp::token_major<const T>(v, N, H, E);
  fa.o = lasp::token_major(o, N, H, E);
  fa.scale = 1.f / std::sqrt(float(D));
  fa.decay = dp;
  if (states) { fa.initial_state = init; fa.final_state = fin; }
  lasp::BackwardArgs<T, Decay> ba{};
  ba.shape = shape; ba.q = fa.q; ba.k = fa.k; ba.v = fa.v;
  ba.dout = lasp::token_major<const T>(dout, N, H, E);
  ba.dq = lasp::token_major(dq, N, H, D); ba.dk = lasp::token_major(dk, N, H, D); ba.dv = lasp::token_major(dv, N, H, E);
  ba.scale = fa.scale; ba.decay = dp;
  if constexpr (Decay::kHasGradient) ba.dg = lasp::gates_token_major(dg, N, H);
  if (states) { ba.d_final_state = dfin; ba.d_initial_state = dinit; }
  const lasp::Workspace w{ws, wsb};
  const lasp::Status sf = lasp::forward<Policy>(fa, comm, w, nullptr);
  const lasp::Status sb = sf == lasp::Status::kSuccess ? lasp::backward<Policy>(ba, comm, w, nullptr) : sf;
  LASP_EXAMPLE_CUDA(cudaDeviceSynchronize());
  std::uint64_t h = 1469598103934665603ull;
  h = fnv(h, o, nv * sizeof(T));
  h = fnv(h, dq, nq * sizeof(T));
  h = fnv(h, dk, nq * sizeof(T));
  h = fnv(h, dv, nv * sizeof(T));
  if (Decay::kHasGradient) h = fnv(h, dg, ng * sizeof(float));
  if (states) { h = fnv(h, fin, ns * sizeof(float)); h = fnv(h, dinit, ns * sizeof(float)); }
  std::printf("%-28s %-50s %-8s %016llx\n", name, lasp::describe<Policy>().c_str(), lasp::to_string(sb),
              static_cast<unsigned long long>(h));
  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)dout, (void*)o, (void*)dq, (void*)dk, (void*)dv, (void*)g,
                  (void*)dg, (void*)init, (void*)dfin, (void*)fin, (void*)dinit, ws})
    cudaFree(p);
}

using bf = __nv_bfloat16;
using None = lasp::Policy<lasp::decay::None>;
using Head = lasp::Policy<lasp::decay::PerHead>;
using Gate = lasp::Policy<lasp::decay::Gate>;
using HeadCache = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Cache>;
using GateCache = lasp::Policy<lasp::decay::Gate, lasp::schedule::Chain, lasp::caching::Cache>;

}  // namespace

int main() {
  cudaDeviceProp prop{};
  LASP_EXAMPLE_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s\n", prop.name);
  // The benchmark shapes (performance.md).
  run<bf, Head>("S32K", 1, 32768, 16, 128, 128, false);
  run<bf, Head>("S128K", 1, 131072, 16, 128, 128, false);
  run<bf, Head>("S8K-B4", 4, 8192, 32, 128, 128, false);
  run<bf, Head>("S32K-d64", 1, 32768, 32, 64, 64, false);
  run<bf, Head>("N4K", 1, 4096, 16, 128, 128, false);
  run<bf, None>("S32K", 1, 32768, 16, 128, 128, false);
  run<bf, Gate>("S32K", 1, 32768, 16, 128, 128, false);
  run<bf, HeadCache>("S32K", 1, 32768, 16, 128, 128, false);
  // Tails, D != E, B > 1, states, every decay and element type.
  const index_t dims[][2] = {{64, 128}, {128, 64}, {64, 64}, {128, 128}};
  for (auto& de : dims) {
    const std::string n = "tail-D" + std::to_string(de[0]) + "-E" + std::to_string(de[1]);
    run<bf, None>(n.c_str(), 2, 3000, 3, de[0], de[1], true);
    run<bf, Head>(n.c_str(), 2, 3000, 3, de[0], de[1], true);
    run<bf, Gate>(n.c_str(), 2, 3000, 3, de[0], de[1], true);
  }
  run<__half, Head>("tail-fp16", 2, 3001, 3, 64, 128, true);
  run<__half, Gate>("tail-fp16", 2, 3001, 3, 64, 128, true);
  run<float, Head>("tail-fp32", 2, 2999, 3, 128, 64, true);
  run<float, GateCache>("tail-fp32", 2, 2999, 3, 128, 64, true);
  run<bf, GateCache>("long-B1H2", 1, 20000, 2, 128, 128, true);
  return 0;
}
