// The CUDA backend on one GPU against the double reference: every decay, bf16 and fp16, head
// dims 64/128 with D != E, tails, B > 1, H > 1, both layouts, scale, initial/final states,
// explicit segment splits, both caching policies. Outputs are poisoned (NaN) before each run.
#include <doctest/doctest.h>
#include <lasp/lasp.cuh>
#include <cstdio>
#include <cstring>
#include <string>
#include "../common/device.hpp"

using namespace lasp_test;

namespace {

struct Case {
  lasp::index_t B, N, H, D, E;
  Layout layout;
  float scale;
  bool states;
  lasp::index_t pad = 0;
};

template <class Elem> struct Limits;
// Limits are norm-wise relative errors against the double reference on the rounded inputs.
// The kernels round the masked scores, the state and the scaled K/Q rows to the element type
// before the tensor-core products (fp32 accumulation), so errors are a small multiple of the
// unit roundoff u: bf16 u = 2^-8, fp16 u = 2^-11. dg is a reverse cumulative sum of
// q.dq - k.dk, which cancels: it gets twice the limit.
template <> struct Limits<lasp::bf16> { static constexpr double kOut = 1.6e-2, kDg = 3.2e-2; };
template <> struct Limits<lasp::fp16> { static constexpr double kOut = 2.5e-3, kDg = 5e-3; };
// fp32 elements are rounded to bf16 for the tensor cores (documented): the bf16 limits apply.
template <> struct Limits<float> { static constexpr double kOut = 1.6e-2, kDg = 3.2e-2; };

template <class Elem, class Policy>
void run_case(const Case& c, std::uint32_t seed) {
  using Decay = typename Policy::Decay;
  ProblemSpec s;
  s.B = c.B; s.N = c.N; s.H = c.H; s.D = c.D; s.E = c.E; s.R = 1;
  s.layout = c.layout; s.scale = c.scale; s.initial_state = c.states; s.final_state = c.states;
  s.pad = c.pad; s.seed = seed;
  GlobalProblem<Elem> hp(s);
  DeviceProblem<Elem> dp(hp);
  lasp::comm::DeviceSingle comm;
  const lasp::Shape shape = hp.shape();
  const std::size_t wsb = lasp::workspace_size<Policy, Elem>(shape, comm);
  DeviceBuf<unsigned char> ws(wsb);
  const lasp::Workspace w{ws.ptr, wsb};
  cudaStream_t st;
  LASP_TEST_CUDA(cudaStreamCreate(&st));
  auto fa = dp.template forward_args<Decay>(0);
  REQUIRE(lasp::forward<Policy>(fa, comm, w, st) == lasp::Status::kSuccess);
  auto ba = dp.template backward_args<Decay>(0);
  REQUIRE(lasp::backward<Policy>(ba, comm, w, st) == lasp::Status::kSuccess);
  REQUIRE(lasp::cuda::deferred_status(w, st) == lasp::Status::kSuccess);
  LASP_TEST_CUDA(cudaStreamSynchronize(st));
  LASP_TEST_CUDA(cudaStreamDestroy(st));
  dp.download();
  const RefResult ref = run_reference<Decay>(hp);
  INFO(lasp::describe<Policy>(), " ", std::string(lasp::to_string(lasp::dtype_of<Elem>::value)), " B=", c.B, " N=", c.N,
       " H=", c.H, " D=", c.D, " E=", c.E, " ", std::string(to_string(c.layout)), " scale=", c.scale, " states=", c.states);
  const double eo = rel_err(hp.o(), ref.o), edq = rel_err(hp.dq(), ref.dq), edk = rel_err(hp.dk(), ref.dk),
               edv = rel_err(hp.dv(), ref.dv);
  CHECK(eo < Limits<Elem>::kOut);
  CHECK(edq < Limits<Elem>::kOut);
  CHECK(edk < Limits<Elem>::kOut);
  CHECK(edv < Limits<Elem>::kOut);
  CHECK(hp.padding_intact());
  if (c.states) {
    CHECK(rel_err(hp.final_state(), ref.final_state) < Limits<Elem>::kOut);
    CHECK(rel_err(hp.d_initial_state(), ref.dinit) < Limits<Elem>::kOut);
  }
  if constexpr (Decay::kHasGradient) CHECK(rel_err(hp.dg(), ref.dlog) < Limits<Elem>::kDg);
  MESSAGE("o ", eo, " dq ", edq, " dk ", edk, " dv ", edv);
}

const Case kCases[] = {
    {1, 64, 1, 64, 64, Layout::kTokenMajor, 1.f, false},
    {1, 1, 2, 64, 64, Layout::kTokenMajor, 1.f, true},
    {2, 100, 3, 128, 64, Layout::kHeadMajor, 0.125f, true},
    {1, 257, 2, 64, 128, Layout::kTokenMajor, 0.5f, true, 8},
    {2, 63, 2, 128, 128, Layout::kTokenMajor, 1.f, true},
    {1, 1500, 1, 128, 128, Layout::kHeadMajor, 0.0884f, true},
};

template <class Elem, class Decay>
void run_all() {
  std::uint32_t seed = 100;
  for (const Case& c : kCases) run_case<Elem, lasp::Policy<Decay>>(c, seed++);
}

}  // namespace

TEST_CASE_TEMPLATE("gpu chunk kernels match the reference: no decay", Elem, lasp::bf16, lasp::fp16) {
  run_all<Elem, lasp::decay::None>();
}
TEST_CASE_TEMPLATE("gpu chunk kernels match the reference: per-head decay", Elem, lasp::bf16, lasp::fp16) {
  run_all<Elem, lasp::decay::PerHead>();
}
TEST_CASE_TEMPLATE("gpu chunk kernels match the reference: per-token gates", Elem, lasp::bf16, lasp::fp16) {
  run_all<Elem, lasp::decay::Gate>();
}

// fp32 inputs and outputs (bf16 operand precision inside, fp32 accumulation and states).
TEST_CASE("gpu chunk kernels match the reference: fp32 elements, every decay") {
  std::uint32_t seed = 300;
  for (const Case& c : kCases) {
    run_case<float, lasp::Policy<lasp::decay::PerHead>>(c, seed++);
    run_case<float, lasp::Policy<lasp::decay::Gate, lasp::schedule::Chain, lasp::caching::Cache>>(c, seed++);
  }
  run_case<float, lasp::Policy<lasp::decay::None>>(kCases[3], seed++);
}

// Both kernel families: the sm_80 family (tile::Tile<..., 80>) and every sm_90a wgmma kernel
// (tile::Tile<..., 90>; on other devices or builds without sm_90a the same sm_80 kernels), on
// the cases the sm_90 kernels take (bf16 operands, E = 128 or D = 128), every decay, fp32
// elements, and CTAs walking 64 chunks.
TEST_CASE("gpu: both kernel families match the reference") {
  using Sm80 = lasp::tile::Tile<64, 4, 0, 80>;
  using Sm90 = lasp::tile::Tile<64, 4, 0, 90>;
  using Walk90 = lasp::tile::Tile<64, 4, 1, 90>;
  const Case cases[] = {
      {1, 257, 2, 64, 128, Layout::kTokenMajor, 0.5f, true, 8},
      {2, 63, 2, 128, 128, Layout::kTokenMajor, 1.f, true},
      {2, 1000, 3, 128, 128, Layout::kHeadMajor, 0.0884f, true},
      {1, 300, 2, 128, 64, Layout::kTokenMajor, 0.25f, true},
  };
  std::uint32_t seed = 500;
  for (const Case& c : cases) {
    run_case<lasp::bf16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Auto, lasp::caching::Recompute, Sm80>>(c, seed);
    run_case<lasp::bf16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Auto, lasp::caching::Recompute, Sm90>>(c, seed++);
    run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate, lasp::schedule::Auto, lasp::caching::Recompute, Sm80>>(c, seed);
    run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate, lasp::schedule::Auto, lasp::caching::Recompute, Sm90>>(c, seed++);
    run_case<float, lasp::Policy<lasp::decay::None, lasp::schedule::Auto, lasp::caching::Recompute, Sm90>>(c, seed++);
  }
  const Case walk{1, 4096, 2, 128, 128, Layout::kTokenMajor, 0.0884f, true};
  run_case<lasp::bf16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Auto, lasp::caching::Recompute, Walk90>>(walk, 600);
  run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate, lasp::schedule::Auto, lasp::caching::Recompute, Walk90>>(walk, 601);
}

// The sm_90a kernels under compute-sanitizer: tails, a CTA walking 11 chunks, both decays.
TEST_CASE("gpu sanitizer shapes: the sm_90a kernels") {
  using Walk90 = lasp::tile::Tile<64, 4, 1, 90>;
  const Case tail{1, 100, 2, 128, 128, Layout::kTokenMajor, 0.5f, true};
  const Case walk{1, 700, 1, 128, 128, Layout::kHeadMajor, 0.25f, true};
  run_case<lasp::bf16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Auto, lasp::caching::Recompute, Walk90>>(tail, 700);
  run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate, lasp::schedule::Auto, lasp::caching::Recompute, Walk90>>(walk, 701);
}

TEST_CASE("gpu: explicit segment splits and state caching give the same answers") {
  using T3 = lasp::tile::Tile<64, 4, 3>;
  using T1 = lasp::tile::Tile<64, 4, 1>;
  const Case c{2, 700, 2, 128, 128, Layout::kTokenMajor, 0.25f, true};
  run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate, lasp::schedule::Chain, lasp::caching::Cache, T3>>(c, 7);
  run_case<lasp::bf16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Recompute, T1>>(c, 8);
  run_case<lasp::fp16, lasp::Policy<lasp::decay::None, lasp::schedule::AllGather, lasp::caching::Cache, T3>>(c, 9);
}

// Small shapes for compute-sanitizer (memcheck, racecheck): tails, both head dims, every decay,
// and CTAs that walk many chunks.
// Run: compute-sanitizer --tool racecheck lasp_tests_gpu -tc="*sanitizer*"
TEST_CASE("gpu sanitizer shapes: tails, every decay, both head dims") {
  const Case small[] = {
      {1, 1, 1, 64, 64, Layout::kTokenMajor, 1.f, true},
      {1, 70, 1, 128, 128, Layout::kHeadMajor, 0.5f, true},
      {2, 65, 1, 64, 128, Layout::kTokenMajor, 1.f, false},
  };
  std::uint32_t seed = 500;
  for (const Case& c : small) {
    run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate>>(c, seed++);
    run_case<lasp::fp16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Cache>>(c, seed++);
    run_case<lasp::bf16, lasp::Policy<lasp::decay::None>>(c, seed++);
  }
  // Each CTA walks many chunks (the production case): one segment of 700 tokens (11 chunks, a
  // tail) per (b,h), and three segments of 4 chunks with gates and cached states.
  using T1 = lasp::tile::Tile<64, 4, 1>;
  using T3 = lasp::tile::Tile<64, 4, 3>;
  const Case walk{2, 700, 1, 128, 64, Layout::kTokenMajor, 0.25f, true};
  run_case<lasp::bf16, lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Recompute, T1>>(walk, seed++);
  run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate, lasp::schedule::Chain, lasp::caching::Cache, T3>>(walk, seed++);
}

// A gate > 0 is found on the device: forward and backward return kSuccess (the check cannot
// synchronise), deferred_status says kInvalidDecay, and no output element is written.
TEST_CASE("gpu: a positive gate is reported by deferred_status and leaves outputs untouched") {
  using P = lasp::Policy<lasp::decay::Gate>;
  ProblemSpec s;
  s.B = 1; s.N = 130; s.H = 2; s.D = 64; s.E = 64;
  GlobalProblem<lasp::bf16> hp(s);
  hp.gates[hp.ref_g(0, 77, 1)] = 0.25f;  // one bad value
  hp.pack();
  DeviceProblem<lasp::bf16> dp(hp);
  lasp::comm::DeviceSingle comm;
  const std::size_t wsb = lasp::workspace_size<P, lasp::bf16>(hp.shape(), comm);
  DeviceBuf<unsigned char> ws(wsb);
  const lasp::Workspace w{ws.ptr, wsb};
  auto fa = dp.template forward_args<lasp::decay::Gate>(0);
  CHECK(lasp::forward<P>(fa, comm, w, nullptr) == lasp::Status::kSuccess);
  CHECK(lasp::cuda::deferred_status(w, nullptr) == lasp::Status::kInvalidDecay);
  auto ba = dp.template backward_args<lasp::decay::Gate>(0);
  CHECK(lasp::backward<P>(ba, comm, w, nullptr) == lasp::Status::kSuccess);
  CHECK(lasp::cuda::deferred_status(w, nullptr) == lasp::Status::kInvalidDecay);
  const auto before_o = hp.o_buf, before_dq = hp.dq_buf, before_dk = hp.dk_buf, before_dv = hp.dv_buf;
  const auto before_dg = hp.dg_buf;
  dp.download();
  auto same = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
  };
  CHECK(same(hp.o_buf, before_o));
  CHECK(same(hp.dq_buf, before_dq));
  CHECK(same(hp.dk_buf, before_dk));
  CHECK(same(hp.dv_buf, before_dv));
  CHECK(same(hp.dg_buf, before_dg));
  // The next valid call clears the verdict.
  hp.gates[hp.ref_g(0, 77, 1)] = -0.25f;
  hp.pack();
  dp.g.upload(hp.g_buf);
  CHECK(lasp::forward<P>(fa, comm, w, nullptr) == lasp::Status::kSuccess);
  CHECK(lasp::cuda::deferred_status(w, nullptr) == lasp::Status::kSuccess);
}

// Policies and shapes the CUDA backend was not built for get their status before any launch.
TEST_CASE("gpu: unsupported head dims and tiles are refused with their status, nothing written") {
  lasp::comm::DeviceSingle comm;
  auto refuse = [&](auto policy, lasp::index_t D, lasp::index_t E, lasp::Status want) {
    using P = decltype(policy);
    ProblemSpec s;
    s.B = 1; s.N = 70; s.H = 1; s.D = D; s.E = E;
    GlobalProblem<lasp::bf16> hp(s);
    DeviceProblem<lasp::bf16> dp(hp);
    const std::size_t wsb = lasp::workspace_size<P, lasp::bf16>(hp.shape(), comm);
    DeviceBuf<unsigned char> ws(wsb);
    auto fa = dp.template forward_args<typename P::Decay>(0);
    CHECK(lasp::can_implement<P>(fa, comm, lasp::Workspace{ws.ptr, wsb}) == want);
    CHECK(lasp::forward<P>(fa, comm, lasp::Workspace{ws.ptr, wsb}, nullptr) == want);
    const auto before = hp.o_buf;
    dp.download();
    CHECK(std::memcmp(before.data(), hp.o_buf.data(), before.size() * sizeof(before[0])) == 0);
  };
  using Default = lasp::Policy<lasp::decay::PerHead>;
  refuse(Default{}, 96, 64, lasp::Status::kUnsupportedHeadDim);
  refuse(Default{}, 64, 32, lasp::Status::kUnsupportedHeadDim);
  refuse(lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain, lasp::caching::Recompute, lasp::tile::Tile<32>>{},
         64, 64, lasp::Status::kUnsupportedTile);
  refuse(lasp::Policy<lasp::decay::None, lasp::schedule::Chain, lasp::caching::Recompute, lasp::tile::Tile<64, 8>>{},
         64, 64, lasp::Status::kUnsupportedTile);
}

// What a device cannot run is refused by can_implement, from the device's own limits: a GPU with
// 99 KB of shared memory per block (sm_86/sm_89) cannot take D = E = 128, one below sm_80 nothing.
TEST_CASE("gpu: can_implement refuses what the device cannot run (shared memory, architecture)") {
  using P = lasp::Policy<lasp::decay::PerHead>;
  using B = lasp::backend::cuda::Backend;
  lasp::backend::cuda::DeviceInfo ampere_consumer;  // an RTX 3090 / A10 / L4 / L40S as the runtime reports it
  ampere_consumer.major = 8; ampere_consumer.minor = 6; ampere_consumer.smem_optin = 101376;
  CHECK(B::check_device<P, lasp::bf16>(lasp::Shape{1, 64, 1, 128, 128, 1}, ampere_consumer) == lasp::Status::kUnsupportedDevice);
  CHECK(B::check_device<P, lasp::bf16>(lasp::Shape{1, 64, 1, 64, 64, 1}, ampere_consumer) == lasp::Status::kSuccess);
  lasp::backend::cuda::DeviceInfo turing;
  turing.major = 7; turing.minor = 5; turing.smem_optin = 65536;
  CHECK(B::check_device<P, lasp::bf16>(lasp::Shape{1, 64, 1, 64, 64, 1}, turing) == lasp::Status::kUnsupportedDevice);
  lasp::backend::cuda::DeviceInfo here;
  REQUIRE(lasp::backend::cuda::current_device(&here) == lasp::Status::kSuccess);
  CHECK(B::check_device<P, lasp::bf16>(lasp::Shape{1, 64, 1, 128, 128, 1}, here) == lasp::Status::kSuccess);
}

// B*H beyond 65535 (the old grid's y limit): b*h is the grid's x dimension, so it runs, correctly.
TEST_CASE("gpu: B*H above 65535 runs and matches the reference") {
  const Case c{32769, 3, 2, 64, 64, Layout::kTokenMajor, 1.f, false};
  run_case<lasp::bf16, lasp::Policy<lasp::decay::Gate>>(c, 4242);
}

// Backward checks on the device that its reserve holds the forward of the same q, k, v: a reserve
// that no forward filled, or that another layer's forward filled, gives kNotForwarded through
// deferred_status and no output is written.
TEST_CASE("gpu: backward on a reserve of another forward is detected, nothing written") {
  using P = lasp::Policy<lasp::decay::PerHead>;
  ProblemSpec s;
  s.B = 1; s.N = 300; s.H = 2; s.D = 64; s.E = 64; s.seed = 31;
  GlobalProblem<lasp::bf16> layer1(s), layer2(s);
  DeviceProblem<lasp::bf16> d1(layer1), d2(layer2);
  lasp::comm::DeviceSingle comm;
  const std::size_t wsb = lasp::workspace_size<P, lasp::bf16>(layer1.shape(), comm);
  DeviceBuf<unsigned char> ws1(wsb), ws2(wsb);
  LASP_TEST_CUDA(cudaMemset(ws2.ptr, 0, wsb));  // never forwarded
  const lasp::Workspace w1{ws1.ptr, wsb}, w2{ws2.ptr, wsb};
  auto same = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
  };
  REQUIRE(lasp::forward<P>(d1.template forward_args<lasp::decay::PerHead>(0), comm, w1, nullptr) == lasp::Status::kSuccess);
  REQUIRE(lasp::cuda::deferred_status(w1, nullptr) == lasp::Status::kSuccess);
  // Layer 2's backward on layer 1's reserve, then on a reserve no forward filled.
  for (const lasp::Workspace& w : {w1, w2}) {
    const auto dq0 = layer2.dq_buf, dk0 = layer2.dk_buf, dv0 = layer2.dv_buf;
    CHECK(lasp::backward<P>(d2.template backward_args<lasp::decay::PerHead>(0), comm, w, nullptr) == lasp::Status::kSuccess);
    CHECK(lasp::cuda::deferred_status(w, nullptr) == lasp::Status::kNotForwarded);
    d2.download();
    CHECK(same(layer2.dq_buf, dq0));
    CHECK(same(layer2.dk_buf, dk0));
    CHECK(same(layer2.dv_buf, dv0));
  }
  // Layer 1's own backward on its reserve is fine.
  CHECK(lasp::backward<P>(d1.template backward_args<lasp::decay::PerHead>(0), comm, w1, nullptr) == lasp::Status::kSuccess);
  CHECK(lasp::cuda::deferred_status(w1, nullptr) == lasp::Status::kSuccess);
  d1.download();
  const RefResult ref = run_reference<lasp::decay::PerHead>(layer1);
  CHECK(rel_err(layer1.dq(), ref.dq) < Limits<lasp::bf16>::kOut);
  CHECK(rel_err(layer1.dk(), ref.dk) < Limits<lasp::bf16>::kOut);
}

// forward_id: a backward whose inputs were recomputed at other addresses (torch.compile) pairs
// with its forward by the caller's id; another id is still refused (kNotForwarded, nothing written).
TEST_CASE("gpu: forward_id pairs backward with its forward when the inputs moved") {
  using P = lasp::Policy<lasp::decay::PerHead>;
  ProblemSpec s;
  s.B = 1; s.N = 300; s.H = 2; s.D = 64; s.E = 64; s.seed = 33;
  GlobalProblem<lasp::bf16> layer(s), moved_host(s);
  DeviceProblem<lasp::bf16> d(layer), moved(moved_host);  // the same inputs at other addresses
  lasp::comm::DeviceSingle comm;
  const std::size_t wsb = lasp::workspace_size<P, lasp::bf16>(layer.shape(), comm);
  DeviceBuf<unsigned char> ws(wsb);
  const lasp::Workspace w{ws.ptr, wsb};
  auto fa = d.template forward_args<lasp::decay::PerHead>(0);
  fa.forward_id = 7;
  REQUIRE(lasp::forward<P>(fa, comm, w, nullptr) == lasp::Status::kSuccess);
  auto ba = moved.template backward_args<lasp::decay::PerHead>(0);
  ba.forward_id = 8;  // another forward's id: refused on the device
  const auto dq0 = moved_host.dq_buf;
  CHECK(lasp::backward<P>(ba, comm, w, nullptr) == lasp::Status::kSuccess);
  CHECK(lasp::cuda::deferred_status(w, nullptr) == lasp::Status::kNotForwarded);
  moved.download();
  CHECK(std::memcmp(moved_host.dq_buf.data(), dq0.data(), dq0.size() * sizeof(dq0[0])) == 0);
  ba.forward_id = 7;
  CHECK(lasp::backward<P>(ba, comm, w, nullptr) == lasp::Status::kSuccess);
  CHECK(lasp::cuda::deferred_status(w, nullptr) == lasp::Status::kSuccess);
  moved.download();
  const RefResult ref = run_reference<lasp::decay::PerHead>(moved_host);
  CHECK(rel_err(moved_host.dq(), ref.dq) < Limits<lasp::bf16>::kOut);
  CHECK(rel_err(moved_host.dk(), ref.dk) < Limits<lasp::bf16>::kOut);
  CHECK(rel_err(moved_host.dv(), ref.dv) < Limits<lasp::bf16>::kOut);
}

// forward + backward enqueue only stream-ordered work (no allocation, no synchronisation), so a
// training step can be captured into a CUDA graph and replayed: the replay gives the same outputs.
TEST_CASE("gpu: forward + backward captured in a CUDA graph replay to the same results") {
  using P = lasp::Policy<lasp::decay::Gate>;
  ProblemSpec s;
  s.B = 2; s.N = 300; s.H = 2; s.D = 64; s.E = 128; s.seed = 900;
  GlobalProblem<lasp::bf16> hp(s);
  DeviceProblem<lasp::bf16> dp(hp);
  lasp::comm::DeviceSingle comm;
  const std::size_t wsb = lasp::workspace_size<P, lasp::bf16>(hp.shape(), comm);
  DeviceBuf<unsigned char> ws(wsb);
  const lasp::Workspace w{ws.ptr, wsb};
  cudaStream_t st;
  LASP_TEST_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  auto fa = dp.template forward_args<lasp::decay::Gate>(0);
  auto ba = dp.template backward_args<lasp::decay::Gate>(0);
  // Eager run: the reference for the replay.
  REQUIRE(lasp::forward<P>(fa, comm, w, st) == lasp::Status::kSuccess);
  REQUIRE(lasp::backward<P>(ba, comm, w, st) == lasp::Status::kSuccess);
  LASP_TEST_CUDA(cudaStreamSynchronize(st));
  dp.download();
  const auto o1 = hp.o_buf, dq1 = hp.dq_buf, dk1 = hp.dk_buf, dv1 = hp.dv_buf;
  const auto dg1 = hp.dg_buf;
  // Poison the outputs, capture, replay twice.
  hp.poison_outputs();
  dp.o.upload(hp.o_buf); dp.dq.upload(hp.dq_buf); dp.dk.upload(hp.dk_buf); dp.dv.upload(hp.dv_buf); dp.dg.upload(hp.dg_buf);
  cudaGraph_t graph;
  LASP_TEST_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  const lasp::Status sf = lasp::forward<P>(fa, comm, w, st);
  const lasp::Status sb = lasp::backward<P>(ba, comm, w, st);
  LASP_TEST_CUDA(cudaStreamEndCapture(st, &graph));
  REQUIRE(sf == lasp::Status::kSuccess);
  REQUIRE(sb == lasp::Status::kSuccess);
  cudaGraphExec_t exec;
  LASP_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 2; ++i) LASP_TEST_CUDA(cudaGraphLaunch(exec, st));
  LASP_TEST_CUDA(cudaStreamSynchronize(st));
  dp.download();
  auto same = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
  };
  CHECK(same(hp.o_buf, o1));
  CHECK(same(hp.dq_buf, dq1));
  CHECK(same(hp.dk_buf, dk1));
  CHECK(same(hp.dv_buf, dv1));
  CHECK(same(hp.dg_buf, dg1));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(st);
}
