// SP x DP rank arithmetic (math.md section 5, comm/groups.hpp), and the checking mode
// (comm/check.hpp) over host thread ranks.
#include "support.hpp"

#include <array>
#include <thread>
#include <vector>
#include <lasp/comm/check.hpp>
#include <lasp/comm/groups.hpp>

using namespace lasp;
using lasp_test::all_are;

namespace {
/// Members of every group of a split: groups[color] = world ranks ordered by their key.
struct Split {
  std::vector<std::vector<int>> groups;
};
template <class ColorFn, class KeyFn>
Split split_world(int W, ColorFn color, KeyFn key) {
  Split s;
  for (int w = 0; w < W; ++w) {
    const int c = color(w), k = key(w);
    if (int(s.groups.size()) <= c) s.groups.resize(std::size_t(c + 1));
    auto& g = s.groups[std::size_t(c)];
    if (int(g.size()) <= k) g.resize(std::size_t(k + 1), -1);
    g[std::size_t(k)] = w;
  }
  return s;
}
}  // namespace

TEST_CASE("groups: W=8, SP=4 gives SP groups (0,1,2,3),(4,5,6,7) and DP groups (0,4),(1,5),(2,6),(3,7)") {
  constexpr int W = 8, SP = 4;
  REQUIRE(comm::check_groups(W, SP) == Status::kSuccess);
  CHECK(comm::dp_size(W, SP) == 2);
  const Split sp = split_world(W, [](int w) { return comm::sp_color(w, SP); }, [](int w) { return comm::sp_rank(w, SP); });
  const Split dp = split_world(W, [](int w) { return comm::dp_color(w, SP); }, [](int w) { return comm::dp_rank(w, SP); });
  CHECK(sp.groups == std::vector<std::vector<int>>{{0, 1, 2, 3}, {4, 5, 6, 7}});
  CHECK(dp.groups == std::vector<std::vector<int>>{{0, 4}, {1, 5}, {2, 6}, {3, 7}});

  comm::GroupRanks g;
  REQUIRE(comm::GroupRanks::make(6, W, SP, &g) == Status::kSuccess);
  CHECK(g.world_rank == 6);
  CHECK(g.world_size == 8);
  CHECK(g.sp_size == 4);
  CHECK(g.dp_size == 2);
  CHECK(g.sp_color == 1);
  CHECK(g.sp_rank == 2);
  CHECK(g.dp_color == 2);
  CHECK(g.dp_rank == 1);
  CHECK(g.prev() == 1);
  CHECK(g.next() == 3);
  CHECK(g.prev_world() == 5);
  CHECK(g.next_world() == 7);
  CHECK(g.sp_member(0) == 4);
  CHECK(g.dp_member(0) == 2);
  CHECK(g.dp_member(1) == 6);
}

TEST_CASE("groups: chain neighbours stay inside the SP group (-1 at both ends, never world rank +/- 1)") {
  constexpr int W = 8, SP = 4;
  for (int w = 0; w < W; ++w) {
    CAPTURE(w);
    comm::GroupRanks g;
    REQUIRE(comm::GroupRanks::make(w, W, SP, &g) == Status::kSuccess);
    CHECK(g.prev() == (g.sp_rank == 0 ? -1 : g.sp_rank - 1));
    CHECK(g.next() == (g.sp_rank == SP - 1 ? -1 : g.sp_rank + 1));
    if (g.prev_world() >= 0) CHECK(comm::sp_color(g.prev_world(), SP) == g.sp_color);
    if (g.next_world() >= 0) CHECK(comm::sp_color(g.next_world(), SP) == g.sp_color);
  }
  // World rank 3 is the last of group 0: world rank 4 (group 1) is not its neighbour.
  CHECK(comm::chain_next(comm::sp_rank(3, SP), SP) == -1);
  CHECK(comm::chain_prev(comm::sp_rank(4, SP), SP) == -1);
  CHECK(comm::chain_prev(0, 1) == -1);
  CHECK(comm::chain_next(0, 1) == -1);
  CHECK(comm::chain_prev(5, 4) == -1);  // out-of-range rank: no neighbour
  CHECK(comm::chain_next(-1, 4) == -1);
}

TEST_CASE("groups: every (W, SP) with W % SP == 0 tiles the world exactly once in each split") {
  for (int W = 1; W <= 16; ++W)
    for (int SP = 1; SP <= W; ++SP) {
      if (W % SP) continue;
      CAPTURE(W);
      CAPTURE(SP);
      REQUIRE(comm::check_groups(W, SP) == Status::kSuccess);
      std::vector<int> seen_sp(std::size_t(W), 0), seen_dp(std::size_t(W), 0);
      for (int w = 0; w < W; ++w) {
        comm::GroupRanks g;
        REQUIRE(comm::GroupRanks::make(w, W, SP, &g) == Status::kSuccess);
        CHECK(g.sp_member(g.sp_rank) == w);
        CHECK(g.dp_member(g.dp_rank) == w);
        CHECK(comm::world_rank_of(g.sp_color, g.sp_rank, SP) == w);
        CHECK(g.sp_rank < SP);
        CHECK(g.dp_rank < W / SP);
        ++seen_sp[std::size_t(g.sp_color * SP + g.sp_rank)];
        ++seen_dp[std::size_t(g.dp_color * (W / SP) + g.dp_rank)];
      }
      for (int w = 0; w < W; ++w) {
        CHECK(seen_sp[std::size_t(w)] == 1);
        CHECK(seen_dp[std::size_t(w)] == 1);
      }
    }
}

TEST_CASE("groups: SP = W (pure SP) and SP = 1 (pure DP)") {
  comm::GroupRanks g;
  REQUIRE(comm::GroupRanks::make(3, 4, 4, &g) == Status::kSuccess);
  CHECK(g.sp_color == 0);
  CHECK(g.sp_rank == 3);
  CHECK(g.dp_size == 1);
  CHECK(g.dp_rank == 0);
  CHECK(g.next() == -1);
  REQUIRE(comm::GroupRanks::make(3, 4, 1, &g) == Status::kSuccess);
  CHECK(g.sp_color == 3);
  CHECK(g.sp_rank == 0);
  CHECK(g.dp_color == 0);
  CHECK(g.dp_rank == 3);
  CHECK(g.prev() == -1);
  CHECK(g.next() == -1);
}

TEST_CASE("groups: invalid splits are refused and leave the output untouched") {
  CHECK(comm::check_groups(6, 4) == Status::kInvalidShape);
  CHECK(comm::check_groups(8, 3) == Status::kInvalidShape);
  CHECK(comm::check_groups(4, 8) == Status::kInvalidShape);
  CHECK(comm::check_groups(8, 0) == Status::kInvalidShape);
  CHECK(comm::check_groups(0, 1) == Status::kInvalidShape);
  CHECK(comm::check_groups(8, -2) == Status::kInvalidShape);
  CHECK(comm::check_groups(8, 4, 4) == Status::kInvalidRank);
  CHECK(comm::check_groups(-1, 4, 4) == Status::kInvalidRank);
  comm::GroupRanks g;
  g.world_rank = 42;
  CHECK(comm::GroupRanks::make(0, 6, 4, &g) == Status::kInvalidShape);
  CHECK(comm::GroupRanks::make(8, 8, 4, &g) == Status::kInvalidRank);
  CHECK(g.world_rank == 42);
  CHECK(comm::GroupRanks::make(0, 8, 4, nullptr) == Status::kNullPointer);
  static_assert(comm::check_groups(8, 4) == Status::kSuccess, "constexpr");
  static_assert(comm::sp_color(5, 4) == 1 && comm::dp_color(5, 4) == 1, "constexpr");
}

// ---- checking mode over host thread ranks ----

namespace {
template <class F>
std::vector<Status> on_ranks(int R, F&& f) {
  comm::HostGroup group(R);
  return lasp_test::on_ranks(group, f);
}
using PH = Policy<decay::PerHead>;
using PG = Policy<decay::Gate>;
}  // namespace

TEST_CASE("check_peers (host): agreement gives kSuccess, any difference kPeerMismatch on every rank") {
  constexpr int R = 3;
  const Shape s{2, 200, 3, 64, 128, R};
  CHECK(all_are(on_ranks(R, [&](int, comm::HostGroup::Comm& c) { return comm::check_peers<PH, bf16>(s, c); }),
                  Status::kSuccess));
  // One rank with a different N (LASP needs equal segments).
  CHECK(all_are(on_ranks(R,
                           [&](int r, comm::HostGroup::Comm& c) {
                             Shape t = s;
                             if (r == 1) t.N = 199;
                             return comm::check_peers<PH, bf16>(t, c);
                           }),
                  Status::kPeerMismatch));
  // Different policy, element type, head dim, R: all mismatches.
  CHECK(all_are(on_ranks(R,
                           [&](int r, comm::HostGroup::Comm& c) {
                             return r == 2 ? comm::check_peers<PG, bf16>(s, c) : comm::check_peers<PH, bf16>(s, c);
                           }),
                  Status::kPeerMismatch));
  CHECK(all_are(on_ranks(R,
                           [&](int r, comm::HostGroup::Comm& c) {
                             return r == 0 ? comm::check_peers<PH, fp16>(s, c) : comm::check_peers<PH, bf16>(s, c);
                           }),
                  Status::kPeerMismatch));
  CHECK(all_are(on_ranks(R,
                           [&](int r, comm::HostGroup::Comm& c) {
                             Shape t = s;
                             if (r == 2) t.D = 128;
                             return comm::check_peers<PH, bf16>(t, c);
                           }),
                  Status::kPeerMismatch));
  CHECK(all_are(on_ranks(R,
                           [&](int r, comm::HostGroup::Comm& c) {
                             Shape t = s;
                             if (r == 0) t.R = 4;
                             return comm::check_peers<PH, bf16>(t, c);
                           }),
                  Status::kPeerMismatch));
  // All agree on an R that is not the group size.
  CHECK(all_are(on_ranks(R,
                           [&](int, comm::HostGroup::Comm& c) {
                             Shape t = s;
                             t.R = 2;
                             return comm::check_peers<PH, bf16>(t, c);
                           }),
                  Status::kSpSizeMismatch));
}

TEST_CASE("check_peers: fingerprints are exact 16-bit integers in fp32 and see large values") {
  Shape a{1, 70000, 1, 64, 64, 2}, b = a;
  b.N = 70000 + 65536;  // differs only above the low 16 bits
  const auto fa = comm::fingerprint<PH>(a, 2, 1, 2), fb = comm::fingerprint<PH>(b, 2, 1, 2);
  REQUIRE(fa.size() == comm::kFingerprintFloats);
  for (float x : fa) {
    CHECK(x >= 0.f);
    CHECK(x <= 65535.f);
    CHECK(x == float(int(x)));
  }
  CHECK(fa != fb);
  comm::HostSingle single;
  CHECK(comm::check_peers<PH, float>(Shape{1, 5, 1, 8, 8, 1}, single) == Status::kSuccess);
  CHECK(comm::check_peers<PH, float>(Shape{1, 5, 1, 8, 8, 2}, single) == Status::kSpSizeMismatch);
}
