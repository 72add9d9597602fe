// schedule::Hierarchical<Inner, Outer> (math.md section 3.4): a scan inside each node of
// node_size() contiguous ranks, one over the node totals by one rank per node, a fix-up inside.
// (1) The scan alone on random summaries against a double fold: R = 1..16, every node size that
//     divides R plus a non-dividing one (the fallback), every Inner x Outer, forward and reverse,
//     S_init / fin on and off, scratch limited to what the header documents. (2) The whole
//     forward and backward on R = 1..9 host ranks with node sizes {1, 2, 3, 4, R} where they divide
//     R and one that does not, every decay, against the double reference; uneven N with a plan.
// (3) Equal to Chain within fp32 rounding. (4) Messages per rank and per link (intra / inter
//     node), floats moved, grouped calls; the fallbacks send exactly LogScan's / Outer's messages.
// (5) comm::GroupRanks' nodes, the node_size() members and the trait.
#include <algorithm>
#include <thread>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

using schedule::AllGather;
using schedule::Chain;
using schedule::Hierarchical;
using schedule::LogScan;
using HierLL = Hierarchical<LogScan, LogScan>;

template <class Decay, class Schedule = HierLL>
using PH16 = P16<Decay, Schedule>;

/// Node sizes tried for R: 1, 2, 3, 4 and R where they divide R, and one that does not (the
/// fallback: one node), deduplicated.
std::vector<int> node_sizes(int R) {
  std::vector<int> v;
  for (int g : {1, 2, 3, 4, R})
    if (g <= R && R % g == 0 && std::find(v.begin(), v.end(), g) == v.end()) v.push_back(g);
  for (int g = 2; g < R; ++g)
    if (R % g != 0) {
      v.push_back(g);  // the smallest non-divisor
      break;
    }
  return v;
}
int effective(int R, int g) { return g >= 1 && g < R && R % g == 0 ? g : R; }

// ---- expected traffic, from the header's formulas --------------------------------------------

struct Traffic {
  int intra_s = 0, intra_r = 0, inter_s = 0, inter_r = 0;  // messages
  long intra_floats = 0, inter_floats = 0;                  // floats sent
  int calls = 0;                                            // grouped calls (sendrecv, or send/recv alone)
};
/// Expected traffic of virtual rank v in one pass of Hierarchical<Inner, Outer> with node size
/// g (effective), a summary of S floats and a state of st floats.
template <class Inner, class Outer>
Traffic expected(int v, int R, int g, long S, long st) {
  Traffic t;
  if (R == 1) return t;
  auto outer = [&](int w, int M, bool intra) {  // Outer over M members (inter-node unless one node)
    int s = 0, r = 0, calls = 0;
    long per = std::is_same_v<Outer, LogScan> ? S : st;
    if constexpr (std::is_same_v<Outer, LogScan>) {
      for (int d = 1; d < M; d *= 2) {
        const bool a = w + d < M, b = w - d >= 0;
        s += a, r += b, calls += a || b;
      }
    } else {
      s = w < M - 1, r = w > 0, calls = s + r;  // Chain: recv, then send
    }
    (intra ? t.intra_s : t.inter_s) += s;
    (intra ? t.intra_r : t.inter_r) += r;
    (intra ? t.intra_floats : t.inter_floats) += s * per;
    t.calls += calls;
  };
  if (g == 1) {
    outer(v, R, false);
    return t;
  }
  const int u = v % g, nv = v / g, M = R / g;
  if constexpr (std::is_same_v<Inner, LogScan>) {
    for (int d = 1; d < g; d *= 2) {
      const bool a = u + d < g, b = u - d >= 0;
      t.intra_s += a, t.intra_r += b, t.calls += a || b, t.intra_floats += a * S;
    }
  } else {
    for (int k = 1; k < g; ++k) {
      const bool a = u + k < g, b = u - k >= 0;
      t.intra_s += a, t.intra_r += b, t.calls += a || b, t.intra_floats += a * S;
    }
  }
  if (M > 1 && u == g - 1) outer(nv, M, false);
  if (M > 1 && nv >= 1) {
    const int w = g - 1 - u;
    for (int d = 1; d < g; d *= 2) {
      const bool a = w < d && w + d < g, b = w >= d && w < 2 * d;
      t.intra_s += a, t.intra_r += b, t.calls += a || b, t.intra_floats += a * st;
    }
  }
  return t;
}

// ---- a communicator that counts per link type ------------------------------------------------

struct Counts {
  explicit Counts(int R) : t(static_cast<std::size_t>(R)), gather(static_cast<std::size_t>(R)) {}
  std::vector<Traffic> t;  // each rank's thread touches only its own slot
  std::vector<int> gather;
};

/// comm::HostGroup::Comm with the group's node size, counting its calls and messages; `g` (the
/// effective node size) classifies a peer as intra- or inter-node. No sendrecv: send then recv.
struct Counting {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  Counting(comm::HostGroup::Comm i, Counts* counts, int g) : inner(i), c(counts), g(g) {}
  comm::HostGroup::Comm inner;
  Counts* c;
  int g;
  int rank() const { return inner.rank(); }
  int size() const { return inner.size(); }
  int node_size() const { return inner.node_size(); }
  Traffic& mine() { return c->t[std::size_t(rank())]; }
  bool intra(int peer) const { return peer / g == rank() / g; }
  void count_send(int peer, std::size_t n) {
    (intra(peer) ? mine().intra_s : mine().inter_s) += 1;
    (intra(peer) ? mine().intra_floats : mine().inter_floats) += long(n);
  }
  void count_recv(int peer) { (intra(peer) ? mine().intra_r : mine().inter_r) += 1; }
  Status send(const float* b, std::size_t n, int peer, stream_type s) {
    ++mine().calls;
    count_send(peer, n);
    return inner.send(b, n, peer, s);
  }
  Status recv(float* b, std::size_t n, int peer, stream_type s) {
    ++mine().calls;
    count_recv(peer);
    return inner.recv(b, n, peer, s);
  }
  Status all_gather(const float* a, float* b, std::size_t n, stream_type s) {
    ++c->gather[std::size_t(rank())];
    return inner.all_gather(a, b, n, s);
  }
};
/// The same with a grouped sendrecv (as comm::Nccl has): one call per round.
struct CountingSendRecv : Counting {
  using Counting::Counting;
  Status sendrecv(const float* sb, int dst, float* rb, int src, std::size_t n, stream_type s) {
    ++mine().calls;
    if (dst >= 0) count_send(dst, n);
    if (src >= 0) count_recv(src);
    if (dst >= 0) LASP_RETURN_IF_ERROR(inner.send(sb, n, dst, s));
    if (src >= 0) LASP_RETURN_IF_ERROR(inner.recv(rb, n, src, s));
    return Status::kSuccess;
  }
};
static_assert(schedule::has_sendrecv<CountingSendRecv>::value && !schedule::has_sendrecv<Counting>::value);
static_assert(schedule::has_node_size<Counting>::value && is_communicator_v<Counting>);

// ---- (1) the scan alone ----------------------------------------------------------------------

/// Floats of `gathered` the header documents for (R, g): 4 summaries when 1 < g < R, 2 for one
/// node (g = R > 1), Outer's own for g = 1 (LogScan: 2, Chain: none).
template <class Outer>
std::size_t documented_scratch(int R, int g, std::size_t S) {
  if (R == 1) return 0;
  if (g == 1) return std::is_same_v<Outer, LogScan> ? 2 * S : 0;
  return g == R ? 2 * S : 4 * S;
}

/// Runs Hierarchical<Inner, Outer>::forward (or backward) on R thread ranks (HostGroup with node
/// size `gn`) with random summaries; checks out (and fin on its owner) against the fold in double,
/// the scratch bound (a sentinel guard after it), and the messages against expected<>().
template <class Inner, class Outer, class CommT>
void scan_alone(int R, int gn, bool backward, bool with_init, bool with_fin, std::uint32_t seed) {
  using H = Hierarchical<Inner, Outer>;
  CAPTURE(R);
  CAPTURE(gn);
  CAPTURE(backward);
  CAPTURE(with_init);
  CAPTURE(with_fin);
  INFO(H::kName);
  const schedule::StateDims d{3, 5};  // bh = 3, de = 5
  const std::size_t S = d.summary(), st = d.state();
  const int g = effective(R, gn);
  Rng rng(seed);
  std::vector<std::vector<float>> X(static_cast<std::size_t>(R), std::vector<float>(S));
  for (auto& x : X) {
    for (index_t i = 0; i < d.bh; ++i) {  // A in (0, 1], with exact 0 and 1 sprinkled in
      const int kind = int(rng.uniform(0.f, 6.f));
      x[std::size_t(i)] = kind == 0 ? 0.f : kind == 1 ? 1.f : rng.uniform(0.2f, 1.f);
    }
    for (std::size_t j = std::size_t(d.bh); j < S; ++j) x[j] = rng.normal();
  }
  std::vector<float> init(st);
  for (auto& x : init) x = rng.normal();
  auto real = [&](int v) { return backward ? R - 1 - v : v; };
  std::vector<std::vector<double>> want(static_cast<std::size_t>(R), std::vector<double>(st));
  std::vector<double> cur(st, 0.0);
  if (with_init) std::copy(init.begin(), init.end(), cur.begin());
  for (int v = 0; v < R; ++v) {
    want[std::size_t(real(v))] = cur;
    const auto& x = X[std::size_t(real(v))];
    for (std::size_t j = 0; j < st; ++j)
      cur[j] = double(x[j / std::size_t(d.de)]) * cur[j] + double(x[std::size_t(d.bh) + j]);
  }
  const std::vector<double> want_fin = cur;

  const std::size_t nscratch = documented_scratch<Outer>(R, g, S), guard = 64;
  std::vector<AlignedVec<float>> out(static_cast<std::size_t>(R)), fin(out.size()), tmp(out.size()), gath(out.size());
  const std::vector<std::vector<float>> X_before = X;
  std::vector<Status> st_r(static_cast<std::size_t>(R), Status::kInternalError);
  comm::HostGroup group(R, std::chrono::milliseconds(20000));
  group.set_node_size(gn);
  Counts counts(R);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i].resize(st), fin[i].resize(st), tmp[i].resize(S), gath[i].resize(nscratch + guard);
    poison(out[i]), poison(tmp[i]), poison(gath[i]);
    fill_bytes(fin[i], kSentinelByte);
    std::fill(gath[i].begin() + std::ptrdiff_t(nscratch), gath[i].end(), 12345.f);
  }
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r)
    th.emplace_back([&, r] {
      CommT c(group.comm(r), &counts, g);
      const std::size_t i = std::size_t(r);
      const float* in = real(0) == r && with_init ? init.data() : nullptr;
      float* f = real(R - 1) == r && with_fin ? fin[i].data() : nullptr;
      st_r[i] = backward ? H::template backward<backend::host::Backend>(c, d, X[i].data(), out[i].data(), in, f,
                                                                        tmp[i].data(), gath[i].data(), host_stream{})
                         : H::template forward<backend::host::Backend>(c, d, X[i].data(), out[i].data(), in, f,
                                                                       tmp[i].data(), gath[i].data(), host_stream{});
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
    const int v = backward ? R - 1 - r : r;
    const Traffic e = expected<Inner, Outer>(v, R, g, long(S), long(st));
    const Traffic& got = counts.t[i];
    CHECK(got.intra_s == e.intra_s);
    CHECK(got.intra_r == e.intra_r);
    CHECK(got.inter_s == e.inter_s);
    CHECK(got.inter_r == e.inter_r);
    CHECK(got.intra_floats == e.intra_floats);
    CHECK(got.inter_floats == e.inter_floats);
    if constexpr (schedule::has_sendrecv<CommT>::value) CHECK(got.calls == e.calls);
    CHECK(counts.gather[i] == 0);
  }
}

template <class Inner, class Outer>
void scan_alone_all(std::uint32_t seed) {
  for (int R = 1; R <= 16; ++R)
    for (int gn : node_sizes(R))
      for (bool bwd : {false, true}) {
        const std::uint32_t s = seed + std::uint32_t(R * 64 + gn * 2 + bwd);
        scan_alone<Inner, Outer, CountingSendRecv>(R, gn, bwd, true, true, s);
        scan_alone<Inner, Outer, Counting>(R, gn, bwd, (R + gn) % 2 == 0, (R + gn) % 3 != 0, s + 7u);
      }
}

}  // namespace

TEST_CASE("Hierarchical alone, R = 1..16, node sizes 1/2/3/4/R + a non-divisor: exact, scratch and messages") {
  SUBCASE("LogScan inside, LogScan across") { scan_alone_all<LogScan, LogScan>(5000); }
  SUBCASE("LogScan inside, Chain across") { scan_alone_all<LogScan, Chain>(6000); }
  SUBCASE("AllGather inside, LogScan across") { scan_alone_all<AllGather, LogScan>(7000); }
  SUBCASE("AllGather inside, Chain across") { scan_alone_all<AllGather, Chain>(8000); }
}

namespace {
struct NoNodes {  // HostGroup::Comm without node_size()
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  comm::HostGroup::Comm c;
  int rank() const { return c.rank(); }
  int size() const { return c.size(); }
  Status send(const float* b, std::size_t n, int p, stream_type s) { return c.send(b, n, p, s); }
  Status recv(float* b, std::size_t n, int p, stream_type s) { return c.recv(b, n, p, s); }
  Status all_gather(const float* a, float* b, std::size_t n, stream_type s) { return c.all_gather(a, b, n, s); }
};
}  // namespace

TEST_CASE("Hierarchical fallbacks send exactly the flat schedule's messages") {
  // No node_size(), or one that does not split the group: LogScan over the whole group;
  // node_size() == 1: the Outer schedule over the whole group.
  for (int R : {5, 6, 7, 8, 12}) {
    CAPTURE(R);
    const long S = 3 * 6, st = 3 * 5;
    for (int v = 0; v < R; ++v) {
      const Traffic one_node = expected<LogScan, Chain>(v, R, R, S, st);
      const Traffic flat_log = expected<LogScan, LogScan>(v, R, 1, S, st);  // LogScan over R
      CHECK(one_node.intra_s == flat_log.inter_s);
      CHECK(one_node.intra_r == flat_log.inter_r);
      CHECK(one_node.calls == flat_log.calls);
    }
  }
  static_assert(!schedule::has_node_size<NoNodes>::value && is_communicator_v<NoNodes>);
  comm::HostGroup grp(6);
  grp.set_node_size(2);  // ignored: NoNodes hides it
  CHECK(schedule::effective_node_size(NoNodes{grp.comm(0)}) == 6);
  CHECK(schedule::effective_node_size(grp.comm(0)) == 2);
  for (int gn : {0, -1, 4, 6, 7}) {
    grp.set_node_size(gn);
    CHECK(schedule::effective_node_size(grp.comm(3)) == 6);
  }
  grp.set_node_size(1);
  CHECK(schedule::effective_node_size(grp.comm(3)) == 1);
  CHECK(schedule::effective_node_size(comm::HostSingle{}) == 1);
}

// ---- (2) the whole forward/backward against the reference ---------------------------------------

namespace {

/// run_host with a HostGroup of node size gn.
template <class Policy, class Elem>
RunResult run_nodes(GlobalProblem<Elem>& p, int gn, const RunOptions& o = {}) {
  comm::HostGroup group(p.spec.R, o.timeout);
  group.set_node_size(gn);
  return lasp_test::detail::run_ranks<Policy>(p, o, [&](int r) { return group.comm(r); });
}

template <class Policy, class Elem>
void run_nodes_and_check(GlobalProblem<Elem>& p, int gn, bool plan = false) {
  RunOptions o;
  o.plan = plan;
  INFO("policy: ", describe<Policy>(), ", node size ", gn, plan ? ", with a plan" : "");
  const RunResult rr = run_nodes<Policy>(p, gn, o);
  REQUIRE(rr.first_error() == Status::kSuccess);
  check_against_reference<typename Policy::Decay>(p, run_reference<typename Policy::Decay>(p, true));
}

template <class Decay>
void hier_ranks_1_to_9(std::uint32_t seed) {
  for (int R = 1; R <= 9; ++R)
    for (int gn : node_sizes(R)) {
      CAPTURE(R);
      CAPTURE(gn);
      ProblemSpec s;  // N = 23: a tail chunk of 7 with C = 16; D != E; B, H > 1; S_init and dS_final given
      s.B = 2, s.N = 23, s.H = 2, s.D = 8, s.E = 12, s.R = R, s.scale = 0.75f;
      s.seed = seed + std::uint32_t(R * 8 + gn);
      GlobalProblem<float> p(s);
      run_nodes_and_check<PH16<Decay>>(p, gn);
    }
}

}  // namespace

TEST_CASE("Hierarchical R=1..9, node sizes 1/2/3/4/R + a non-divisor: decay::None equals the reference") {
  hier_ranks_1_to_9<decay::None>(5400);
}
TEST_CASE("Hierarchical R=1..9, node sizes 1/2/3/4/R + a non-divisor: decay::PerHead equals the reference") {
  hier_ranks_1_to_9<decay::PerHead>(5500);
}
TEST_CASE("Hierarchical R=1..9, node sizes 1/2/3/4/R + a non-divisor: decay::Gate equals the reference") {
  hier_ranks_1_to_9<decay::Gate>(5600);
}

TEST_CASE("Hierarchical<AllGather, Chain>: gates, R = 4, 6, 8, 9 on nodes of 2 and 3") {
  for (int R : {4, 6, 8, 9})
    for (int gn : {2, 3}) {
      if (R % gn) continue;
      CAPTURE(R);
      CAPTURE(gn);
      ProblemSpec s;
      s.B = 2, s.N = 19, s.H = 2, s.D = 4, s.E = 8, s.R = R, s.seed = 5700 + std::uint32_t(R * 8 + gn);
      GlobalProblem<float> p(s);
      run_nodes_and_check<PH16<decay::Gate, Hierarchical<AllGather, Chain>>>(p, gn);
    }
}

TEST_CASE("Hierarchical: uneven N per rank with a plan, states partly given, decoys untouched") {
  for (int R : {4, 6, 8})
    for (int gn : {2, R / 2}) {
      for (int mask = 0; mask < 4; ++mask) {
        CAPTURE(R);
        CAPTURE(gn);
        CAPTURE(mask);
        ProblemSpec s;
        s.initial_state = mask & 1, s.final_state = mask & 2;
        s.B = 1, s.H = 3, s.D = 4, s.E = 8, s.R = R, s.seed = 5800 + std::uint32_t(R * 16 + gn * 4 + mask);
        s.rank_N = {17, 5, 33, 1, 16, 40, 9, 21};  // uneven, one rank of a single token
        s.rank_N.resize(std::size_t(R));
        s.N = s.rank_N[0];
        GlobalProblem<float> p(s);
        RunOptions o;
        o.plan = true;
        o.decoy_states = true;
        const RunResult rr = run_nodes<PH16<decay::Gate>>(p, gn, o);
        REQUIRE(rr.ok());
        CHECK(rr.decoys_intact);
        check_against_reference<decay::Gate>(p, run_reference<decay::Gate>(p), expect_for<float>());
        if (!s.final_state) CHECK(all_bytes(p.final_buf, kNaNByte));
      }
    }
}

// ---- (3) the same as Chain to within fp32 rounding ----------------------------------------------

namespace {
template <class Decay>
void same_as_chain(std::uint32_t seed) {
  for (int R : {4, 6, 8, 9})
    for (int gn : {2, 3, 4}) {
      if (R % gn || gn == R) continue;
      CAPTURE(R);
      CAPTURE(gn);
      ProblemSpec s;
      s.B = 2, s.N = 21, s.H = 3, s.D = 8, s.E = 4, s.R = R, s.seed = seed + std::uint32_t(R * 8 + gn);
      GlobalProblem<float> chain(s), hier(s);
      run_and_check<P16<Decay>>(chain);
      run_nodes_and_check<PH16<Decay>>(hier, gn);
      // The tolerances of logscan_test.cpp's same_as_chain (only the association of the combines
      // differs): 1e-6 on o, dq, dk, dv and the states, 5e-6 on dg.
      constexpr double kTol = 1e-6, kTolDgChain = 5e-6;
      CHECK(rel_err(hier.o(), chain.o()) <= kTol);
      CHECK(rel_err(hier.dq(), chain.dq()) <= kTol);
      CHECK(rel_err(hier.dk(), chain.dk()) <= kTol);
      CHECK(rel_err(hier.dv(), chain.dv()) <= kTol);
      CHECK(rel_err(hier.final_state(), chain.final_state()) <= kTol);
      CHECK(rel_err(hier.d_initial_state(), chain.d_initial_state()) <= kTol);
      if constexpr (Decay::kHasGradient) CHECK(rel_err(hier.dg(), chain.dg()) <= kTolDgChain);
    }
}
}  // namespace

TEST_CASE("Hierarchical equals Chain within fp32 rounding: decay::PerHead") { same_as_chain<decay::PerHead>(5900); }
TEST_CASE("Hierarchical equals Chain within fp32 rounding: decay::Gate") { same_as_chain<decay::Gate>(5950); }

// ---- (4) messages through lasp::forward / backward ---------------------------------------------

TEST_CASE("Hierarchical messages through forward + backward: intra / inter node per rank, R = 8, nodes of 2 and 4") {
  for (int gn : {2, 4}) {
    CAPTURE(gn);
    ProblemSpec s;
    s.B = 1, s.N = 5, s.H = 2, s.D = 4, s.E = 4, s.R = 8, s.seed = 6100 + std::uint32_t(gn);
    GlobalProblem<float> p(s);
    comm::HostGroup group(s.R, std::chrono::milliseconds(20000));
    group.set_node_size(gn);
    Counts c(s.R);
    RunOptions o;
    const RunResult rr = lasp_test::detail::run_ranks<PH16<decay::Gate>>(
        p, o, [&](int r) { return CountingSendRecv(group.comm(r), &c, gn); });
    REQUIRE(rr.first_error() == Status::kSuccess);
    check_against_reference<decay::Gate>(p, run_reference<decay::Gate>(p, true));
    const long S = long(s.B * s.H) * (1 + long(s.D * s.E)), st = long(s.B * s.H * s.D * s.E);
    int inter_total = 0;
    for (int r = 0; r < s.R; ++r) {
      CAPTURE(r);
      const Traffic f = expected<LogScan, LogScan>(r, s.R, gn, S, st), b = expected<LogScan, LogScan>(s.R - 1 - r, s.R, gn, S, st);
      const Traffic& got = c.t[std::size_t(r)];
      CHECK(got.intra_s == f.intra_s + b.intra_s);
      CHECK(got.intra_r == f.intra_r + b.intra_r);
      CHECK(got.inter_s == f.inter_s + b.inter_s);
      CHECK(got.inter_r == f.inter_r + b.inter_r);
      CHECK(got.intra_floats == f.intra_floats + b.intra_floats);
      CHECK(got.inter_floats == f.inter_floats + b.inter_floats);
      CHECK(got.calls == f.calls + b.calls);
      // Only the leaders talk across nodes: the last rank of a node forward, the first backward.
      if (r % gn != gn - 1) CHECK(f.inter_s + f.inter_r == 0);
      if (r % gn != 0) CHECK(b.inter_s + b.inter_r == 0);
      // The agreements of the two calls and the gates' suffix sum of B*H scalars.
      CHECK(c.gather[std::size_t(r)] == 3);
      inter_total += got.inter_s;
    }
    const Traffic& lead = c.t[std::size_t(gn - 1)];
    MESSAGE("R=8 g=", gn, ", forward + backward, rank ", gn - 1, " (a leader): intra ", lead.intra_s, " sent / ",
            lead.intra_r, " received, inter ", lead.inter_s, " / ", lead.inter_r, ", grouped calls ", lead.calls,
            "; rank 0: intra ", c.t[0].intra_s, " / ", c.t[0].intra_r, ", inter ", c.t[0].inter_s, " / ",
            c.t[0].inter_r, ", calls ", c.t[0].calls);
    // Inter-node messages of one pass: LogScan over M = 8 / g node totals, sum_{d < M} (M - d).
    const int M = s.R / gn;
    int want = 0;
    for (int d = 1; d < M; d *= 2) want += M - d;
    CHECK(inter_total == 2 * want);
  }
}

// ---- (5) nodes in the SP x DP helpers and the communicators ------------------------------------

TEST_CASE("comm::GroupRanks with ranks per node: sp_node_size, sp_nodes, spans_nodes") {
  static_assert(comm::sp_node_size(4, 8) == 4);   // two SP groups per node
  static_assert(comm::sp_node_size(16, 8) == 8);  // SP groups of two nodes
  static_assert(comm::sp_node_size(8, 8) == 8);
  static_assert(comm::sp_node_size(4, 6) == 0);   // straddles unevenly
  static_assert(comm::sp_node_size(0, 8) == 0 && comm::sp_node_size(4, 0) == 0);
  comm::GroupRanks g;
  REQUIRE(comm::GroupRanks::make(21, 32, 16, 8, &g) == Status::kSuccess);
  CHECK(g.sp_color == 1);
  CHECK(g.sp_rank == 5);
  CHECK(g.ranks_per_node == 8);
  CHECK(g.sp_node_size == 8);
  CHECK(g.sp_nodes == 2);
  CHECK(g.spans_nodes());
  REQUIRE(comm::GroupRanks::make(5, 16, 4, 8, &g) == Status::kSuccess);
  CHECK(g.sp_node_size == 4);
  CHECK(g.sp_nodes == 1);
  CHECK(!g.spans_nodes());
  REQUIRE(comm::GroupRanks::make(5, 12, 4, 6, &g) == Status::kSuccess);  // group (4..7) on nodes 0 and 1
  CHECK(g.sp_node_size == 0);
  CHECK(g.sp_nodes == 2);
  CHECK(comm::GroupRanks::make(5, 16, 4, 0, &g) == Status::kInvalidShape);
  CHECK(comm::GroupRanks::make(5, 16, 4, 8, nullptr) == Status::kNullPointer);
  CHECK(comm::GroupRanks::make(5, 16, 4, &g) == Status::kSuccess);  // the 4-argument form: no nodes
  CHECK(g.sp_node_size == 0);
  CHECK(!g.spans_nodes());
}

TEST_CASE("Hierarchical is selectable like any schedule: names, traits, not the default") {
  CHECK(describe<Policy<decay::PerHead, HierLL>>().find("schedule=hierarchical(log-scan/log-scan)") != std::string::npos);
  CHECK(std::string(Hierarchical<AllGather, Chain>::kName) == "hierarchical(all-gather/chain)");
  CHECK(std::string(Hierarchical<>::kName) == "hierarchical(log-scan/log-scan)");
  static_assert(Hierarchical<>::kGathers && !Hierarchical<>::kNeighbourChain && !Hierarchical<>::kOverlapBackward);
  static_assert(!std::is_same_v<schedule::Auto, HierLL>);
  static_assert(!schedule::uses_group_hop<HierLL>::value);
  comm::HostGroup grp(4);
  CHECK(grp.comm(1).node_size() == 0);
  grp.set_node_size(2);
  CHECK(grp.comm(1).node_size() == 2);
}

namespace {
/// HostGroup::Comm reporting its own node size (a misconfigured rank).
struct OwnNodes {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  comm::HostGroup::Comm c;
  int ns;
  int rank() const { return c.rank(); }
  int size() const { return c.size(); }
  int node_size() const { return ns; }
  Status send(const float* b, std::size_t n, int p, stream_type s) { return c.send(b, n, p, s); }
  Status recv(float* b, std::size_t n, int p, stream_type s) { return c.recv(b, n, p, s); }
  Status all_gather(const float* a, float* b, std::size_t n, stream_type s) { return c.all_gather(a, b, n, s); }
};

/// make_plan on R = 4 ranks whose node sizes are `ns[r]`: the statuses, by rank.
template <class Policy>
std::vector<Status> plan_with_nodes(const std::vector<int>& ns) {
  const int R = int(ns.size());
  comm::HostGroup group(R, std::chrono::milliseconds(20000));
  return on_ranks(group, [&](int r, comm::HostGroup::Comm& c) {
    OwnNodes oc{c, ns[std::size_t(r)]};
    Plan<Policy, float> plan;
    const Shape s{1, 16, 2, 4, 4, R};
    return make_plan<Policy, float>(s, typename Policy::Decay::Params{}, oc, &plan);
  });
}
}  // namespace

TEST_CASE("Hierarchical with a plan: ranks that disagree on the node size get kPeerMismatch, all of them") {
  using PG = PH16<decay::Gate>;
  CHECK(all_are(plan_with_nodes<PG>({2, 2, 2, 2}), Status::kSuccess));
  CHECK(all_are(plan_with_nodes<PG>({2, 2, 2, 4}), Status::kPeerMismatch));   // 2 vs one node
  CHECK(all_are(plan_with_nodes<PG>({1, 2, 2, 2}), Status::kPeerMismatch));
  // What counts is the node size the schedule uses: 0, 3, 4 and 5 all mean one node of 4.
  CHECK(all_are(plan_with_nodes<PG>({0, 3, 4, 5}), Status::kSuccess));
  // Schedules that do not use nodes ignore node_size().
  CHECK(all_are(plan_with_nodes<P16<decay::Gate, schedule::LogScan>>({2, 2, 2, 4}), Status::kSuccess));
  static_assert(schedule::uses_nodes<HierLL>::value && !schedule::uses_nodes<LogScan>::value);
}
