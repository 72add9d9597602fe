// schedule::Truncated (math.md section 3, decay-aware truncation): with per-head decay strong
// enough that exp(-s_h N) < 2^-24 on every head, each rank needs only its neighbour's summary
// (one shift for all ranks); otherwise the fallback schedule runs. Both must equal the reference.
#include <mutex>
#include <string>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

/// A HostGroup communicator that logs, per rank, 'S' for each send and 'R' for each recv.
struct Recording {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  comm::HostGroup::Comm inner;
  std::vector<std::string>* log;
  std::mutex* mu;
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  Status send(const float* b, std::size_t n, int peer, stream_type s) {
    { std::lock_guard<std::mutex> lk(*mu); (*log)[std::size_t(rank())] += 'S'; }
    return inner.send(b, n, peer, s);
  }
  Status recv(float* b, std::size_t n, int peer, stream_type s) {
    { std::lock_guard<std::mutex> lk(*mu); (*log)[std::size_t(rank())] += 'R'; }
    return inner.recv(b, n, peer, s);
  }
  Status all_gather(const float* a, float* b, std::size_t n, stream_type s) { return inner.all_gather(a, b, n, s); }
};

template <class Policy>
std::vector<std::string> run_recorded(GlobalProblem<float>& p) {
  comm::HostGroup group(p.spec.R);
  std::vector<std::string> log(std::size_t(p.spec.R));
  std::mutex mu;
  RunOptions o;
  const RunResult rr =
      lasp_test::detail::run_ranks<Policy>(p, o, [&](int r) { return Recording{group.comm(r), &log, &mu}; });
  REQUIRE(rr.first_error() == Status::kSuccess);
  check_against_reference<decay::PerHead>(p, run_reference<decay::PerHead>(p), expect_for<float>());
  return log;
}

}  // namespace

TEST_CASE("Truncated: strong per-head decay takes one hop per rank and equals the reference") {
  using P = P16<decay::PerHead, schedule::Truncated<schedule::Chain>>;
  for (int R = 2; R <= 5; ++R) {
    CAPTURE(R);
    ProblemSpec s;
    s.B = 2, s.N = 23, s.H = 3, s.D = 8, s.E = 12, s.R = R, s.scale = 0.5f, s.seed = 700 + std::uint32_t(R);
    GlobalProblem<float> p(s);
    p.slopes = {0.75f, 1.f, 3.f};  // s N >= 17.25 > 24 ln 2 on every head
    const auto log = run_recorded<P>(p);
    // Forward then backward: every middle rank sends before it receives (no dependency on its
    // neighbour's result), once per pass.
    for (int r = 1; r < R - 1; ++r) CHECK(log[std::size_t(r)] == "SRSR");
    CHECK(log[0] == "SR");              // forward: send L_0; backward: receive M_1
    CHECK(log[std::size_t(R - 1)] == "RS");  // forward: receive L_{R-2}; backward: send M_{R-1}
  }
}

TEST_CASE("Truncated: one head with weak decay falls back to the chain, still exact") {
  using P = P16<decay::PerHead, schedule::Truncated<schedule::Chain>>;
  ProblemSpec s;
  s.B = 1, s.N = 23, s.H = 3, s.D = 8, s.E = 8, s.R = 4, s.seed = 720;
  GlobalProblem<float> p(s);
  p.slopes = {0.75f, 0.5f, 3.f};  // head 1: s N = 11.5 < 16.64
  const auto log = run_recorded<P>(p);
  for (int r = 1; r < 3; ++r) CHECK(log[std::size_t(r)] == "RSRS");  // the chain: receive, combine, send
}

TEST_CASE("Truncated over AllGather, gates: never truncates (no per-head slopes), equals the reference") {
  using P = P16<decay::Gate, schedule::Truncated<schedule::AllGather>>;
  ProblemSpec s;
  s.B = 1, s.N = 19, s.H = 2, s.D = 8, s.E = 8, s.R = 3, s.seed = 730;
  GlobalProblem<float> p(s);
  run_and_check<P>(p);
  CHECK(std::string(describe<P>()).find("truncated") != std::string::npos);
}
