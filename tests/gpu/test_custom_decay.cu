// The newcomer test of the decay interface on the GPU: tests/common/tensor_slopes.hpp (per-head
// slopes in DEVICE memory, read by the kernels through the scheme's Chunk hook) runs through the
// CUDA backend unchanged and gives bit-for-bit the outputs of decay::PerHead (slopes passed by
// value) on the same inputs, with each CTA walking many chunks (two segments per (b,h)).
#include <doctest/doctest.h>
#include <lasp/lasp.cuh>
#include <cstring>
#include <string>
#include "../common/device.hpp"
#include "../common/tensor_slopes.hpp"

using namespace lasp_test;

TEST_CASE("gpu: a decay scheme defined outside lasp matches decay::PerHead bit for bit") {
  using Tile = lasp::tile::Tile<64, 4, 2>;
  using Head = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Recompute, Tile>;
  using Custom = lasp::Policy<TensorSlopes, lasp::schedule::Chain, lasp::caching::Recompute, Tile>;
  const lasp::index_t dims[][3] = {{3000, 64, 128}, {1000, 128, 128}};  // N, D, E
  for (const auto& de : dims) {
    ProblemSpec s;
    s.B = 2; s.N = de[0]; s.H = 3; s.D = de[1]; s.E = de[2]; s.seed = 77;
    s.initial_state = true; s.final_state = true;
    GlobalProblem<lasp::bf16> hp(s);
    lasp::comm::DeviceSingle comm;
    decltype(hp.o_buf) o[2], dq[2], dk[2], dv[2];
    decltype(hp.final_buf) fin[2], dinit[2];
    DeviceBuf<float> slopes(hp.slopes);
    for (int which = 0; which < 2; ++which) {
      DeviceProblem<lasp::bf16> dp(hp);
      const std::size_t wsb = which == 0 ? lasp::workspace_size<Head, lasp::bf16>(hp.shape(), comm)
                                         : lasp::workspace_size<Custom, lasp::bf16>(hp.shape(), comm);
      DeviceBuf<unsigned char> ws(wsb);
      const lasp::Workspace w{ws.ptr, wsb};
      lasp::Status sf, sb;
      if (which == 0) {
        sf = lasp::forward<Head>(dp.template forward_args<lasp::decay::PerHead>(0), comm, w, nullptr);
        sb = lasp::backward<Head>(dp.template backward_args<lasp::decay::PerHead>(0), comm, w, nullptr);
      } else {
        auto fa = dp.template forward_args<TensorSlopes>(0);
        auto ba = dp.template backward_args<TensorSlopes>(0);
        fa.decay = {slopes.ptr};  // device memory
        ba.decay = {slopes.ptr};
        sf = lasp::forward<Custom>(fa, comm, w, nullptr);
        sb = lasp::backward<Custom>(ba, comm, w, nullptr);
      }
      INFO("which=", which, " forward: ", std::string(lasp::to_string(sf)), " backward: ",
           std::string(lasp::to_string(sb)), " last CUDA error: ", std::string(cudaGetErrorString(cudaPeekAtLastError())));
      REQUIRE(sf == lasp::Status::kSuccess);
      REQUIRE(sb == lasp::Status::kSuccess);
      LASP_TEST_CUDA(cudaDeviceSynchronize());
      dp.download();
      o[which] = hp.o_buf; dq[which] = hp.dq_buf; dk[which] = hp.dk_buf; dv[which] = hp.dv_buf;
      fin[which] = hp.final_buf; dinit[which] = hp.dinit_buf;
    }
    auto same = [](const auto& a, const auto& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
    };
    INFO("N=", s.N, " D=", s.D, " E=", s.E);
    CHECK(same(o[0], o[1]));
    CHECK(same(dq[0], dq[1]));
    CHECK(same(dk[0], dk[1]));
    CHECK(same(dv[0], dv[1]));
    CHECK(same(fin[0], fin[1]));
    CHECK(same(dinit[0], dinit[1]));
    // And the outputs are right, not merely equal.
    const RefResult ref = run_reference<lasp::decay::PerHead>(hp);
    CHECK(rel_err(hp.o(), ref.o) < 1.6e-2);
    CHECK(rel_err(hp.dk(), ref.dk) < 1.6e-2);
  }
}
