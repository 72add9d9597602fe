// schedule::LogScan (math.md section 3.4): the log-depth Kogge-Stone scan across SP ranks.
// (1) The scan alone on random summaries (zeros and ones among the A's) against a double fold,
//     R = 1..33, scratch limited to the two summaries it documents. (2) The whole forward and
//     backward on R = 1..9 host ranks against the double reference, every decay, states on and
//     off, tails. (3) Equal to Chain within fp32 rounding. (4) Message counts: ceil(log2 R).
#include <algorithm>
#include <thread>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

template <class Decay>
using PL16 = P16<Decay, schedule::LogScan>;

int ceil_log2(int R) {
  int k = 0;
  while ((1 << k) < R) ++k;
  return k;
}

/// Expected traffic of virtual rank v (v = r forward, R-1-r backward) in one scan.
struct Traffic {
  int sends = 0, recvs = 0, rounds = 0;
};
Traffic expected_traffic(int v, int R) {
  Traffic t;
  for (int d = 1; d < R; d *= 2) {
    const bool s = v + d < R, r = v - d >= 0;
    t.sends += s, t.recvs += r, t.rounds += s || r;
  }
  return t;
}

// ---- (1) the scan alone ----------------------------------------------------------------------

/// Runs Scan<LogScan>::forward (or backward) on R thread ranks with random summaries X_r and
/// checks out_r (and fin on the owner) against the fold in double. Scratch: tmp = 1 summary,
/// gathered = min(R, 2) summaries followed by a sentinel guard that must stay untouched.
void scan_alone(int R, bool backward, bool with_init, bool with_fin, std::uint32_t seed) {
  CAPTURE(R);
  CAPTURE(backward);
  CAPTURE(with_init);
  CAPTURE(with_fin);
  const schedule::StateDims d{3, 5};  // bh = 3, de = 5
  const std::size_t S = d.summary(), st = d.state();
  Rng rng(seed);
  std::vector<std::vector<float>> X(static_cast<std::size_t>(R), std::vector<float>(S));
  for (int r = 0; r < R; ++r) {
    auto& x = X[std::size_t(r)];
    for (index_t i = 0; i < d.bh; ++i) {  // A in (0, 1], with exact 0 and 1 sprinkled in
      const int kind = int(rng.uniform(0.f, 6.f));
      x[std::size_t(i)] = kind == 0 ? 0.f : kind == 1 ? 1.f : rng.uniform(0.2f, 1.f);
    }
    for (std::size_t j = std::size_t(d.bh); j < S; ++j) x[j] = rng.normal();
  }
  std::vector<float> init(st);
  for (auto& x : init) x = rng.normal();

  // Reference: virtual order v; state entering v in double.
  auto real = [&](int v) { return backward ? R - 1 - v : v; };
  std::vector<std::vector<double>> want(static_cast<std::size_t>(R), std::vector<double>(st));
  std::vector<double> cur(st, 0.0), want_fin(st);
  if (with_init) std::copy(init.begin(), init.end(), cur.begin());
  for (int v = 0; v < R; ++v) {
    want[std::size_t(real(v))] = cur;
    const auto& x = X[std::size_t(real(v))];
    for (std::size_t j = 0; j < st; ++j) cur[j] = double(x[j / std::size_t(d.de)]) * cur[j] + double(x[std::size_t(d.bh) + j]);
  }
  want_fin = cur;

  const std::size_t nscratch = S * std::size_t(std::min(R, 2)), guard = 64;
  std::vector<AlignedVec<float>> out(static_cast<std::size_t>(R)), fin(static_cast<std::size_t>(R)), tmp(static_cast<std::size_t>(R)), gath(static_cast<std::size_t>(R));
  std::vector<std::vector<float>> X_before = X;
  std::vector<Status> st_r(static_cast<std::size_t>(R), Status::kInternalError);
  comm::HostGroup group(R);
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r) {
    out[std::size_t(r)].resize(st), fin[std::size_t(r)].resize(st), tmp[std::size_t(r)].resize(S);
    gath[std::size_t(r)].resize(nscratch + guard);
    poison(out[std::size_t(r)]), poison(tmp[std::size_t(r)]), poison(gath[std::size_t(r)]);
    fill_bytes(fin[std::size_t(r)], kSentinelByte);
    std::fill(gath[std::size_t(r)].begin() + std::ptrdiff_t(nscratch), gath[std::size_t(r)].end(), 12345.f);
  }
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      auto c = group.comm(r);
      const bool owner_in = real(0) == r, owner_out = real(R - 1) == r;
      const float* in = owner_in && with_init ? init.data() : nullptr;
      float* f = owner_out && with_fin ? fin[std::size_t(r)].data() : nullptr;
      using Sc = schedule::LogScan;
      const std::size_t i = std::size_t(r);
      st_r[i] = backward ? Sc::backward<backend::host::Backend>(c, d, X[i].data(), out[i].data(), in, f, tmp[i].data(),
                                                       gath[i].data(), host_stream{})
                         : Sc::forward<backend::host::Backend>(c, d, X[i].data(), out[i].data(), in, f, tmp[i].data(),
                                                      gath[i].data(), host_stream{});
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < R; ++r) {
    CAPTURE(r);
    const std::size_t i = std::size_t(r);
    REQUIRE(st_r[i] == Status::kSuccess);
    CHECK(rel_err(out[i], want[i]) <= kTolF32);
    CHECK(X[i] == X_before[i]);  // the summary is read only
    CHECK(std::all_of(gath[i].begin() + std::ptrdiff_t(nscratch), gath[i].end(), [](float x) { return x == 12345.f; }));
    if (with_fin && r == real(R - 1)) {
      CHECK(rel_err(fin[i], want_fin) <= kTolF32);
    } else {
      CHECK(all_bytes(fin[i], kSentinelByte));
    }
  }
}

// ---- message counting --------------------------------------------------------------------------

struct Counts {
  explicit Counts(int R)
      : send(static_cast<std::size_t>(R)), recv(static_cast<std::size_t>(R)), gather(static_cast<std::size_t>(R)), sendrecv(static_cast<std::size_t>(R)),
        sr_sent(static_cast<std::size_t>(R)), sr_received(static_cast<std::size_t>(R)) {}
  // Per rank (each rank's thread touches only its own slots): calls of send, recv, all_gather,
  // sendrecv, and the halves of the sendrecv calls that sent / received a message.
  std::vector<int> send, recv, gather, sendrecv, sr_sent, sr_received;
};

/// A HostGroup communicator that counts its calls. Without sendrecv: the scans call send then recv.
struct Counting {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  Counting(comm::HostGroup::Comm i, Counts* counts) : inner(i), c(counts) {}
  comm::HostGroup::Comm inner;
  Counts* c;
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  Status send(const float* b, std::size_t n, int peer, stream_type s) {
    ++c->send[std::size_t(rank())];
    return inner.send(b, n, peer, s);
  }
  Status recv(float* b, std::size_t n, int peer, stream_type s) {
    ++c->recv[std::size_t(rank())];
    return inner.recv(b, n, peer, s);
  }
  Status all_gather(const float* a, float* b, std::size_t n, stream_type s) {
    ++c->gather[std::size_t(rank())];
    return inner.all_gather(a, b, n, s);
  }
};
/// The same with a grouped sendrecv (as comm::Nccl has): each round must be exactly one call.
struct CountingSendRecv : Counting {
  using Counting::Counting;
  Status sendrecv(const float* sb, int dst, float* rb, int src, std::size_t n, stream_type s) {
    const std::size_t i = std::size_t(rank());
    ++c->sendrecv[i];
    c->sr_sent[i] += dst >= 0, c->sr_received[i] += src >= 0;
    if (dst >= 0) LASP_RETURN_IF_ERROR(inner.send(sb, n, dst, s));
    if (src >= 0) LASP_RETURN_IF_ERROR(inner.recv(rb, n, src, s));
    return Status::kSuccess;
  }
};
static_assert(schedule::has_sendrecv<CountingSendRecv>::value && !schedule::has_sendrecv<Counting>::value);
static_assert(is_communicator_v<Counting> && is_communicator_v<CountingSendRecv>);

/// Runs Policy through lasp::forward (and backward) with a counting communicator; checks the
/// results against the reference and returns the counts.
template <class Policy, class CommT>
Counts run_counted(const ProblemSpec& s, bool backward) {
  GlobalProblem<float> p(s);
  comm::HostGroup group(s.R);
  Counts c(s.R);
  RunOptions o;
  o.backward = backward;
  const RunResult rr = lasp_test::detail::run_ranks<Policy>(p, o, [&](int r) {
    return CommT(group.comm(r), &c);
  });
  REQUIRE(rr.first_error() == Status::kSuccess);
  Expect e;
  e.backward = backward;
  check_against_reference<typename Policy::Decay>(p, run_reference<typename Policy::Decay>(p, backward), e);
  return c;
}

}  // namespace

TEST_CASE("LogScan alone: R = 1..33 forward and backward equal the fold in double, 2 summaries of scratch") {
  for (int R = 1; R <= 33; ++R)
    for (bool bwd : {false, true}) {
      scan_alone(R, bwd, true, true, 3000u + std::uint32_t(R) * 2u + bwd);
      if (R % 4 == 3) scan_alone(R, bwd, false, false, 3100u + std::uint32_t(R));
      if (R % 4 == 2) scan_alone(R, bwd, true, false, 3200u + std::uint32_t(R));
      if (R % 4 == 1) scan_alone(R, bwd, false, true, 3300u + std::uint32_t(R));
    }
}

// ---- (2) the whole forward/backward against the reference ---------------------------------------

namespace {
template <class Decay>
void logscan_ranks_1_to_9(std::uint32_t seed) {
  for (int R = 1; R <= 9; ++R) {
    CAPTURE(R);
    ProblemSpec s;  // N = 23: a tail chunk of 7 with C = 16; D != E; B, H > 1; S_init and dS_final given
    s.B = 2, s.N = 23, s.H = 2, s.D = 8, s.E = 12, s.R = R, s.scale = 0.75f, s.seed = seed + std::uint32_t(R);
    GlobalProblem<float> p(s);
    run_and_check<PL16<Decay>>(p);
  }
}
}  // namespace

TEST_CASE("LogScan R=1..9: decay::None on every rank equals the whole-sequence reference") {
  logscan_ranks_1_to_9<decay::None>(3400);
}
TEST_CASE("LogScan R=1..9: decay::PerHead on every rank equals the whole-sequence reference") {
  logscan_ranks_1_to_9<decay::PerHead>(3420);
}
TEST_CASE("LogScan R=1..9: decay::Gate on every rank equals the whole-sequence reference") {
  logscan_ranks_1_to_9<decay::Gate>(3440);
}

TEST_CASE("LogScan: C = 64 with tails (N = 70, 100), head-major, B = 3, D != E") {
  using P = P64<decay::Gate, schedule::LogScan>;
  for (int R : {2, 3, 5, 8}) {
    CAPTURE(R);
    ProblemSpec s;
    s.B = 3, s.N = R % 2 ? 70 : 100, s.H = 2, s.D = 4, s.E = 8, s.R = R, s.layout = Layout::kHeadMajor;
    s.seed = 3460 + std::uint32_t(R);
    GlobalProblem<float> p(s);
    run_and_check<P>(p);
  }
}

TEST_CASE("LogScan: states absent or partly given, decoy state pointers on the other ranks, N = 1") {
  for (int R : {2, 3, 6, 7, 9}) {
    for (int mask = 0; mask < 4; ++mask) {
      CAPTURE(R);
      CAPTURE(mask);
      ProblemSpec s;
      s.initial_state = mask & 1, s.final_state = mask & 2;
      // One token per rank on R = 9, but only with S_init given: without it, dg of token 0 is exactly
      // 0 in the reference and the per-rank check of rank 0's one-token slice would divide by 0.
      s.B = 2, s.N = R == 9 && s.initial_state ? 1 : 17, s.H = 3, s.D = 4, s.E = 8, s.R = R;
      s.seed = 3480 + std::uint32_t(R * 4 + mask);
      GlobalProblem<float> p(s), q(s);
      RunOptions o;
      o.decoy_states = true;  // non-owners get NaN inputs / sentinel outputs: never read or written
      const RunResult rr = run_host<PL16<decay::Gate>>(p, o);
      REQUIRE(rr.ok());
      CHECK(rr.decoys_intact);
      check_against_reference<decay::Gate>(p, run_reference<decay::Gate>(p), expect_for<float>());
      if (!s.final_state) CHECK(all_bytes(p.final_buf, kNaNByte));  // nothing written where nothing was asked
      // d_initial_state = nullptr: nothing written, every other gradient bit-identical.
      RunOptions no_dinit;
      no_dinit.want_d_initial = false;
      REQUIRE(run_host<PL16<decay::Gate>>(q, no_dinit).ok());
      CHECK(all_bytes(q.dinit_buf, kNaNByte));
      CHECK(snapshot(q.o_buf) == snapshot(p.o_buf));
      CHECK(snapshot(q.dq_buf) == snapshot(p.dq_buf));
      CHECK(snapshot(q.dk_buf) == snapshot(p.dk_buf));
      CHECK(snapshot(q.dv_buf) == snapshot(p.dv_buf));
      CHECK(snapshot(q.dg_buf) == snapshot(p.dg_buf));
    }
  }
}

// ---- (3) the same as Chain to within fp32 rounding ----------------------------------------------

namespace {
template <class Decay>
void same_as_chain(std::uint32_t seed) {
  for (int R : {3, 4, 7, 8, 9}) {
    CAPTURE(R);
    ProblemSpec s;
    s.B = 2, s.N = 21, s.H = 3, s.D = 8, s.E = 4, s.R = R, s.seed = seed + std::uint32_t(R);
    GlobalProblem<float> chain(s), log(s);
    run_and_check<P16<Decay>>(chain);
    run_and_check<PL16<Decay>>(log);
    // Only the association of the combines differs (a tree instead of a left fold): a few fp32
    // roundings of the states. Measured: 0 for R <= 4 (the same operations), up to 9e-8 on
    // o, dq, dk, dv and the states for R = 7..9, up to 5e-7 on dg (a reverse cumulative sum of
    // nearly cancelling terms, as kTolDg says).
    constexpr double kTol = 1e-6, kTolDgChain = 5e-6;
    CHECK(rel_err(log.o(), chain.o()) <= kTol);
    CHECK(rel_err(log.dq(), chain.dq()) <= kTol);
    CHECK(rel_err(log.dk(), chain.dk()) <= kTol);
    CHECK(rel_err(log.dv(), chain.dv()) <= kTol);
    CHECK(rel_err(log.final_state(), chain.final_state()) <= kTol);
    CHECK(rel_err(log.d_initial_state(), chain.d_initial_state()) <= kTol);
    if constexpr (Decay::kHasGradient) CHECK(rel_err(log.dg(), chain.dg()) <= kTolDgChain);
  }
}
}  // namespace

TEST_CASE("LogScan equals Chain within fp32 rounding: decay::None") { same_as_chain<decay::None>(3500); }
TEST_CASE("LogScan equals Chain within fp32 rounding: decay::PerHead") { same_as_chain<decay::PerHead>(3520); }
TEST_CASE("LogScan equals Chain within fp32 rounding: decay::Gate") { same_as_chain<decay::Gate>(3540); }

// ---- (4) message counts ------------------------------------------------------------------------

TEST_CASE("LogScan messages: ceil(log2 R) exchanges per rank per scan, any R (not only powers of two)") {
  for (int R = 1; R <= 12; ++R) {
    CAPTURE(R);
    ProblemSpec s;
    s.B = 1, s.N = 5, s.H = 2, s.D = 4, s.E = 4, s.R = R, s.seed = 3600 + std::uint32_t(R);
    const int K = ceil_log2(R);
    // Forward only, no sendrecv member: send then recv per round.
    const Counts f = run_counted<PL16<decay::Gate>, Counting>(s, false);
    // Forward + backward with a grouped sendrecv: one call per round.
    const Counts fb = run_counted<PL16<decay::Gate>, CountingSendRecv>(s, true);
    int max_rounds = 0;
    for (int r = 0; r < R; ++r) {
      CAPTURE(r);
      const std::size_t i = std::size_t(r);
      const Traffic tf = expected_traffic(r, R), tb = expected_traffic(R - 1 - r, R);
      CHECK(f.send[i] == tf.sends);
      CHECK(f.recv[i] == tf.recvs);
      CHECK(f.send[i] <= K);
      CHECK(f.recv[i] <= K);
      // The one all-gather of a forward is the ranks' agreement on the call (R > 1; driver.hpp).
      CHECK(f.gather[i] == (R > 1 ? 1 : 0));
      CHECK(f.sendrecv[i] == 0);
      // forward + backward: every exchange through sendrecv, one per round of each scan; the
      // all-gathers are the two calls' agreements and the gates' suffix sum of B*H scalars (R > 1).
      CHECK(fb.sendrecv[i] == tf.rounds + tb.rounds);
      CHECK(fb.sr_sent[i] == tf.sends + tb.sends);
      CHECK(fb.sr_received[i] == tf.recvs + tb.recvs);
      CHECK(tf.rounds <= K);
      CHECK(tb.rounds <= K);
      CHECK(fb.send[i] == 0);
      CHECK(fb.recv[i] == 0);
      CHECK(fb.gather[i] == (R > 1 ? 3 : 0));
      max_rounds = std::max(max_rounds, tf.rounds);
    }
    CHECK(max_rounds == K);  // the bound is reached: rank 0 sends in every round
  }
}

TEST_CASE("LogScan messages, scan alone up to R = 64: rounds = ceil(log2 R), totals sum_d (R - d)") {
  for (int R : {1, 2, 3, 5, 8, 13, 16, 17, 31, 33, 64}) {
    CAPTURE(R);
    const schedule::StateDims d{1, 2};
    comm::HostGroup group(R);
    Counts c(R);
    std::vector<std::vector<float>> X(static_cast<std::size_t>(R), std::vector<float>(d.summary(), 0.5f)), out(X), tmp(X),
        gath(static_cast<std::size_t>(R), std::vector<float>(2 * d.summary()));
    std::vector<Status> st(static_cast<std::size_t>(R), Status::kInternalError);
    std::vector<std::thread> th;
    for (int r = 0; r < R; ++r)
      th.emplace_back([&, r] {
        CountingSendRecv x(group.comm(r), &c);
        const std::size_t i = std::size_t(r);
        st[i] = schedule::LogScan::forward<backend::host::Backend>(x, d, X[i].data(), out[i].data(), nullptr,
                                                                        nullptr, tmp[i].data(), gath[i].data(),
                                                                        host_stream{});
      });
    for (auto& t : th) t.join();
    int total = 0, max_calls = 0;
    for (int r = 0; r < R; ++r) {
      CHECK(st[std::size_t(r)] == Status::kSuccess);
      CHECK(c.sendrecv[std::size_t(r)] == expected_traffic(r, R).rounds);
      max_calls = std::max(max_calls, c.sendrecv[std::size_t(r)]);
      CHECK(c.sr_sent[std::size_t(r)] == expected_traffic(r, R).sends);
      CHECK(c.sr_received[std::size_t(r)] == expected_traffic(r, R).recvs);
      total += c.sr_sent[std::size_t(r)];
      // P_r = sum_{j<r} 0.5^(r-1-j) * 0.5 = 1 - 0.5^r for every element
      CHECK(out[std::size_t(r)][1] == doctest::Approx(1.0 - std::pow(0.5, r)).epsilon(1e-6));
    }
    int want_total = 0;
    for (int dist = 1; dist < R; dist *= 2) want_total += R - dist;
    CHECK(total == want_total);
    CHECK(max_calls == ceil_log2(R));
    MESSAGE("R=", R, ": rounds ", ceil_log2(R), ", max exchanges per rank ", max_calls, ", messages in total ",
            total, " (chain: ", R - 1, " dependent hops)");
  }
}
