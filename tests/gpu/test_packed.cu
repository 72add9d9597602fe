// Packed documents (cu_seqlens) on the CUDA backend, one GPU (R = 1, comm::DeviceSingle),
// against each document run alone through the double reference (gpu/packed_cuda.cuh): document
// lengths from {1, 2, 63, 64, 65, 1000, rest} with empty documents (first, inside, last),
// thousands of tokens per (b,h) so that CTAs walk many chunks and documents cross segment
// boundaries, documents on chunk boundaries, one long document, about two thousand one- and
// two-token documents, int32 and int64 offsets, a pool with shared slots and -1, no state index, no
// initial / final states, D, E in {64, 128} with D != E, decay::None and decay::PerHead, bf16
// (fp16 and fp32 for a few cases). Refusals (nothing written): no device copy of the offsets,
// B != 1, bad host offsets, whole-sequence states; a bad state_index value is found on the
// device (deferred_status). Outputs are poisoned (NaN) before every call.
//
// Names the per-token gates and the zigzag layout take (the first CUDA version may refuse them
// with kUnsupportedFeature): "gpu packed gates: ..." and "gpu zigzag: ..." (select or skip with
// -tc / -tce). "gpu packed: decay::Gate is either exact or refused ..." runs always.
#include <cmath>
#include <cstring>
#include "packed_cuda.cuh"

using namespace lasp_test;
using namespace lasp_test::packed;
namespace decay = lasp::decay;
namespace schedule = lasp::schedule;
namespace caching = lasp::caching;
namespace tile = lasp::tile;
using lasp::Status;

namespace {

using bf16 = lasp::bf16;
// One CTA per (b,h) walking every chunk of the rank, and a fixed split into 3 segments.
using Walk = tile::Tile<64, 4, 1>;
using Seg3 = tile::Tile<64, 4, 3>;
// R = 1: the schedule does not matter; the kernels are shared by every policy of one decay and
// element type, so these few policies cost little compile time.
using Pn = lasp::Policy<decay::None>;
using Ph = lasp::Policy<decay::PerHead>;
using PnWalk = lasp::Policy<decay::None, schedule::Chain, caching::Recompute, Walk>;
using PhWalk = lasp::Policy<decay::PerHead, schedule::Auto, caching::Recompute, Walk>;
using PhCache = lasp::Policy<decay::PerHead, schedule::Chain, caching::Cache, Seg3>;
using Pg = lasp::Policy<decay::Gate>;
using PgWalk = lasp::Policy<decay::Gate, schedule::Chain, caching::Recompute, Walk>;
using PgCache = lasp::Policy<decay::Gate, schedule::Chain, caching::Cache, Seg3>;

PSpec spec(index_t T, std::vector<index_t> docs, index_t H, index_t D, index_t E, std::uint32_t seed) {
  PSpec s;
  s.rank_N = {T};
  s.docs = std::move(docs);
  s.H = H, s.D = D, s.E = E;
  s.scale = float(1.0 / std::sqrt(double(D)));
  s.seed = seed;
  return s;
}

/// Documents whose starts all sit on chunk boundaries (C = 64), with pairs of short documents
/// (1 + 63, 2 + 62, 65 + 63) that fill a chunk, empty documents inside, and one of 2048 tokens.
const std::vector<index_t> kChunkAligned = {64, 128, 64, 960, 1, 63, 2, 62, 1280, 0, 64, 0, 65, 63, 2048, 64};

/// Documents of 0, 1 and 2 tokens: many document starts in every chunk.
std::vector<index_t> tiny_docs(index_t T, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<index_t> d;
  for (index_t t = 0; t < T;) {
    const index_t l = std::min<index_t>(index_t(g() % 3), T - t);
    d.push_back(l);
    t += l;
  }
  return d;
}

/// A small problem for the refusals: 4 documents (one empty) over 700 tokens.
PSpec small_spec(std::uint32_t seed) { return spec(700, {10, 300, 0, 390}, 2, 64, 64, seed); }

}  // namespace

TEST_CASE("gpu packed: documents of {1, 2, 63, 64, 65, 1000, rest} tokens and empty ones, CTAs walking many chunks, decay::None and decay::PerHead (bf16)") {
  {
    // H = 4, D = E = 128, 16K tokens: int32 offsets, a pool of 3 slots shared by the documents
    // and -1 (zero state) for every fourth document.
    PSpec s = spec(16384, draw_docs(16384, 1), 4, 128, 128, 20001);
    s.shared_slots = true;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Ph, bf16>(p, rh);
    run_and_check<PhWalk, bf16>(p, rh);
    run_and_check<PhCache, bf16>(p, rh);
    run_and_check<Pn, bf16>(p, rn);
    run_and_check<PnWalk, bf16>(p, rn);
  }
  {
    // H = 2, D = 64 != E = 128, 20000 tokens, int64 offsets, one slot per document (also with a
    // null state_index: slot i), with a plan.
    PSpec s = spec(20000, draw_docs(20000, 2), 2, 64, 128, 20002);
    s.bits = 64;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Pn, bf16>(p, rn);
    GpuOpts<bf16, decay::PerHead> o;
    o.null_index = true;
    run_and_check<PhWalk, bf16>(p, rh, o);
    o.null_index = false;
    o.plan = true;
    run_and_check<Ph, bf16>(p, rh, o);
  }
}

TEST_CASE("gpu packed: documents on chunk boundaries, one long document between empty ones, two thousand one- and two-token documents") {
  {
    PSpec s = spec(4928, kChunkAligned, 3, 128, 64, 20011);
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Ph, bf16>(p, rh);
    run_and_check<PhCache, bf16>(p, rh);
    run_and_check<PnWalk, bf16>(p, rn);
  }
  {
    // One document of 4096 tokens (64 chunks for one CTA with Walk), two empty documents before
    // and after it.
    PSpec s = spec(4096, {0, 0, 4096, 0, 0}, 2, 64, 64, 20012);
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<PhWalk, bf16>(p, rh);
    run_and_check<Pn, bf16>(p, rn);
  }
  {
    // ~2000 documents of 0, 1 or 2 tokens; shared slots and -1. (H = 1: the per-document state
    // buffers hold docs x H x D x E floats.)
    PSpec s = spec(2000, tiny_docs(2000, 20013), 1, 64, 128, 20013);
    s.shared_slots = true;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Ph, bf16>(p, rh);
    run_and_check<PnWalk, bf16>(p, rn);
  }
  {
    // Two documents: one token, then the rest; and the rest, then one token.
    for (auto docs : {std::vector<index_t>{1, 2999}, std::vector<index_t>{2999, 1}}) {
      PProblem p = gpu_problem<bf16>(spec(3000, docs, 2, 128, 128, 20014));
      run_and_check<PhWalk, bf16>(p, reference_mt<decay::PerHead>(p));
    }
  }
}

TEST_CASE("gpu packed: no initial states, no final states, no d_initial_states; int32 and int64 offsets") {
  for (int bits : {32, 64}) {
    CAPTURE(bits);
    PSpec s = spec(6000, draw_docs(6000, 30 + std::uint32_t(bits)), 2, 128, 128, 20020 + std::uint32_t(bits));
    s.bits = bits;
    s.init = false;
    s.final = false;
    PProblem p = gpu_problem<bf16>(s);
    const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
    run_and_check<Ph, bf16>(p, rh);
    run_and_check<PnWalk, bf16>(p, rn);
    GpuOpts<bf16, decay::PerHead> o;
    o.want_dinit = false;
    run_and_check<Ph, bf16>(p, rh, o);
    // Initial states without final states, and final states without initial states.
    PSpec s2 = s;
    s2.init = true;
    PProblem p2 = gpu_problem<bf16>(s2);
    run_and_check<PhWalk, bf16>(p2, reference_mt<decay::PerHead>(p2));
    PSpec s3 = s;
    s3.final = true;
    PProblem p3 = gpu_problem<bf16>(s3);
    run_and_check<Ph, bf16>(p3, reference_mt<decay::PerHead>(p3));
  }
}

TEST_CASE("gpu packed: fp16 and fp32 elements") {
  {
    PSpec s = spec(5000, draw_docs(5000, 40), 2, 64, 64, 20040);
    s.shared_slots = true;
    PProblem p = gpu_problem<lasp::fp16>(s);
    run_and_check<Ph, lasp::fp16>(p, reference_mt<decay::PerHead>(p));
  }
  {
    PSpec s = spec(5000, draw_docs(5000, 41), 2, 128, 64, 20041);
    s.bits = 64;
    PProblem p = gpu_problem<float>(s);
    run_and_check<Pn, float>(p, reference_mt<decay::None>(p));
  }
}

// Small shapes for compute-sanitizer (memcheck, racecheck):
//   compute-sanitizer --tool racecheck lasp_tests_gpu -tc="*sanitizer*"
TEST_CASE("gpu sanitizer shapes: packed documents, decay::None and decay::PerHead") {
  const std::vector<index_t> docs = {0, 1, 2, 63, 64, 65, 100, 5, 0};  // 300 tokens
  using Seg2 = tile::Tile<64, 4, 2>;
  for (index_t D : {64, 128}) {
    PSpec s = spec(300, docs, 1, D, 64, 20050 + std::uint32_t(D));
    s.shared_slots = true;
    PProblem p = gpu_problem<bf16>(s);
    run_and_check<PhWalk, bf16>(p, reference_mt<decay::PerHead>(p));
    run_and_check<lasp::Policy<decay::None, schedule::Chain, caching::Recompute, Seg2>, bf16>(p, reference_mt<decay::None>(p));
  }
}

TEST_CASE("gpu packed: refused calls (no device offsets, B != 1, bad host offsets, whole-sequence states) write nothing; the next valid call is exact") {
  using P = Ph;
  using Call = GpuCall<bf16, decay::PerHead>;
  PProblem p = gpu_problem<bf16>(small_spec(20060));
  const PRef ref = reference_mt<decay::PerHead>(p);
  // Test-owned offsets (host + device copies, int32) that replace the problem's.
  static AlignedVec<std::int32_t> bad;
  static DeviceBuf<std::int32_t>* bad_dev = nullptr;
  auto offsets = [&](std::vector<std::int32_t> v) {
    bad.assign(v.begin(), v.end());
    delete bad_dev;
    bad_dev = new DeviceBuf<std::int32_t>(bad);
    return [](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) {
      pk.cu_seqlens = bad.data();
      pk.cu_seqlens_device = bad_dev->ptr;
      pk.index_bits = 32;
      pk.docs = lasp::index_t(bad.size()) - 1;
    };
  };
  DeviceBuf<float> whole(std::size_t(p.s.H * p.s.D * p.s.E));
  auto refused = [&](const char* what, Status want, Call c, bool plan = false) {
    GpuOpts<bf16, decay::PerHead> o;
    o.plan = plan;
    o.calls = {c, Call{}};
    const GpuRun<bf16> res = run_gpu<P, bf16>(p, o);
    check_refused(res[0], want, want, what);
    check_run<decay::PerHead, bf16>(p, ref, res[1], true, label_of(p, std::string(what) + ", then a valid call"));
  };
  Call c;
  c.tweak = [](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.cu_seqlens_device = nullptr; };
  refused("no device copy of the offsets", Status::kNullPointer, c);
  c.tweak = [](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.cu_seqlens = nullptr; };
  refused("no host copy of the offsets", Status::kNullPointer, c);
  c.tweak = offsets({0, 300, 10, 310, 700});
  refused("decreasing offsets", Status::kInvalidOffsets, c);
  c.tweak = offsets({1, 10, 310, 310, 700});
  refused("first offset not 0", Status::kInvalidOffsets, c);
  c.tweak = offsets({0, 10, 310, 310, 699});
  refused("last offset below the tokens", Status::kInvalidOffsets, c);
  c.tweak = offsets({0, 10, 310, 310, 701});
  refused("last offset above the tokens, with a plan", Status::kInvalidOffsets, c, true);
  c.tweak = [](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.index_bits = 16; };
  refused("index width 16", Status::kInvalidOffsets, c);
  c.tweak = [](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.docs = 0; };
  refused("no documents", Status::kInvalidOffsets, c);
  c.tweak = nullptr;
  c.fwd = [&](int, lasp::ForwardArgs<bf16, decay::PerHead>& a) { a.initial_state = whole.ptr; };
  c.bwd = [&](int, lasp::BackwardArgs<bf16, decay::PerHead>& a) { a.d_final_state = whole.ptr; };
  refused("whole-sequence initial_state / d_final_state with documents", Status::kUnsupportedFeature, c);
  c.fwd = [&](int, lasp::ForwardArgs<bf16, decay::PerHead>& a) { a.final_state = whole.ptr; };
  c.bwd = [&](int, lasp::BackwardArgs<bf16, decay::PerHead>& a) { a.d_initial_state = whole.ptr; };
  refused("whole-sequence final_state / d_initial_state with documents", Status::kUnsupportedFeature, c);
  delete bad_dev;
  bad_dev = nullptr;
  // B = 2 with documents (buffers of a B = 2 problem, so that only B is wrong).
  PSpec s2 = small_spec(20061);
  s2.B = 2;
  PProblem p2 = gpu_problem<bf16>(s2);
  const GpuRun<bf16> res = run_gpu<P, bf16>(p2);
  check_refused(res[0], Status::kInvalidShape, Status::kInvalidShape, "B = 2 with documents");
}

// state_index lives in device memory and is read by the kernels: a slot < -1 or >= pool is found
// on the device, reported by deferred_status as kInvalidOffsets (forward and backward return
// kSuccess), and no output is written.
TEST_CASE("gpu packed: a bad state_index value is reported by deferred_status (kInvalidOffsets), outputs untouched; the next valid call is exact") {
  using P = Ph;
  using Call = GpuCall<bf16, decay::PerHead>;
  PProblem p = gpu_problem<bf16>(small_spec(20070));  // pool = docs = 4, index {0, 1, 2, 3}
  REQUIRE(p.pool == 4);
  const PRef ref = reference_mt<decay::PerHead>(p);
  for (std::vector<std::int32_t> idx : {std::vector<std::int32_t>{0, 1, 4, 3}, std::vector<std::int32_t>{0, 1, 2, -2},
                                        std::vector<std::int32_t>{-7, 1, 2, 3}}) {
    CAPTURE(idx[0]);
    CAPTURE(idx[2]);
    CAPTURE(idx[3]);
    DeviceBuf<std::int32_t> bad(idx);
    const std::int32_t* bp = bad.ptr;
    {  // forward and backward with the bad index, then a valid call
      GpuOpts<bf16, decay::PerHead> o;
      Call c;
      c.tweak = [bp](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.state_index = bp; };
      o.calls = {c, Call{}};
      const GpuRun<bf16> res = run_gpu<P, bf16>(p, o);
      const Ranked<bf16>& x = res[0][0];
      CHECK(x.fwd == Status::kSuccess);  // found on the device only
      CHECK(x.fwd_deferred == Status::kInvalidOffsets);
      // Backward after a refused forward: its own index check, or the missing forward.
      CHECK((x.bwd_seen() == Status::kInvalidOffsets || x.bwd_seen() == Status::kNotForwarded));
      CHECK(x.untouched());
      check_run<decay::PerHead, bf16>(p, ref, res[1], true, label_of(p, "bad state_index, then a valid call"));
    }
    {  // a valid forward, then a backward with the bad index, then a valid call
      GpuOpts<bf16, decay::PerHead> o;
      Call c;
      c.bwd = [bp](int, lasp::BackwardArgs<bf16, decay::PerHead>& a) { a.packed.state_index = bp; };
      o.calls = {c, Call{}};
      const GpuRun<bf16> res = run_gpu<P, bf16>(p, o);
      const Ranked<bf16>& x = res[0][0];
      CHECK(x.fwd_seen() == Status::kSuccess);
      CHECK(x.bwd == Status::kSuccess);
      CHECK(x.bwd_deferred == Status::kInvalidOffsets);
      CHECK(all_bytes(x.dq, kNaNByte));
      CHECK(all_bytes(x.dk, kNaNByte));
      CHECK(all_bytes(x.dv, kNaNByte));
      CHECK(all_bytes(x.dinit, kNaNByte));
      check_run<decay::PerHead, bf16>(p, ref, res[1], true, label_of(p, "bad state_index in backward, then a valid call"));
    }
  }
}

// docs/packed-cuda.md section 1: the device checks that its copy of the offsets hashes to the
// host copy's value, so a stale device copy is an error (deferred), not a wrong answer.
TEST_CASE("gpu packed offsets hash: a device copy of the offsets that differs from the host copy is refused, nothing written") {
  using Call = GpuCall<bf16, decay::PerHead>;
  PProblem p = gpu_problem<bf16>(small_spec(20080));
  const PRef ref = reference_mt<decay::PerHead>(p);
  const AlignedVec<std::int32_t> stale = {0, 10, 311, 311, 700};  // one boundary moved by a token
  DeviceBuf<std::int32_t> dev(stale);
  const std::int32_t* dp = dev.ptr;
  GpuOpts<bf16, decay::PerHead> o;
  Call c;
  c.tweak = [dp](int, lasp::Shape&, lasp::Packed& pk, lasp::Sharding&) { pk.cu_seqlens_device = dp; };
  o.calls = {c, Call{}};
  const GpuRun<bf16> res = run_gpu<Ph, bf16>(p, o);
  const Ranked<bf16>& x = res[0][0];
  CHECK(x.fwd_seen() != Status::kSuccess);
  CHECK(x.bwd_seen() != Status::kSuccess);
  CHECK(x.untouched());
  MESSAGE("stale device offsets: forward ", x.fwd_seen(), ", backward ", x.bwd_seen());
  check_run<decay::PerHead, bf16>(p, ref, res[1], true, label_of(p, "stale device offsets, then a valid call"));
}

// Whatever the backend does with per-token gates and documents: exact, or refused with
// kUnsupportedFeature (forward and backward) and nothing written.
TEST_CASE("gpu packed: decay::Gate is either exact or refused with kUnsupportedFeature, nothing written") {
  PSpec s = spec(3000, draw_docs(3000, 90), 2, 64, 128, 20090);
  s.shared_slots = true;
  PProblem p = gpu_problem<bf16>(s);
  const PRef ref = reference_mt<decay::Gate>(p);
  exact_or_unsupported<Pg, bf16>(p, ref);
  exact_or_unsupported<PgWalk, bf16>(p, ref);
}

// ---- per-token gates (decay::Gate) with documents ----------------------------------------------

TEST_CASE("gpu packed gates: documents of {1, 2, 63, 64, 65, 1000, rest} tokens, CTAs walking many chunks") {
  {
    PSpec s = spec(12000, draw_docs(12000, 100), 3, 128, 128, 20100);
    s.shared_slots = true;
    PProblem p = gpu_problem<bf16>(s);
    const PRef ref = reference_mt<decay::Gate>(p);
    run_and_check<Pg, bf16>(p, ref);
    run_and_check<PgWalk, bf16>(p, ref);
    run_and_check<PgCache, bf16>(p, ref);
  }
  {
    PSpec s = spec(4928, kChunkAligned, 2, 64, 128, 20101);
    s.bits = 64;
    PProblem p = gpu_problem<bf16>(s);
    const PRef ref = reference_mt<decay::Gate>(p);
    run_and_check<PgWalk, bf16>(p, ref);
    GpuOpts<bf16, decay::Gate> o;
    o.plan = true;
    run_and_check<Pg, bf16>(p, ref, o);
  }
  {
    PSpec s = spec(2000, tiny_docs(2000, 20102), 1, 64, 64, 20102);
    PProblem p = gpu_problem<bf16>(s);
    run_and_check<Pg, bf16>(p, reference_mt<decay::Gate>(p));
  }
}

TEST_CASE("gpu packed gates: no initial or final states, a long document, fp32 elements") {
  {
    PSpec s = spec(6000, draw_docs(6000, 110), 2, 128, 64, 20110);
    s.init = false;
    s.final = false;
    PProblem p = gpu_problem<bf16>(s);
    run_and_check<PgWalk, bf16>(p, reference_mt<decay::Gate>(p));
  }
  {
    PProblem p = gpu_problem<bf16>(spec(4096, {0, 4096, 0}, 2, 64, 64, 20111));
    run_and_check<PgWalk, bf16>(p, reference_mt<decay::Gate>(p));
  }
  {
    PSpec s = spec(3000, draw_docs(3000, 112), 2, 64, 64, 20112);
    PProblem p = gpu_problem<float>(s);
    run_and_check<Pg, float>(p, reference_mt<decay::Gate>(p));
  }
}

TEST_CASE("gpu packed gates: sanitizer shapes") {
  PSpec s = spec(300, {0, 1, 2, 63, 64, 65, 100, 5, 0}, 1, 64, 128, 20120);
  s.shared_slots = true;
  PProblem p = gpu_problem<bf16>(s);
  const PRef ref = reference_mt<decay::Gate>(p);
  run_and_check<PgWalk, bf16>(p, ref);
  run_and_check<PgCache, bf16>(p, ref);
}

// ---- the zigzag layout on one rank (front and back halves: the two virtual segments) -----------

TEST_CASE("gpu zigzag: packed documents on one rank, decay::None and decay::PerHead") {
  PSpec s = spec(8192, draw_docs(8192, 130), 2, 128, 128, 20130);
  s.zigzag = true;
  s.shared_slots = true;
  PProblem p = gpu_problem<bf16>(s);
  const PRef rh = reference_mt<decay::PerHead>(p), rn = reference_mt<decay::None>(p);
  run_and_check<Ph, bf16>(p, rh);
  run_and_check<PhWalk, bf16>(p, rh);
  run_and_check<PnWalk, bf16>(p, rn);
  // A document crossing the middle (the end of the front half), and one ending exactly there.
  for (auto docs : {std::vector<index_t>{1000, 2000, 1096}, std::vector<index_t>{0, 2048, 2048, 0}}) {
    PSpec z = spec(4096, docs, 2, 64, 64, 20131);
    z.zigzag = true;
    PProblem q = gpu_problem<bf16>(z);
    run_and_check<PhWalk, bf16>(q, reference_mt<decay::PerHead>(q));
  }
}

TEST_CASE("gpu zigzag: whole sequence without documents (B = 2, initial and final state on rank 0)") {
  PSpec s = spec(640, {}, 2, 64, 128, 20140);
  s.B = 2;
  s.zigzag = true;
  PProblem p = gpu_problem<bf16>(s);
  run_and_check<Ph, bf16>(p, packed_reference<decay::PerHead>(p));
  run_and_check<PnWalk, bf16>(p, packed_reference<decay::None>(p));
}

TEST_CASE("gpu zigzag: packed gates and zigzag gates") {
  PSpec s = spec(4096, draw_docs(4096, 150), 2, 64, 64, 20150);
  s.zigzag = true;
  PProblem p = gpu_problem<bf16>(s);
  run_and_check<PgWalk, bf16>(p, reference_mt<decay::Gate>(p));
  PSpec w = spec(640, {}, 2, 64, 64, 20151);
  w.B = 2;
  w.zigzag = true;
  PProblem q = gpu_problem<bf16>(w);
  run_and_check<Pg, bf16>(q, packed_reference<decay::Gate>(q));
}
