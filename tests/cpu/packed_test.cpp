// Packed variable-length sequences across ranks (cu_seqlens, per-document states) and the zigzag
// layout (math.md 3.5, 3.6) on the host backend: every rank's outputs and gradients equal each
// document run separately through the double reference; zigzag equals contiguous after the
// permutation; bad offsets are refused identically on every rank with nothing written.
#include <functional>
#include <string>
#include "packed_support.hpp"

using namespace lasp_test;
using namespace lasp_test::packed;
using namespace lasp;

namespace {

/// Documents of lengths {1, 2, 63, 64, 65, 1000, rest}, 1200 tokens: starts and ends on rank
/// and chunk (C = 64) boundaries, one-token documents at rank edges, the long document over 3
/// ranks with ranks holding only its middle.
const std::vector<index_t> kDocs = {64, 1, 2, 63, 65, 1000, 5};
std::vector<index_t> contiguous_split(int R) {
  switch (R) {
    case 1: return {1200};
    case 2: return {64, 1136};           // rank 1 starts with a document, on a chunk boundary
    case 3: return {65, 130, 1005};      // rank 0 ends with the one-token document; rank 2 starts with the long one
    case 4: return {130, 200, 400, 470}; // ranks 2 holds only the middle of the long document
    default: return {67, 63, 300, 300, 470};  // rank 1 is exactly one document; ranks 2-4 share the long one
  }
}

template <class Decay>
void every_schedule(int R, bool zigzag, std::uint32_t seed) {
  PSpec s;
  s.docs = kDocs;
  s.zigzag = zigzag;
  s.rank_N = zigzag ? std::vector<index_t>(std::size_t(R), 1200 / R) : contiguous_split(R);
  s.seed = seed;
  PProblem p(s);
  const PRef r = packed_reference<Decay>(p);
  run_and_check_packed<PP<Decay, schedule::Chain>>(p, r);
  run_and_check_packed<PP<Decay, schedule::AllGather>>(p, r);
  run_and_check_packed<PP<Decay, schedule::Truncated<schedule::Chain>>>(p, r);
  run_and_check_packed<PP<Decay, schedule::LogScan>>(p, r);
}

}  // namespace

TEST_CASE("packed: R=1..5 contiguous, every schedule, decay::None equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) every_schedule<decay::None>(R, false, 11000 + std::uint32_t(R));
}
TEST_CASE("packed: R=1..5 contiguous, every schedule, decay::PerHead equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) every_schedule<decay::PerHead>(R, false, 11010 + std::uint32_t(R));
}
TEST_CASE("packed: R=1..5 contiguous, every schedule, decay::Gate equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) every_schedule<decay::Gate>(R, false, 11020 + std::uint32_t(R));
}
TEST_CASE("packed + zigzag: R=1..5, every schedule and decay equals each document through the reference") {
  for (int R = 1; R <= 5; ++R) {
    every_schedule<decay::None>(R, true, 11030 + std::uint32_t(R));
    every_schedule<decay::PerHead>(R, true, 11040 + std::uint32_t(R));
    every_schedule<decay::Gate>(R, true, 11050 + std::uint32_t(R));
  }
}

TEST_CASE("packed and zigzag with schedule::Hierarchical on nodes of 2 and 3 ranks (gates) equal each document") {
  using H = PP<decay::Gate, schedule::Hierarchical<>>;
  for (int R : {4, 5, 6}) {
    for (bool zz : {false, true}) {
      if (!zz && R > 5) continue;  // contiguous_split has R <= 5
      PSpec s;
      s.docs = kDocs;
      s.zigzag = zz;
      s.rank_N = zz ? std::vector<index_t>(std::size_t(R), 1200 / R) : contiguous_split(R);
      s.seed = 11200 + std::uint32_t(R * 2 + zz);
      PProblem p(s);
      const PRef r = packed_reference<decay::Gate>(p);
      for (int g : {2, 3})  // R = 5: no divisor (the fallback, one node)
        run_and_check_packed<H>(p, r, /*plan=*/zz, g);
    }
  }
}

TEST_CASE("zigzag without documents (B=2, whole-sequence S_init read and S_final written on rank 0) equals the reference") {
  for (int R = 1; R <= 4; ++R) {
    CAPTURE(R);
    PSpec s;
    s.B = 2, s.H = 2, s.D = 8, s.E = 4, s.seed = 11100 + std::uint32_t(R);
    s.rank_N = {};
    for (int r = 0; r < R; ++r) s.rank_N.push_back(index_t(2 * (37 + 11 * r)));  // uneven ranks, even N
    s.zigzag = true;
    PProblem p(s);
    const PRef rn = packed_reference<decay::None>(p), rh = packed_reference<decay::PerHead>(p), rg = packed_reference<decay::Gate>(p);
    run_and_check_packed<PP<decay::None, schedule::Chain>>(p, rn);
    run_and_check_packed<PP<decay::PerHead, schedule::AllGather>>(p, rh);
    run_and_check_packed<PP<decay::Gate, schedule::LogScan>>(p, rg);
    run_and_check_packed<PP<decay::Gate, schedule::Chain>>(p, rg, /*plan=*/true);
  }
}

TEST_CASE("zigzag equals contiguous after the permutation (packed, gates)") {
  PSpec s;
  s.docs = kDocs;
  s.seed = 11200;
  s.rank_N = {300, 300, 300, 300};
  PProblem contiguous(s);
  s.zigzag = true;
  PProblem zigzag(s);
  using P = PP<decay::Gate, schedule::AllGather>;
  REQUIRE(run_packed<P>(contiguous).fwd == std::vector<Status>(4, Status::kSuccess));
  REQUIRE(run_packed<P>(zigzag).bwd == std::vector<Status>(4, Status::kSuccess));
  // Both runs are gathered in global token order: the same sequence split two ways.
  CHECK(rel_err(zigzag.o, contiguous.o) <= kTolF32);
  CHECK(rel_err(zigzag.dq, contiguous.dq) <= kTolF32);
  CHECK(rel_err(zigzag.dk, contiguous.dk) <= kTolF32);
  CHECK(rel_err(zigzag.dv, contiguous.dv) <= kTolF32);
  CHECK(rel_err(zigzag.dg, contiguous.dg) <= kTolDg);
  CHECK(rel_err(zigzag.fin, contiguous.fin) <= kTolF32);
  CHECK(rel_err(zigzag.dinit, contiguous.dinit) <= kTolF32);
  // Rank 1 of the zigzag run holds global tokens [150, 300) and [900, 1050) (segments 1 and 6).
  CHECK(zigzag.pos(1, 0) == 150);
  CHECK(zigzag.pos(1, 150) == 900);
  CHECK(zigzag.pos(3, 150) == 600);
}

TEST_CASE("packed: int64 offsets, empty documents, shared and -1 state slots, no final states, with a plan") {
  for (int R : {1, 3}) {
    CAPTURE(R);
    PSpec s;
    s.docs = {0, 1, 63, 0, 64, 0, 65, 2, 200, 1, 0};  // empty documents first, inside and last
    s.bits = 64;
    s.shared_slots = true;
    s.rank_N = R == 1 ? std::vector<index_t>{396} : std::vector<index_t>{64, 65, 267};
    s.seed = 11300 + std::uint32_t(R);
    PProblem p(s);
    const PRef rg = packed_reference<decay::Gate>(p), rh = packed_reference<decay::PerHead>(p);
    run_and_check_packed<PP<decay::Gate, schedule::Chain>>(p, rg, /*plan=*/true);
    run_and_check_packed<PP<decay::PerHead, schedule::Auto>>(p, rh, /*plan=*/true);
    s.final = false;
    s.init = false;
    PProblem q(s);
    run_and_check_packed<PP<decay::Gate, schedule::AllGather>>(q, packed_reference<decay::Gate>(q));
  }
}

TEST_CASE("packed: strong per-head decay takes Truncated's single hops, documents still exact") {
  PSpec s;
  s.docs = kDocs;
  s.rank_N = contiguous_split(5);
  s.seed = 11400;
  PProblem p(s);
  p.slopes = {0.5f, 1.f};  // s N > 24 ln 2 on every rank (N >= 63)
  const PRef r = packed_reference<decay::PerHead>(p);
  run_and_check_packed<PP<decay::PerHead, schedule::Truncated<schedule::Chain>>>(p, r);
  run_and_check_packed<PP<decay::PerHead, schedule::Auto>>(p, r, /*plan=*/true);
  s.zigzag = true;
  s.rank_N = std::vector<index_t>(4, 300);
  PProblem z(s);
  z.slopes = p.slopes;
  run_and_check_packed<PP<decay::PerHead, schedule::Truncated<schedule::Chain>>>(z, packed_reference<decay::PerHead>(z));
}

namespace {
/// Runs a 3-rank packed call with rank `who`'s (or every rank's, who = -1) arguments changed;
/// every rank must return `want` from forward (and backward) and write nothing.
template <class Policy = PP<decay::Gate, schedule::Chain>>
void refused(Status want, int who, std::function<void(Shape&, Packed&, Sharding&)> f, bool plan = false) {
  PSpec s;
  s.docs = {10, 70, 48};
  s.rank_N = {40, 40, 48};
  PProblem p(s);
  POpts o;
  o.plan = plan;
  o.tweak = [&](int r, Shape& sh, Packed& pk, Sharding& z) {
    if (who < 0 || r == who) f(sh, pk, z);
  };
  const PRun rr = run_packed<Policy>(p, o);
  CHECK(rr.fwd == std::vector<Status>(3, want));
  // Backward (after the refused forward) is refused too, with one status on every rank.
  CHECK(rr.bwd == std::vector<Status>(3, rr.bwd[0]));
  CHECK((rr.bwd[0] == Status::kSuccess) == (want == Status::kSuccess));
  if (want != Status::kSuccess) CHECK(rr.untouched);
}
}  // namespace

TEST_CASE("packed: bad offsets and arguments are refused with the same status on every rank, nothing written") {
  static AlignedVec<std::int32_t> bad;
  auto offsets = [](std::vector<std::int32_t> v) {
    return [v](Shape&, Packed& pk, Sharding&) {
      bad.assign(v.begin(), v.end());
      pk.cu_seqlens = bad.data();
      pk.docs = index_t(v.size()) - 1;
    };
  };
  refused(Status::kSuccess, -1, [](Shape&, Packed&, Sharding&) {});
  SUBCASE("first offset not 0") { refused(Status::kInvalidOffsets, -1, offsets({1, 10, 80, 128})); }
  SUBCASE("decreasing") { refused(Status::kInvalidOffsets, -1, offsets({0, 80, 10, 128})); }
  SUBCASE("last below the total (seen only by the exchange, no plan)") {
    refused(Status::kInvalidOffsets, -1, offsets({0, 10, 80, 127}));
  }
  SUBCASE("last above the total, with a plan (seen on each rank alone)") {
    refused(Status::kInvalidOffsets, -1, offsets({0, 10, 80, 129}), true);
  }
  SUBCASE("bad offsets on one rank only: the ranks disagree") {
    refused(Status::kPeerMismatch, 1, offsets({0, 11, 80, 128}));
  }
  SUBCASE("one rank's offsets decreasing: its status everywhere") {
    refused(Status::kInvalidOffsets, 2, offsets({0, 80, 10, 128}));
  }
  SUBCASE("index width") { refused(Status::kInvalidOffsets, -1, [](Shape&, Packed& pk, Sharding&) { pk.index_bits = 16; }); }
  SUBCASE("no documents") { refused(Status::kInvalidOffsets, 0, [](Shape&, Packed& pk, Sharding&) { pk.docs = 0; pk.cu_seqlens = &pk; }); }
  SUBCASE("null offsets") { refused(Status::kNullPointer, 1, [](Shape&, Packed& pk, Sharding&) { pk.cu_seqlens = nullptr; }); }
  SUBCASE("state index out of range") {
    static AlignedVec<std::int32_t> idx = {0, 3, 1};
    refused(Status::kInvalidOffsets, -1, [](Shape&, Packed& pk, Sharding&) { pk.state_index = idx.data(); });
  }
  SUBCASE("one rank packed, the others not") {
    refused(Status::kPeerMismatch, 2, [](Shape&, Packed& pk, Sharding&) { pk = Packed{}; });
  }
  SUBCASE("zigzag with an odd N on one rank") {
    refused(Status::kInvalidShape, 0, [](Shape& sh, Packed&, Sharding& z) {
      z = Sharding::kZigzag;
      sh.N = 39;
    });
  }
  SUBCASE("one rank zigzag, the others contiguous") {
    refused(Status::kPeerMismatch, 1, [](Shape&, Packed&, Sharding& z) { z = Sharding::kZigzag; });
  }
  SUBCASE("misaligned int64 offsets") {
    refused(Status::kMisaligned, -1, [](Shape&, Packed& pk, Sharding&) { pk.index_bits = 64; pk.cu_seqlens = static_cast<const char*>(pk.cu_seqlens) + 4; });
  }
}

TEST_CASE("packed: whole-sequence states with documents are refused (kUnsupportedFeature); overlaps; layouts pair forward and backward") {
  using P = PP<decay::None, schedule::Chain>;
  PSpec s;
  s.docs = {3, 20};
  s.rank_N = {23};
  PProblem p(s);
  comm::HostSingle single;
  const Shape sh{1, 23, s.H, s.D, s.E, 1};
  AlignedVec<float> o(p.v.size()), dq(p.q.size()), dk(p.q.size()), dv(p.v.size());
  AlignedVec<float> qb(p.q.begin(), p.q.end()), kb(p.k.begin(), p.k.end()), vb(p.v.begin(), p.v.end()),
      db(p.dout.begin(), p.dout.end());
  AlignedVec<unsigned char> ws(workspace_size<P, float>(sh, single));
  const Workspace w{ws.data(), ws.size()};
  ForwardArgs<float, decay::None> fa{sh, token_major<const float>(qb.data(), 23, s.H, s.D),
                                     token_major<const float>(kb.data(), 23, s.H, s.D),
                                     token_major<const float>(vb.data(), 23, s.H, s.E), token_major(o.data(), 23, s.H, s.E)};
  fa.packed = p.packed_args();
  AlignedVec<float> st(std::size_t(s.H * s.D * s.E));
  fa.initial_state = st.data();
  CHECK(forward<P>(fa, single, w) == Status::kUnsupportedFeature);
  fa.initial_state = nullptr;
  fa.packed.final_states = o.data();  // overlaps the output
  CHECK(forward<P>(fa, single, w) == Status::kOverlap);
  fa.packed.final_states = reinterpret_cast<float*>(ws.data());  // overlaps the workspace
  CHECK(forward<P>(fa, single, w) == Status::kOverlap);
  fa.packed.final_states = p.fin_buf.data();
  REQUIRE(forward<P>(fa, single, w) == Status::kSuccess);
  BackwardArgs<float, decay::None> ba{sh, fa.q, fa.k, fa.v, token_major<const float>(db.data(), 23, s.H, s.E),
                                      token_major(dq.data(), 23, s.H, s.D), token_major(dk.data(), 23, s.H, s.D),
                                      token_major(dv.data(), 23, s.H, s.E)};
  CHECK(backward<P>(ba, single, w) == Status::kNotForwarded);  // forward was packed, this backward is not
  ba.packed = p.packed_args();
  ba.d_initial_state = st.data();
  CHECK(backward<P>(ba, single, w) == Status::kUnsupportedFeature);
  ba.d_initial_state = nullptr;
  ba.packed.d_initial_states = const_cast<float*>(p.pool_states.data());  // overlaps the initial states
  CHECK(backward<P>(ba, single, w) == Status::kOverlap);
  ba.packed.d_initial_states = p.dinit_buf.data();
  CHECK(backward<P>(ba, single, w) == Status::kSuccess);
  CHECK(can_implement<P>(ba, single, w) == Status::kSuccess);
  // B > 1 with documents: kInvalidShape (buffers of a B = 2 problem).
  PSpec s2;
  s2.B = 2, s2.rank_N = {23};
  PProblem p2(s2);
  const Shape sh2{2, 23, s.H, s.D, s.E, 1};
  AlignedVec<float> o2(p2.v.size()), q2(p2.q.begin(), p2.q.end());
  AlignedVec<unsigned char> ws2(workspace_size<P, float>(sh2, single));
  ForwardArgs<float, decay::None> f2{sh2, token_major<const float>(q2.data(), 23, s.H, s.D),
                                     token_major<const float>(q2.data(), 23, s.H, s.D),
                                     token_major<const float>(q2.data(), 23, s.H, s.E), token_major(o2.data(), 23, s.H, s.E)};
  REQUIRE(s.D == s.E);
  CHECK(can_implement<P>(f2, single, Workspace{ws2.data(), ws2.size()}) == Status::kSuccess);
  f2.packed = p.packed_args();
  CHECK(can_implement<P>(f2, single, Workspace{ws2.data(), ws2.size()}) == Status::kInvalidShape);
}
