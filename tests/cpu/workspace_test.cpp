// The workspace split (workspace.hpp): a per-layer reserve kept from forward to backward and a
// scratch region that may be another one at every call. Results equal the one-buffer form bit for
// bit; sizes and overlaps are checked.
#include <cstring>
#include "support.hpp"

using namespace lasp_test;

namespace {

template <class V>
bool same(const V& a, const V& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
}

template <class Policy>
void split_equals_single(int R, std::uint32_t seed) {
  ProblemSpec s;
  s.B = 2; s.N = 37; s.H = 3; s.D = 8; s.E = 12; s.R = R; s.seed = seed;
  s.initial_state = true; s.final_state = true;
  GlobalProblem<float> one(s), split(s);
  REQUIRE(run_host<Policy>(one).ok());
  RunOptions o;
  o.split_workspace = true;
  REQUIRE(run_host<Policy>(split, o).ok());
  INFO("R=", R, " ", lasp::describe<Policy>());
  CHECK(same(one.o_buf, split.o_buf));
  CHECK(same(one.dq_buf, split.dq_buf));
  CHECK(same(one.dk_buf, split.dk_buf));
  CHECK(same(one.dv_buf, split.dv_buf));
  CHECK(same(one.dg_buf, split.dg_buf));
  CHECK(same(one.final_buf, split.final_buf));
  CHECK(same(one.dinit_buf, split.dinit_buf));
}

}  // namespace

TEST_CASE("split workspace: a kept reserve and a different scratch per call give the one-buffer results") {
  for (int R : {1, 3}) {
    split_equals_single<pol::Head>(R, 70u + unsigned(R));
    split_equals_single<pol::Gate>(R, 80u + unsigned(R));
    split_equals_single<pol::GateAG>(R, 90u + unsigned(R));
  }
}

TEST_CASE("split workspace: sizes, too-small parts and overlaps are refused, nothing written") {
  using P = pol::Gate;
  ProblemSpec s;
  s.B = 1; s.N = 20; s.H = 2; s.D = 8; s.E = 8;
  GlobalProblem<float> p(s);
  lasp::comm::HostSingle comm;
  const lasp::WorkspaceSizes z = lasp::workspace_sizes<P, float>(p.shape(), comm);
  CHECK(z.reserve > 0);
  CHECK(z.scratch > 0);
  CHECK(z.single() == lasp::workspace_size<P, float>(p.shape(), comm));
  CHECK(z.single() >= z.reserve + z.scratch);
  lasp::ForwardArgs<float, lasp::decay::Gate> a{p.shape(), p.view_q(0), p.view_k(0), p.view_v(0), p.view_o(0),
                                                 p.spec.scale, p.template decay_params<lasp::decay::Gate>(0)};
  AlignedVec<unsigned char> reserve(z.reserve), scratch(z.scratch), both(z.reserve + z.scratch);
  p.poison_outputs();
  const auto o0 = p.o_buf;
  CHECK(lasp::forward<P>(a, comm, lasp::Workspace{reserve.data(), z.reserve - 1, scratch.data(), z.scratch}) ==
        lasp::Status::kWorkspaceTooSmall);
  CHECK(lasp::forward<P>(a, comm, lasp::Workspace{reserve.data(), z.reserve, scratch.data(), z.scratch - 1}) ==
        lasp::Status::kWorkspaceTooSmall);
  // A reserve that is big enough alone is too small as a single buffer.
  CHECK(lasp::forward<P>(a, comm, lasp::Workspace{reserve.data(), z.reserve}) == lasp::Status::kWorkspaceTooSmall);
  // Scratch overlapping the reserve, and scratch overlapping an output.
  CHECK(lasp::forward<P>(a, comm, lasp::Workspace{both.data(), z.reserve, both.data() + 16, z.scratch}) ==
        lasp::Status::kOverlap);
  CHECK(lasp::forward<P>(a, comm, lasp::Workspace{reserve.data(), z.reserve, p.o_buf.data(), z.scratch}) ==
        lasp::Status::kOverlap);
  CHECK(same(p.o_buf, o0));
  // And the well-formed split runs.
  CHECK(lasp::forward<P>(a, comm, lasp::Workspace{reserve.data(), z.reserve, scratch.data(), z.scratch}) ==
        lasp::Status::kSuccess);
  CHECK_FALSE(same(p.o_buf, o0));
}
