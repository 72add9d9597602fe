// Packed documents (cu_seqlens) across ranks on the CUDA backend: R = 2, 3, 5 ranks as threads
// on ONE GPU through comm::DeviceGroup (gpu/packed_cuda.cuh runs them), against each document
// run alone through the double reference. Documents crossing ranks, a rank whose tokens all lie
// inside one document, documents ending exactly on rank boundaries, empty documents first,
// inside and last, every schedule (Chain, AllGather, LogScan, Truncated<Chain>, Auto) with and
// without a plan, decay::None and decay::PerHead, int32 and int64 offsets, shared / -1 slots,
// no states; and the agreement: bad offsets on one rank only give the same status on every rank
// (returned by the refusing rank, deferred_status on the others), nothing written, and the next
// valid call on the same group and workspaces is exact.
//
// Names the per-token gates and the zigzag layout take (the first CUDA version may refuse them):
// "1-GPU groups: packed gates ..." and "1-GPU groups: zigzag ..." (select or skip with -tc /
// -tce). "1-GPU groups: packed, decay::Gate is either exact or refused ..." runs always.
#include "gpu/packed_cuda.cuh"

using namespace lasp_test;
using namespace lasp_test::packed;
namespace decay = lasp::decay;
namespace schedule = lasp::schedule;
namespace caching = lasp::caching;
namespace tile = lasp::tile;
using lasp::Status;

namespace {

using bf16 = lasp::bf16;
using Walk = tile::Tile<64, 4, 1>;  // one CTA per (b,h) walks every chunk of the rank
using Seg3 = tile::Tile<64, 4, 3>;
template <class Decay, class Schedule, class Caching = caching::Recompute, class Tile = tile::Auto>
using Pol = lasp::Policy<Decay, Schedule, Caching, Tile>;

/// 3000 tokens; document boundaries at 0 | 64 | 65 | 67 | 130 | 195 | 1195 | 1200 | 1900 1900 |
/// 3000 3000 (empty documents first, inside and last).
const std::vector<index_t> kDocs = {0, 64, 1, 2, 63, 65, 1000, 5, 700, 0, 1100, 0};

/// Splits of kDocs' 3000 tokens over R ranks.
struct Split {
  std::vector<index_t> rank_N;
  const char* what;
};
const Split kSplits[] = {
    {{700, 2300}, "the 1000-token document crosses the rank boundary"},
    {{1200, 1800}, "a document ends exactly on the rank boundary"},
    {{195, 1300, 1505}, "rank 0 ends with a document; rank 1 starts with one, the 700-token one crosses into rank 2"},
    {{130, 400, 400, 670, 1400},
     "rank 2 lies inside the 1000-token document; rank 0 ends with a document; rank 4 ends with empty ones"},
};

PSpec spec(std::vector<index_t> rank_N, std::vector<index_t> docs, index_t H, index_t D, index_t E, std::uint32_t seed) {
  PSpec s;
  s.rank_N = std::move(rank_N);
  s.docs = std::move(docs);
  s.H = H, s.D = D, s.E = E;
  s.scale = float(1.0 / std::sqrt(double(D)));
  s.seed = seed;
  return s;
}

/// Every schedule without a side stream, with and without a plan, and a CTA walking every chunk.
template <class Decay>
void every_schedule(PProblem& p, const PRef& ref, const std::string& what) {
  GpuOpts<bf16, Decay> plain, plan;
  plan.plan = true;
  run_and_check<Pol<Decay, schedule::Chain>, bf16>(p, ref, plain, what);
  run_and_check<Pol<Decay, schedule::AllGather>, bf16>(p, ref, plain, what);
  run_and_check<Pol<Decay, schedule::LogScan>, bf16>(p, ref, plain, what);
  run_and_check<Pol<Decay, schedule::Truncated<schedule::Chain>>, bf16>(p, ref, plain, what);
  run_and_check<Pol<Decay, schedule::Auto>, bf16>(p, ref, plain, what);
  run_and_check<Pol<Decay, schedule::Auto>, bf16>(p, ref, plan, what);
  run_and_check<Pol<Decay, schedule::Chain>, bf16>(p, ref, plan, what);
  run_and_check<Pol<Decay, schedule::LogScan>, bf16>(p, ref, plan, what);
  run_and_check<Pol<Decay, schedule::AllGather, caching::Recompute, Walk>, bf16>(p, ref, plain, what);
}

/// kDocs over every split: D = E = 64 (D = 128, E = 64 on three ranks).
template <class Decay>
void every_split(std::uint32_t seed) {
  for (const Split& sp : kSplits) {
    const index_t D = sp.rank_N.size() == 3 ? 128 : 64;
    PSpec s = spec(sp.rank_N, kDocs, 2, D, 64, seed++);
    s.shared_slots = sp.rank_N.size() != 2;
    PProblem p = gpu_problem<bf16>(s);
    every_schedule<Decay>(p, reference_mt<Decay>(p), sp.what);
  }
}

/// Test-owned offsets of one rank (host and device copies, int32).
struct Offsets {
  AlignedVec<std::int32_t> host;
  DeviceBuf<std::int32_t> dev;
  explicit Offsets(std::vector<std::int32_t> v) : host(v.begin(), v.end()), dev(host) {}
};

}  // namespace

TEST_CASE("1-GPU groups: packed, R = 2, 3, 5, every schedule, decay::None: documents crossing ranks, a rank inside one document, documents ending on rank boundaries") {
  every_split<decay::None>(30000);
}

TEST_CASE("1-GPU groups: packed, R = 2, 3, 5, every schedule, decay::PerHead: documents crossing ranks, a rank inside one document, documents ending on rank boundaries") {
  every_split<decay::PerHead>(30100);
}

TEST_CASE("1-GPU groups: packed, strong per-head decay takes Truncated's single hops, documents still exact") {
  PSpec s = spec(kSplits[3].rank_N, kDocs, 2, 64, 64, 30200);
  PProblem p = gpu_problem<bf16>(s);
  p.slopes = {0.5f, 1.f};  // s N > 24 ln 2 on every rank (N >= 130)
  const PRef ref = reference_mt<decay::PerHead>(p);
  GpuOpts<bf16, decay::PerHead> plain, plan;
  plan.plan = true;
  run_and_check<Pol<decay::PerHead, schedule::Truncated<schedule::Chain>>, bf16>(p, ref, plain, "strong decay");
  run_and_check<Pol<decay::PerHead, schedule::Auto>, bf16>(p, ref, plan, "strong decay, the plan's single hop");
  run_and_check<Pol<decay::PerHead, schedule::Auto>, bf16>(p, ref, plain, "strong decay");
}

TEST_CASE("1-GPU groups: packed, many chunks per CTA, int64 offsets, shared and -1 slots, null state_index, no states, fp16") {
  const std::vector<index_t> docs = draw_docs(6000, 30300);
  {
    PSpec s = spec({1000, 2500, 2500}, docs, 2, 128, 128, 30300);
    s.bits = 64;
    s.shared_slots = true;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Pol<decay::PerHead, schedule::LogScan, caching::Recompute, Walk>, bf16>(p, rh);
    run_and_check<Pol<decay::None, schedule::Chain, caching::Cache, Seg3>, bf16>(p, rn);
  }
  {
    PSpec s = spec({1000, 2500, 2500}, docs, 2, 64, 128, 30301);
    s.init = false;
    s.final = false;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Pol<decay::PerHead, schedule::AllGather>, bf16>(p, rh);
    GpuOpts<bf16, decay::None> o;
    o.want_dinit = false;
    run_and_check<Pol<decay::None, schedule::Chain>, bf16>(p, rn, o);
  }
  {
    PSpec s = spec({2000, 1000, 3000}, docs, 2, 64, 64, 30302);
    PProblem p = gpu_problem<bf16>(s);
    GpuOpts<bf16, decay::PerHead> o;
    o.null_index = true;  // slot i for document i
    o.plan = true;
    run_and_check<Pol<decay::PerHead, schedule::Auto>, bf16>(p, reference_mt<decay::PerHead>(p), o);
  }
  {
    PSpec s = spec({2500, 3500}, docs, 2, 64, 64, 30303);
    s.shared_slots = true;
    PProblem p = gpu_problem<lasp::fp16>(s);
    run_and_check<Pol<decay::PerHead, schedule::Chain>, lasp::fp16>(p, reference_mt<decay::PerHead>(p));
  }
}

namespace {
/// R ranks, rank `who` (every rank: -1) with `tweak` applied: every rank sees `want` (forward
/// and backward), nothing is written, and the next valid call is exact.
template <class Policy>
void refused(int R, const char* what, Status want, int who,
             std::function<void(lasp::Shape&, lasp::Packed&, lasp::Sharding&)> tweak, bool plan = false,
             bool zigzag = false) {
  using Decay = typename Policy::Decay;
  const std::vector<index_t> rank_N = R == 2 ? std::vector<index_t>{400, 500} : std::vector<index_t>{300, 300, 300};
  PSpec s = spec(rank_N, {10, 300, 0, 390, 200}, 2, 64, 64, 30400 + std::uint32_t(R));
  s.zigzag = zigzag;
  PProblem p = gpu_problem<bf16>(s);
  const PRef ref = reference_mt<Decay>(p);
  GpuOpts<bf16, Decay> o;
  o.plan = plan;
  GpuCall<bf16, Decay> bad;
  bad.tweak = [&](int r, lasp::Shape& sh, lasp::Packed& pk, lasp::Sharding& z) {
    if (who < 0 || r == who) tweak(sh, pk, z);
  };
  o.calls = {bad, GpuCall<bf16, Decay>{}};
  const std::string label = label_of(p, lasp::describe<Policy>() + (plan ? " plan" : "") + ", rank " +
                                            std::to_string(who) + ": " + what);
  const GpuRun<bf16> res = run_gpu<Policy, bf16>(p, o);
  check_refused(res[0], want, want, label);  // every rank: returned, or deferred_status
  check_run<Decay, bf16>(p, ref, res[1], true, label + ", then a valid call");
}

template <class Policy>
void every_refusal(int R, bool plan) {
  // Offsets of the test problem: 0 10 310 310 700 900.
  static Offsets decreasing({0, 310, 10, 310, 700, 900}), other({0, 11, 310, 310, 700, 900}),
      short_({0, 10, 310, 310, 700, 899}), long_({0, 10, 310, 310, 700, 901});
  auto use = [](Offsets& x) {
    return [&x](lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) {
      pk.cu_seqlens = x.host.data();
      pk.cu_seqlens_device = x.dev.ptr;
      pk.index_bits = 32;
      pk.docs = index_t(x.host.size()) - 1;
    };
  };
  refused<Policy>(R, "decreasing offsets", Status::kInvalidOffsets, 1, use(decreasing), plan);
  refused<Policy>(R, "other (valid) offsets: the ranks disagree", Status::kPeerMismatch, R - 1, use(other), plan);
  refused<Policy>(R, "no device copy of the offsets", Status::kNullPointer, 0,
                  [](lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.cu_seqlens_device = nullptr; }, plan);
  refused<Policy>(R, "index width 16", Status::kInvalidOffsets, R - 1,
                  [](lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.index_bits = 16; }, plan);
  refused<Policy>(R, "one rank not packed", Status::kPeerMismatch, 1,
                  [](lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk = lasp::Packed{}; }, plan);
  // Every rank: the last offset is not the group's total (without a plan only the exchange of
  // the ranks' N can tell; with a plan each rank alone).
  refused<Policy>(R, "last offset below the total", Status::kInvalidOffsets, -1, use(short_), plan);
  refused<Policy>(R, "last offset above the total", Status::kInvalidOffsets, -1, use(long_), plan);
}
}  // namespace

TEST_CASE("1-GPU groups: packed refusals agree: bad offsets on one rank only give the same status on every rank, nothing written, then a valid call is exact") {
  for (int R : {2, 3}) {
    CAPTURE(R);
    every_refusal<Pol<decay::PerHead, schedule::Chain>>(R, false);
    every_refusal<Pol<decay::PerHead, schedule::AllGather>>(R, false);
    every_refusal<Pol<decay::PerHead, schedule::LogScan>>(R, true);
    every_refusal<Pol<decay::None, schedule::Auto>>(R, true);
  }
}

// Whatever the backend does with per-token gates and documents across ranks: exact, or refused
// with kUnsupportedFeature on every rank (forward and backward) and nothing written.
TEST_CASE("1-GPU groups: packed, decay::Gate is either exact or refused with kUnsupportedFeature on every rank, nothing written") {
  PSpec s = spec(kSplits[2].rank_N, kDocs, 2, 64, 64, 30500);
  PProblem p = gpu_problem<bf16>(s);
  const PRef ref = reference_mt<decay::Gate>(p);
  exact_or_unsupported<Pol<decay::Gate, schedule::Chain>, bf16>(p, ref);
  exact_or_unsupported<Pol<decay::Gate, schedule::LogScan>, bf16>(p, ref);
  GpuOpts<bf16, decay::Gate> o;
  o.plan = true;
  exact_or_unsupported<Pol<decay::Gate, schedule::AllGather>, bf16>(p, ref, o);
}

// ---- per-token gates (decay::Gate) with documents across ranks ---------------------------------

TEST_CASE("1-GPU groups: packed gates: R = 2, 3, 5, every schedule: documents crossing ranks, a rank inside one document, documents ending on rank boundaries") {
  every_split<decay::Gate>(30600);
}

TEST_CASE("1-GPU groups: packed gates: int64 offsets, shared slots, no states, many chunks per CTA") {
  const std::vector<index_t> docs = draw_docs(6000, 30700);
  PSpec s = spec({1000, 2500, 2500}, docs, 2, 128, 64, 30700);
  s.bits = 64;
  s.shared_slots = true;
  PProblem p = gpu_problem<bf16>(s);
  const PRef ref = reference_mt<decay::Gate>(p);
  run_and_check<Pol<decay::Gate, schedule::LogScan, caching::Recompute, Walk>, bf16>(p, ref);
  run_and_check<Pol<decay::Gate, schedule::Chain, caching::Cache, Seg3>, bf16>(p, ref);
  s.init = false;
  s.final = false;
  PProblem q = gpu_problem<bf16>(s);
  run_and_check<Pol<decay::Gate, schedule::AllGather>, bf16>(q, reference_mt<decay::Gate>(q));
}

// ---- the zigzag layout (rank r holds virtual segments r and 2R-1-r) ----------------------------

namespace {
const std::vector<std::vector<index_t>> kZigzagSplits = {
    {1500, 1500}, {1000, 1000, 1000}, {400, 1400, 1200}, {600, 600, 600, 600, 600}};
}

TEST_CASE("1-GPU groups: zigzag: packed documents, R = 2, 3, 5, every schedule, decay::None and decay::PerHead") {
  std::uint32_t seed = 30800;
  for (const auto& rank_N : kZigzagSplits) {
    PSpec s = spec(rank_N, kDocs, 2, 64, 64, seed++);
    s.zigzag = true;
    s.shared_slots = true;
    PProblem p = gpu_problem<bf16>(s);
    every_schedule<decay::PerHead>(p, reference_mt<decay::PerHead>(p), "zigzag");
    const PRef rn = reference_mt<decay::None>(p);
    run_and_check<Pol<decay::None, schedule::Chain>, bf16>(p, rn, {}, "zigzag");
    run_and_check<Pol<decay::None, schedule::LogScan, caching::Recompute, Walk>, bf16>(p, rn, {}, "zigzag");
  }
}

TEST_CASE("1-GPU groups: zigzag: whole sequence without documents (B = 2, initial and final state on rank 0), R = 2, 3, 5") {
  std::uint32_t seed = 30900;
  for (const auto& rank_N : std::vector<std::vector<index_t>>{{74, 96}, {74, 96, 130}, {64, 2, 128, 66, 140}}) {
    PSpec s = spec(rank_N, {}, 2, 64, 128, seed++);
    s.B = 2;
    s.zigzag = true;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = packed_reference<decay::PerHead>(p);
    GpuOpts<bf16, decay::PerHead> plan;
    plan.plan = true;
    run_and_check<Pol<decay::PerHead, schedule::Chain>, bf16>(p, rh, {}, "zigzag");
    run_and_check<Pol<decay::PerHead, schedule::AllGather>, bf16>(p, rh, {}, "zigzag");
    run_and_check<Pol<decay::PerHead, schedule::LogScan>, bf16>(p, rh, plan, "zigzag");
    run_and_check<Pol<decay::None, schedule::Auto>, bf16>(p, packed_reference<decay::None>(p), {}, "zigzag");
  }
}

TEST_CASE("1-GPU groups: zigzag: packed gates and zigzag gates, R = 2, 3, 5") {
  std::uint32_t seed = 31000;
  for (const auto& rank_N : kZigzagSplits) {
    PSpec s = spec(rank_N, kDocs, 2, 64, 64, seed++);
    s.zigzag = true;
    PProblem p = gpu_problem<bf16>(s);
    const PRef ref = reference_mt<decay::Gate>(p);
    run_and_check<Pol<decay::Gate, schedule::Chain>, bf16>(p, ref, {}, "zigzag");
    run_and_check<Pol<decay::Gate, schedule::LogScan>, bf16>(p, ref, {}, "zigzag");
  }
  PSpec w = spec({74, 96, 130}, {}, 2, 64, 64, seed++);
  w.B = 2;
  w.zigzag = true;
  PProblem q = gpu_problem<bf16>(w);
  run_and_check<Pol<decay::Gate, schedule::AllGather>, bf16>(q, packed_reference<decay::Gate>(q), {}, "zigzag");
}

TEST_CASE("1-GPU groups: zigzag: refusals agree (odd N on one rank, one rank contiguous), nothing written, then a valid call is exact") {
  using P = Pol<decay::PerHead, schedule::Chain>;
  refused<P>(3, "zigzag with an odd N", Status::kInvalidShape, 0,
             [](lasp::Shape& sh, lasp::Packed&, lasp::Sharding&) { sh.N -= 1; }, false, /*zigzag=*/true);
  refused<P>(3, "one rank zigzag, the others contiguous", Status::kPeerMismatch, 1,
             [](lasp::Shape&, lasp::Packed&, lasp::Sharding& z) { z = lasp::Sharding::kZigzag; });
}
