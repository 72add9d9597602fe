// Empty shards (issue 11, "empty or partial shards"): a rank that holds no token (Shape::N = 0)
// passes the incoming state on (summary A = 1, L = 0), writes no output row, and still writes
// the whole-sequence final state when it is the last rank (rank 0 with zigzag) and reads the
// initial state when it is rank 0. Plain, packed and zigzag calls, the empty rank first, in the
// middle or last (and two empty ranks, and every rank empty), R = 2..5, every schedule and decay,
// against the double reference (each document alone for packed calls). Token tensors of an empty
// rank are null here (its buffers have no element).
#include <algorithm>
#include "packed_support.hpp"

using namespace lasp_test;
using namespace lasp_test::packed;
using namespace lasp;

namespace {

/// Tokens per rank before a rank is emptied (even: zigzag halves; uneven).
const std::vector<index_t> kBase = {70, 46, 90, 34, 62};

/// Where the empty rank e sits in the global sequence: one position (contiguous) or two (the
/// positions of its front and back segments, zigzag).
std::vector<index_t> empty_positions(const std::vector<index_t>& N, int e, bool zz) {
  const int R = int(N.size());
  if (!zz) {
    index_t t0 = 0;
    for (int j = 0; j < e; ++j) t0 += N[std::size_t(j)];
    return {t0};
  }
  index_t front = 0, back = 0;
  for (int j = 0; j < e; ++j) front += N[std::size_t(j)] / 2;
  for (int j = 0; j < R; ++j) back += N[std::size_t(j)] / 2;
  for (int j = R - 1; j > e; --j) back += N[std::size_t(j)] / 2;
  return {front, back};
}

/// Document lengths from cut positions (0 and T included; a repeated cut is an empty document).
std::vector<index_t> docs_from_cuts(std::vector<index_t> cuts) {
  std::sort(cuts.begin(), cuts.end());
  std::vector<index_t> docs;
  for (std::size_t i = 1; i < cuts.size(); ++i) docs.push_back(cuts[i] - cuts[i - 1]);
  return docs;
}

enum class Docs { kNone, kSpan, kBoundary };

/// The problem: kBase's first R ranks with the ranks in `empty` emptied. kSpan: documents
/// crossing the empty ranks' positions; kBoundary: a document boundary and an empty document at
/// each of those positions, empty documents first and at the end, shared / -1 state slots and
/// int64 offsets.
PSpec spec(int R, const std::vector<int>& empty, bool zz, Docs docs, std::uint32_t seed) {
  PSpec s;
  s.rank_N.assign(kBase.begin(), kBase.begin() + R);
  for (int e : empty) s.rank_N[std::size_t(e)] = 0;
  s.zigzag = zz;
  s.seed = seed;
  index_t T = 0;
  for (index_t n : s.rank_N) T += n;
  std::vector<index_t> at;
  for (int e : empty)
    for (index_t x : empty_positions(s.rank_N, e, zz)) at.push_back(x);
  if (docs == Docs::kSpan) {
    std::vector<index_t> cuts = {0, 1, 3, T};
    for (index_t x : at) {
      if (x - 5 > 3) cuts.push_back(x - 5);
      if (x + 7 < T) cuts.push_back(x + 7);
    }
    s.docs = docs_from_cuts(cuts);
  } else if (docs == Docs::kBoundary) {
    std::vector<index_t> cuts = {0, 0, 1, T, T};
    for (index_t x : at) cuts.push_back(x), cuts.push_back(x);
    s.docs = docs_from_cuts(cuts);
    s.shared_slots = true;
    s.bits = 64;
  }
  return s;
}

template <class Decay>
void every_schedule(PProblem& p, const PRef& r) {
  run_and_check_packed<PP<Decay, schedule::Chain>>(p, r);
  run_and_check_packed<PP<Decay, schedule::AllGather>>(p, r);
  run_and_check_packed<PP<Decay, schedule::Truncated<schedule::Chain>>>(p, r);
  run_and_check_packed<PP<Decay, schedule::Auto>>(p, r, /*plan=*/true);
  run_and_check_packed<PP<Decay, schedule::LogScan>>(p, r);
  run_and_check_packed<PP<Decay, schedule::Hierarchical<>>>(p, r, /*plan=*/false, /*node_size=*/2);
}

template <class Decay>
void every_case(bool zz, Docs docs, std::uint32_t seed) {
  for (int R = 2; R <= 5; ++R) {
    std::vector<std::vector<int>> empties = {{0}, {R / 2}, {R - 1}};
    if (R < 3) empties.erase(empties.begin() + 1);  // no middle rank
    if (R >= 4) empties.push_back({1, 2});           // two adjacent empty ranks
    for (const auto& empty : empties) {
      PProblem p(spec(R, empty, zz, docs, seed++));
      INFO("R=", R, " empty rank(s) ", empty[0], empty.size() > 1 ? " and the next" : "",
           docs == Docs::kNone ? " (plain)" : docs == Docs::kSpan ? " (documents across)" : " (document boundaries at)");
      every_schedule<Decay>(p, packed_reference<Decay>(p));
    }
  }
}

}  // namespace

TEST_CASE("empty shards, plain calls: R=2..5, the empty rank first, middle or last, every schedule and decay") {
  every_case<decay::None>(false, Docs::kNone, 12000);
  every_case<decay::PerHead>(false, Docs::kNone, 12100);
  every_case<decay::Gate>(false, Docs::kNone, 12200);
}
TEST_CASE("empty shards, packed calls (documents across and boundaries at the empty ranks), every schedule and decay") {
  for (Docs d : {Docs::kSpan, Docs::kBoundary}) {
    every_case<decay::None>(false, d, 12300 + 1000 * std::uint32_t(d));
    every_case<decay::PerHead>(false, d, 12400 + 1000 * std::uint32_t(d));
    every_case<decay::Gate>(false, d, 12500 + 1000 * std::uint32_t(d));
  }
}
TEST_CASE("empty shards, zigzag calls (plain and packed), every schedule and decay") {
  for (Docs d : {Docs::kNone, Docs::kSpan, Docs::kBoundary}) {
    every_case<decay::None>(true, d, 15000 + 1000 * std::uint32_t(d));
    every_case<decay::PerHead>(true, d, 15100 + 1000 * std::uint32_t(d));
    every_case<decay::Gate>(true, d, 15200 + 1000 * std::uint32_t(d));
  }
}

TEST_CASE("empty shards with strong per-head decay: Truncated's single hops stop at the empty rank, still exact") {
  for (bool zz : {false, true})
    for (Docs d : {Docs::kNone, Docs::kSpan}) {
      PProblem p(spec(5, {2}, zz, d, 18000 + std::uint32_t(zz) * 10 + std::uint32_t(d)));
      p.slopes = {0.5f, 1.f};  // s N > 24 ln 2 on every non-empty rank (N >= 34)
      const PRef r = packed_reference<decay::PerHead>(p);
      run_and_check_packed<PP<decay::PerHead, schedule::Truncated<schedule::Chain>>>(p, r);
      run_and_check_packed<PP<decay::PerHead, schedule::Auto>>(p, r, /*plan=*/true);  // the empty rank vetoes the group hop
    }
}

TEST_CASE("empty shards: every rank empty (T = 0): final state = initial state, d initial = d final, on one rank") {
  for (int R : {1, 3}) {
    for (bool zz : {false, true}) {
      CAPTURE(R);
      CAPTURE(zz);
      PSpec s;
      s.rank_N.assign(std::size_t(R), 0);
      s.zigzag = zz;
      s.seed = 19000 + std::uint32_t(R);
      PProblem plain(s);
      run_and_check_packed<PP<decay::Gate, schedule::Chain>>(plain, packed_reference<decay::Gate>(plain));
      run_and_check_packed<PP<decay::PerHead, schedule::AllGather>>(plain, packed_reference<decay::PerHead>(plain));
      s.docs = {0, 0, 0};  // three empty documents at position 0 = T
      PProblem packed(s);
      run_and_check_packed<PP<decay::Gate, schedule::LogScan>>(packed, packed_reference<decay::Gate>(packed));
      run_and_check_packed<PP<decay::None, schedule::Auto>>(packed, packed_reference<decay::None>(packed), true);
      // The rule itself, stated directly on the last run's results: an empty document's final
      // state is its initial state (zero for slot -1), its initial-state gradient its final-state
      // gradient, copied exactly.
      const index_t st = s.H * s.D * s.E;
      bool rule = packed.fin.size() == std::size_t(packed.ndocs * st) && packed.dinit.size() == packed.fin.size();
      for (index_t i = 0; rule && i < packed.ndocs; ++i) {
        const float* I = packed.doc_init(i);
        for (index_t x = 0; x < st; ++x) {
          rule = rule && packed.fin[std::size_t(i * st + x)] == (I ? double(I[x]) : 0.0);
          rule = rule && packed.dinit[std::size_t(i * st + x)] == double(packed.dF[std::size_t(i * st + x)]);
        }
      }
      CHECK(rule);
    }
  }
}
