// Argument validation (api.md "Arguments"): every bad input gets its specific lasp::Status from
// forward/backward AND from can_implement, and leaves every buffer (outputs, inputs, workspace)
// bit-identical.
#include <chrono>
#include <cstring>
#include <thread>
#include "support.hpp"

using namespace lasp_test;
using namespace lasp;

namespace {

/// A valid single-rank problem in token-major fp32/bf16 buffers with room to spare (for shifted
/// pointers and odd strides). Outputs hold a finite sentinel; any write would be seen.
template <class Decay, class Elem = float>
struct Fixture {
  using P = P16<Decay>;
  Shape s;
  AlignedVec<Elem> q, k, v, o, dout, dq, dk, dv;
  AlignedVec<float> g, dg, init, fin, dfin, dinit;
  std::vector<float> slopes;
  AlignedVec<unsigned char> ws;
  comm::HostSingle comm;

  explicit Fixture(Shape shape = {1, 8, 2, 8, 8, 1}) : s(shape) {
    const auto n = [](index_t x) { return std::size_t(std::max<index_t>(x, 1) * 2 + 64); };
    const index_t bnh = s.B * s.N * s.H;
    for (auto* b : {&q, &k, &dq, &dk}) b->resize(n(bnh * s.D));
    for (auto* b : {&v, &o, &dout, &dv}) b->resize(n(bnh * s.E));
    for (auto* b : {&g, &dg}) b->resize(n(bnh));
    for (auto* b : {&init, &fin, &dfin, &dinit}) b->resize(n(s.B * s.H * s.D * s.E));
    Rng rng(77);
    for (auto* b : {&q, &k, &v, &dout}) rng.fill_normal<Elem>(*b);
    for (auto* b : {&init, &dfin}) rng.fill_normal<float>(*b);
    rng.fill_uniform(g, -0.5f, -0.01f);
    slopes = tnl_slopes(std::max<index_t>(s.H, 1));
    for (auto* b : {&o, &dq, &dk, &dv}) fill_bytes(*b, kSentinelByte);
    for (auto* b : {&dg, &fin, &dinit}) fill_bytes(*b, kSentinelByte);
    ws.resize(workspace_size<P, Elem>(s, comm));
    fill_bytes(ws, kSentinelByte);
  }

  typename Decay::Params params() const {
    if constexpr (std::is_same_v<Decay, decay::PerHead>) return {slopes.data()};
    else if constexpr (std::is_same_v<Decay, decay::Gate>) return {gates_token_major(g.data(), s.N, s.H)};
    else return {};
  }
  ForwardArgs<Elem, Decay> fwd() {
    return {s,           token_major<const Elem>(q.data(), s.N, s.H, s.D), token_major<const Elem>(k.data(), s.N, s.H, s.D),
            token_major<const Elem>(v.data(), s.N, s.H, s.E), token_major(o.data(), s.N, s.H, s.E),
            0.5f,        params(), init.data(), fin.data()};
  }
  BackwardArgs<Elem, Decay> bwd() {
    BackwardArgs<Elem, Decay> a{s,
                                token_major<const Elem>(q.data(), s.N, s.H, s.D),
                                token_major<const Elem>(k.data(), s.N, s.H, s.D),
                                token_major<const Elem>(v.data(), s.N, s.H, s.E),
                                token_major<const Elem>(dout.data(), s.N, s.H, s.E),
                                token_major(dq.data(), s.N, s.H, s.D),
                                token_major(dk.data(), s.N, s.H, s.D),
                                token_major(dv.data(), s.N, s.H, s.E),
                                0.5f,
                                params()};
    if constexpr (Decay::kHasGradient) a.dg = gates_token_major(dg.data(), s.N, s.H);
    a.d_final_state = dfin.data();
    a.d_initial_state = dinit.data();
    return a;
  }
  Workspace wsp() { return {ws.data(), ws.size()}; }
  /// Every buffer, bit for bit.
  std::vector<std::vector<unsigned char>> snap() const {
    return {snapshot(q),    snapshot(k),  snapshot(v),   snapshot(o),    snapshot(dout), snapshot(dq),
            snapshot(dk),   snapshot(dv), snapshot(g),   snapshot(dg),   snapshot(init), snapshot(fin),
            snapshot(dfin), snapshot(dinit), snapshot(ws), snapshot(slopes)};
  }
  /// A successful forward, so that backward refusals are about their arguments.
  void forward_ok() {
    REQUIRE(forward<P>(fwd(), comm, wsp()) == Status::kSuccess);
  }
};

template <class F, class Args, class Comm>
void expect_forward(F& f, const Args& a, Comm& comm, Workspace w, Status want) {
  using P = typename F::P;
  const auto before = f.snap();
  CHECK(can_implement<P>(a, comm, w) == want);
  CHECK(forward<P>(a, comm, w) == want);
  CHECK(f.snap() == before);  // outputs, inputs and workspace untouched
}
template <class F, class Args>
void expect_forward(F& f, const Args& a, Status want) { expect_forward(f, a, f.comm, f.wsp(), want); }

/// Backward after a successful forward. can_implement answers what backward does, kNotForwarded
/// included (the host backend sees the forward's mark in the workspace).
template <class F, class Args, class Comm>
void expect_backward(F& f, const Args& a, Comm& comm, Workspace w, Status want) {
  using P = typename F::P;
  const auto before = f.snap();
  CHECK(can_implement<P>(a, comm, w) == want);
  CHECK(backward<P>(a, comm, w) == want);
  CHECK(f.snap() == before);
}
template <class F, class Args>
void expect_backward(F& f, const Args& a, Status want) { expect_backward(f, a, f.comm, f.wsp(), want); }

/// A communicator of any claimed rank/size whose operations fail on demand.
struct TestComm {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  int r = 0, n = 1;
  bool fail = false;
  int rank() const { return r; }
  int size() const { return n; }
  Status send(const float*, std::size_t, int, stream_type) { return fail ? Status::kCommError : Status::kSuccess; }
  Status recv(float* b, std::size_t c, int, stream_type) {
    if (fail) return Status::kCommError;
    std::fill(b, b + c, 0.f);
    return Status::kSuccess;
  }
  Status all_gather(const float*, float*, std::size_t, stream_type) { return fail ? Status::kCommError : Status::kSuccess; }
};

}  // namespace

TEST_CASE("validation: a valid call succeeds and can_implement agrees") {
  Fixture<decay::Gate> f;
  CHECK(can_implement<Fixture<decay::Gate>::P>(f.fwd(), f.comm, f.wsp()) == Status::kSuccess);
  f.forward_ok();
  CHECK(can_implement<Fixture<decay::Gate>::P>(f.bwd(), f.comm, f.wsp()) == Status::kSuccess);
  CHECK(backward<Fixture<decay::Gate>::P>(f.bwd(), f.comm, f.wsp()) == Status::kSuccess);
  CHECK(all_finite(f.dg));
}

TEST_CASE("validation: inputs may share memory (q = k = v), only outputs must be disjoint") {
  Fixture<decay::PerHead> f;  // D = E = 8
  auto a = f.fwd();
  a.k = a.q, a.v = a.q;
  CHECK(can_implement<Fixture<decay::PerHead>::P>(a, f.comm, f.wsp()) == Status::kSuccess);
  CHECK(forward<Fixture<decay::PerHead>::P>(a, f.comm, f.wsp()) == Status::kSuccess);
  auto b = f.bwd();
  b.k = b.q, b.v = b.q, b.dout = b.q;
  CHECK(backward<Fixture<decay::PerHead>::P>(b, f.comm, f.wsp()) == Status::kSuccess);
  CHECK(all_finite(f.dq));
}

TEST_CASE("validation: null q, k, v, o or workspace -> kNullPointer") {
  Fixture<decay::None> f;
  auto a = f.fwd();
  a.q.ptr = nullptr;
  expect_forward(f, a, Status::kNullPointer);
  a = f.fwd(), a.k.ptr = nullptr;
  expect_forward(f, a, Status::kNullPointer);
  a = f.fwd(), a.v.ptr = nullptr;
  expect_forward(f, a, Status::kNullPointer);
  a = f.fwd(), a.o.ptr = nullptr;
  expect_forward(f, a, Status::kNullPointer);
  expect_forward(f, f.fwd(), f.comm, Workspace{nullptr, f.ws.size()}, Status::kNullPointer);
}

TEST_CASE("validation: null slopes (PerHead) and null gates (Gate) -> kNullPointer") {
  Fixture<decay::PerHead> fh;
  auto a = fh.fwd();
  a.decay.slopes = nullptr;
  expect_forward(fh, a, Status::kNullPointer);
  fh.forward_ok();
  auto b = fh.bwd();
  b.decay.slopes = nullptr;
  expect_backward(fh, b, Status::kNullPointer);

  Fixture<decay::Gate> fg;
  auto c = fg.fwd();
  c.decay.g.ptr = nullptr;
  expect_forward(fg, c, Status::kNullPointer);
  fg.forward_ok();
  auto d = fg.bwd();
  d.decay.g.ptr = nullptr;
  expect_backward(fg, d, Status::kNullPointer);
}

TEST_CASE("validation: backward with null dout, dq, dk, dv, or null dg for Gate -> kNullPointer") {
  Fixture<decay::Gate> f;
  f.forward_ok();
  auto a = f.bwd();
  a.dg.ptr = nullptr;
  expect_backward(f, a, Status::kNullPointer);
  a = f.bwd(), a.dout.ptr = nullptr;
  expect_backward(f, a, Status::kNullPointer);
  a = f.bwd(), a.dq.ptr = nullptr;
  expect_backward(f, a, Status::kNullPointer);
  a = f.bwd(), a.dk.ptr = nullptr;
  expect_backward(f, a, Status::kNullPointer);
  a = f.bwd(), a.dv.ptr = nullptr;
  expect_backward(f, a, Status::kNullPointer);
  // dg is not needed without gates: PerHead ignores it.
  Fixture<decay::PerHead> h;
  h.forward_ok();
  auto b = h.bwd();
  b.dg.ptr = nullptr;
  CHECK(backward<Fixture<decay::PerHead>::P>(b, h.comm, h.wsp()) == Status::kSuccess);
}

TEST_CASE("validation: pointers offset by one element -> kMisaligned") {
  Fixture<decay::Gate> f;
  auto a = f.fwd();
  a.q.ptr += 1;
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.k.ptr += 1;
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.v.ptr += 1;
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.o.ptr += 1;
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.initial_state += 1;
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.final_state += 1;
  expect_forward(f, a, Status::kMisaligned);
  expect_forward(f, f.fwd(), f.comm, Workspace{f.ws.data() + 4, f.ws.size() - 4}, Status::kMisaligned);
  a = f.fwd(), a.decay.g.ptr = reinterpret_cast<const float*>(reinterpret_cast<const char*>(f.g.data()) + 1);
  expect_forward(f, a, Status::kMisaligned);  // gates need float alignment only
  f.forward_ok();
  auto b = f.bwd();
  b.dout.ptr += 1;
  expect_backward(f, b, Status::kMisaligned);
  b = f.bwd(), b.dq.ptr += 1;
  expect_backward(f, b, Status::kMisaligned);
  b = f.bwd(), b.dv.ptr += 1;
  expect_backward(f, b, Status::kMisaligned);
  b = f.bwd(), b.d_initial_state += 1;
  expect_backward(f, b, Status::kMisaligned);
  b = f.bwd(), b.d_final_state += 1;
  expect_backward(f, b, Status::kMisaligned);
  b = f.bwd(), b.dg.ptr = reinterpret_cast<float*>(reinterpret_cast<char*>(f.dg.data()) + 2);
  expect_backward(f, b, Status::kMisaligned);

  Fixture<decay::None, bf16> h;  // one bf16 element = 2 bytes
  auto c = h.fwd();
  c.q.ptr += 1;
  expect_forward(h, c, Status::kMisaligned);
}

TEST_CASE("validation: strides that are not a multiple of 16 bytes -> kMisaligned") {
  Fixture<decay::None> f;  // fp32: strides must be multiples of 4 elements
  auto a = f.fwd();
  a.q.stride_h = 9, a.q.stride_n = 18, a.q.stride_b = 18 * f.s.N;  // rows of 9 floats = 36 bytes
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.o.stride_n += 2;
  expect_forward(f, a, Status::kMisaligned);
  a = f.fwd(), a.v.stride_b += 1;
  expect_forward(f, a, Status::kMisaligned);
  f.forward_ok();
  auto b = f.bwd();
  b.dk.stride_n += 6;
  expect_backward(f, b, Status::kMisaligned);
  // bf16 rows of 12 elements (24 bytes) are refused; 16 elements (32 bytes) are fine.
  Fixture<decay::None, bf16> h(Shape{1, 4, 2, 12, 8, 1});
  expect_forward(h, h.fwd(), Status::kMisaligned);
}

TEST_CASE("validation: overlapping buffers -> kOverlap") {
  Fixture<decay::Gate> f;
  auto a = f.fwd();
  a.o = token_major(f.q.data(), f.s.N, f.s.H, f.s.E);  // o over q
  expect_forward(f, a, Status::kOverlap);
  a = f.fwd(), a.o = token_major(f.v.data() + 8, f.s.N, f.s.H, f.s.E);  // o over part of v
  expect_forward(f, a, Status::kOverlap);
  a = f.fwd(), a.final_state = f.o.data();  // final state over o
  expect_forward(f, a, Status::kOverlap);
  a = f.fwd(), a.initial_state = f.o.data();  // an input over o
  expect_forward(f, a, Status::kOverlap);
  a = f.fwd(), a.decay.g.ptr = f.o.data() + 4;  // gates over o
  expect_forward(f, a, Status::kOverlap);
  // o inside the workspace, and the workspace over an input.
  a = f.fwd(), a.o = token_major(reinterpret_cast<float*>(f.ws.data()), f.s.N, f.s.H, f.s.E);
  expect_forward(f, a, Status::kOverlap);
  expect_forward(f, f.fwd(), f.comm, Workspace{f.q.data(), f.ws.size()}, Status::kOverlap);

  f.forward_ok();
  auto b = f.bwd();
  b.dk = b.dq;  // two outputs
  expect_backward(f, b, Status::kOverlap);
  b = f.bwd(), b.dv = token_major(f.dout.data(), f.s.N, f.s.H, f.s.E);  // output over an input
  expect_backward(f, b, Status::kOverlap);
  b = f.bwd(), b.dg = gates_token_major(f.g.data(), f.s.N, f.s.H);  // dg over g
  expect_backward(f, b, Status::kOverlap);
  b = f.bwd(), b.d_initial_state = f.dq.data();  // dS_init over dq
  expect_backward(f, b, Status::kOverlap);
  b = f.bwd(), b.d_final_state = f.dv.data();  // an input over dv
  expect_backward(f, b, Status::kOverlap);
  b = f.bwd(), b.dq = token_major(reinterpret_cast<float*>(f.ws.data() + 256), f.s.N, f.s.H, f.s.D);
  expect_backward(f, b, Status::kOverlap);  // dq inside the workspace
}

// dq, dk, dv in one fused [B,N,H,3,D] buffer (what a fused QKV projection's backward wants):
// rows interleave but never share an element, so it is accepted and gives the same gradients;
// shifting dk by half a row makes the rows collide and is refused.
TEST_CASE("validation: fused dq/dk/dv buffer accepted, colliding rows -> kOverlap") {
  Fixture<decay::Gate> f;  // D = E = 8
  f.forward_ok();
  auto ref = f.bwd();
  REQUIRE(backward<Fixture<decay::Gate>::P>(ref, f.comm, f.wsp()) == Status::kSuccess);
  const index_t N = f.s.N, H = f.s.H, D = f.s.D, row = 3 * D;
  AlignedVec<float> fused(std::size_t(f.s.B * N * H * row));
  auto view = [&](index_t off) { return Tensor<float>{fused.data() + off, N * H * row, H * row, row}; };
  auto b = f.bwd();
  b.dq = view(0), b.dk = view(D), b.dv = view(2 * D);
  REQUIRE(backward<Fixture<decay::Gate>::P>(b, f.comm, f.wsp()) == Status::kSuccess);
  for (index_t n = 0; n < N; ++n)
    for (index_t h = 0; h < H; ++h)
      for (index_t x = 0; x < D; ++x) {
        CHECK(b.dq(0, n, h, x) == ref.dq(0, n, h, x));
        CHECK(b.dk(0, n, h, x) == ref.dk(0, n, h, x));
        CHECK(b.dv(0, n, h, x) == ref.dv(0, n, h, x));
      }
  auto bad = f.bwd();
  bad.dq = view(0), bad.dk = view(D / 2), bad.dv = view(2 * D);
  const auto before = fused;
  CHECK(backward<Fixture<decay::Gate>::P>(bad, f.comm, f.wsp()) == Status::kOverlap);
  CHECK(std::memcmp(before.data(), fused.data(), fused.size() * sizeof(float)) == 0);
}

// Issue 10, item 8: the fused buffer of a real layer (B=3, N=65, H=5, D=64, E=128) whose batch
// stride is padded (not a multiple of the row of 256 elements) was refused as overlapping. Rows
// never collide here; a batch stride one dq row short makes batch 1's dq land on batch 0's last
// dv row, which must still be refused.
TEST_CASE("validation: fused [dq|dk|dv] rows with a padded batch stride are accepted (B=3, N=65, H=5, D=64, E=128)") {
  using P = Fixture<decay::PerHead>::P;
  Fixture<decay::PerHead> f(Shape{3, 65, 5, 64, 128, 1});
  f.forward_ok();
  auto ref = f.bwd();  // separate dq, dk, dv; d_final_state and d_initial_state given
  REQUIRE(backward<P>(ref, f.comm, f.wsp()) == Status::kSuccess);
  const index_t B = f.s.B, N = f.s.N, H = f.s.H, D = f.s.D, E = f.s.E, row = 2 * D + E;
  for (index_t pad : {index_t(64), index_t(4), index_t(0)}) {
    CAPTURE(pad);
    const index_t sb = N * H * row + pad;
    AlignedVec<float> fused(std::size_t(B * sb));
    auto view = [&](index_t off) { return Tensor<float>{fused.data() + off, sb, H * row, row}; };
    auto b = f.bwd();
    b.dq = view(0), b.dk = view(D), b.dv = view(2 * D);
    CHECK(can_implement<P>(b, f.comm, f.wsp()) == Status::kSuccess);
    REQUIRE(backward<P>(b, f.comm, f.wsp()) == Status::kSuccess);
    bool same = true;
    for (index_t bb = 0; bb < B; ++bb)
      for (index_t n = 0; n < N; ++n)
        for (index_t h = 0; h < H; ++h) {
          for (index_t x = 0; x < D; ++x)
            same = same && b.dq(bb, n, h, x) == ref.dq(bb, n, h, x) && b.dk(bb, n, h, x) == ref.dk(bb, n, h, x);
          for (index_t x = 0; x < E; ++x) same = same && b.dv(bb, n, h, x) == ref.dv(bb, n, h, x);
        }
    CHECK(same);
  }
  // Batch stride one dq row (D) short of the bundle: every view's own rows stay disjoint, but dq
  // of batch b+1 lands on the end of dv of batch b's last row.
  const index_t sb = N * H * row - D;
  AlignedVec<float> fused(std::size_t(B * sb + row));
  auto view = [&](index_t off) { return Tensor<float>{fused.data() + off, sb, H * row, row}; };
  auto bad = f.bwd();
  bad.dq = view(0), bad.dk = view(D), bad.dv = view(2 * D);
  const auto before = snapshot(fused);
  CHECK(can_implement<P>(bad, f.comm, f.wsp()) == Status::kOverlap);
  CHECK(backward<P>(bad, f.comm, f.wsp()) == Status::kOverlap);
  CHECK(unchanged(fused, before));
}

TEST_CASE("validation: D or E above 1024 on the host -> kUnsupportedHeadDim") {
  for (auto de : {std::pair<index_t, index_t>{1028, 4}, {4, 1028}}) {
    INFO("D=", de.first, " E=", de.second);
    Fixture<decay::None> f(Shape{1, 1, 1, de.first, de.second, 1});
    expect_forward(f, f.fwd(), Status::kUnsupportedHeadDim);
    expect_backward(f, f.bwd(), Status::kUnsupportedHeadDim);
  }
  Fixture<decay::None> ok(Shape{1, 2, 1, 1024, 8, 1});  // the largest supported
  CHECK(forward<Fixture<decay::None>::P>(ok.fwd(), ok.comm, ok.wsp()) == Status::kSuccess);
}

TEST_CASE("validation: B, H or D < 1, N < 0, bad strides or a non-finite scale -> kInvalidShape") {
  for (int which = 0; which < 4; ++which) {
    CAPTURE(which);
    Shape s{1, 8, 2, 8, 8, 1};
    // N = 0 is an empty shard, which the host backend runs (empty_shard_test.cpp).
    (which == 0 ? s.B : which == 1 ? s.N : which == 2 ? s.H : s.D) = which == 1 ? -1 : 0;
    Fixture<decay::None> f(s);
    expect_forward(f, f.fwd(), Status::kInvalidShape);
    expect_backward(f, f.bwd(), Status::kInvalidShape);
  }
  Fixture<decay::None> f;
  auto a = f.fwd();
  a.q.stride_n = -8;  // negative stride
  expect_forward(f, a, Status::kInvalidShape);
  a = f.fwd(), a.o.stride_n = 0;  // every token would write the same output row
  expect_forward(f, a, Status::kInvalidShape);
  a = f.fwd(), a.o.stride_h = 4;  // output rows of 8 elements 4 apart
  expect_forward(f, a, Status::kInvalidShape);
  a = f.fwd(), a.scale = std::nanf("");
  expect_forward(f, a, Status::kInvalidShape);
  a = f.fwd(), a.scale = INFINITY;
  expect_forward(f, a, Status::kInvalidShape);
  f.forward_ok();
  auto b = f.bwd();
  b.dq.stride_n = 0;
  expect_backward(f, b, Status::kInvalidShape);
  // More heads than decay::PerHead supports.
  Fixture<decay::PerHead> h(Shape{1, 1, decay::PerHead::kMaxHeads + 1, 4, 4, 1});
  expect_forward(h, h.fwd(), Status::kInvalidShape);
}

TEST_CASE("validation: workspace one byte too small -> kWorkspaceTooSmall; the exact size works") {
  Fixture<decay::Gate> f;
  using P = Fixture<decay::Gate>::P;
  const std::size_t need = workspace_size<P, float>(f.s, f.comm);
  REQUIRE(f.ws.size() == need);
  expect_forward(f, f.fwd(), f.comm, Workspace{f.ws.data(), need - 1}, Status::kWorkspaceTooSmall);
  expect_forward(f, f.fwd(), f.comm, Workspace{f.ws.data(), 0}, Status::kWorkspaceTooSmall);
  f.forward_ok();
  expect_backward(f, f.bwd(), f.comm, Workspace{f.ws.data(), need - 1}, Status::kWorkspaceTooSmall);
  CHECK(backward<P>(f.bwd(), f.comm, Workspace{f.ws.data(), need}) == Status::kSuccess);
}

TEST_CASE("validation: shape.R != communicator size -> kSpSizeMismatch") {
  Fixture<decay::PerHead> f(Shape{1, 8, 2, 8, 8, 2});  // R = 2 on HostSingle
  expect_forward(f, f.fwd(), Status::kSpSizeMismatch);
  expect_backward(f, f.bwd(), Status::kSpSizeMismatch);
  // R = 2 on a group of 3: every rank refuses; the refusal is collective (the ranks agree on
  // it), so the three ranks call together, as threads.
  comm::HostGroup group(3, std::chrono::seconds(10));
  const auto before = f.snap();
  std::vector<Status> fw(3, Status::kInternalError), bw(3, Status::kInternalError), ci(3, Status::kInternalError);
  std::vector<std::thread> th;
  for (int r = 0; r < 3; ++r)
    th.emplace_back([&, r] {
      auto c = group.comm(r);
      using P = Fixture<decay::PerHead>::P;
      ci[std::size_t(r)] = can_implement<P>(f.fwd(), c, f.wsp());
      fw[std::size_t(r)] = forward<P>(f.fwd(), c, f.wsp());
      bw[std::size_t(r)] = backward<P>(f.bwd(), c, f.wsp());
    });
  for (auto& t : th) t.join();
  for (int r = 0; r < 3; ++r) {
    CAPTURE(r);
    CHECK(ci[std::size_t(r)] == Status::kSpSizeMismatch);
    CHECK(fw[std::size_t(r)] == Status::kSpSizeMismatch);
    CHECK(bw[std::size_t(r)] == Status::kSpSizeMismatch);
  }
  CHECK(f.snap() == before);
  CHECK(!group.broken());
}

TEST_CASE("validation: communicator rank outside [0, size) -> kInvalidRank") {
  Fixture<decay::None> f(Shape{1, 8, 2, 8, 8, 2});
  for (int r : {-1, 2}) {
    CAPTURE(r);
    TestComm c{r, 2, false};
    expect_forward(f, f.fwd(), c, f.wsp(), Status::kInvalidRank);
    expect_backward(f, f.bwd(), c, f.wsp(), Status::kInvalidRank);
  }
}

TEST_CASE("validation: a slope < 0, NaN or infinite -> kInvalidDecay") {
  for (float bad : {-1e-6f, -1.f, std::nanf(""), INFINITY}) {
    CAPTURE(bad);
    Fixture<decay::PerHead> f;
    f.forward_ok();
    f.slopes[1] = bad;
    expect_forward(f, f.fwd(), Status::kInvalidDecay);
    expect_backward(f, f.bwd(), Status::kInvalidDecay);
  }
}

TEST_CASE("validation: a log-gate > 0, NaN or -inf -> kInvalidDecay (forward and backward)") {
  for (float bad : {1e-6f, 0.5f, std::nanf(""), -INFINITY, INFINITY}) {
    CAPTURE(bad);
    Fixture<decay::Gate> f;
    f.forward_ok();
    f.g[std::size_t(f.s.N * f.s.H - 1)] = bad;  // the very last gate of the segment
    expect_forward(f, f.fwd(), Status::kInvalidDecay);
    expect_backward(f, f.bwd(), Status::kInvalidDecay);
  }
  Fixture<decay::Gate> z;  // exactly 0 (and -0) is allowed
  z.g[0] = 0.f, z.g[1] = -0.f;
  CHECK(forward<Fixture<decay::Gate>::P>(z.fwd(), z.comm, z.wsp()) == Status::kSuccess);
}

TEST_CASE("validation: backward without a forward of this problem -> kNotForwarded") {
  using P = Fixture<decay::Gate>::P;
  Fixture<decay::Gate> f;  // workspace full of a sentinel pattern
  expect_backward(f, f.bwd(), Status::kNotForwarded);
  fill_bytes(f.ws, 0);  // and a zeroed one
  expect_backward(f, f.bwd(), Status::kNotForwarded);
  // Forward of N = 8, backward of N = 4 on the same workspace.
  f.forward_ok();
  auto b = f.bwd();
  b.shape.N = 4;
  expect_backward(f, b, Status::kNotForwarded);
  CHECK(backward<P>(f.bwd(), f.comm, f.wsp()) == Status::kSuccess);
}

TEST_CASE("validation: communicator failures are returned as kCommError, outputs untouched") {
  using P = Fixture<decay::Gate>::P;
  Fixture<decay::Gate> f(Shape{1, 8, 2, 8, 8, 2});
  for (int r : {0, 1}) {
    CAPTURE(r);
    TestComm c{r, 2, true};
    const auto before = f.snap();
    CHECK(forward<P>(f.fwd(), c, f.wsp()) == Status::kCommError);
    // Outputs untouched (the workspace is scratch and may have been used).
    CHECK(f.snap()[3] == before[3]);    // o
    CHECK(f.snap()[11] == before[11]);  // final state
  }
  // AllGather surfaces all_gather failures the same way.
  using PA = P16<decay::Gate, schedule::AllGather>;
  AlignedVec<unsigned char> ws(workspace_size<PA, float>(f.s, f.comm));
  TestComm c{1, 2, true};
  const auto o_before = snapshot(f.o);
  CHECK(forward<PA>(f.fwd(), c, Workspace{ws.data(), ws.size()}) == Status::kCommError);
  CHECK(unchanged(f.o, o_before));
}

TEST_CASE("to_string(Status) is non-empty and distinct for every status") {
  std::vector<std::string> names;
  for (int i = int(Status::kSuccess); i <= int(Status::kTimeout); ++i) {
    const char* s = to_string(Status(i));
    REQUIRE(s != nullptr);
    CHECK(std::string(s).size() > 3);
    names.emplace_back(s);
  }
  CHECK(names.size() == 22);
  CHECK(int(Status::kInternalError) == 20);  // codes are appended, never renumbered
  CHECK(int(Status::kTimeout) == 21);
  std::sort(names.begin(), names.end());
  CHECK(std::unique(names.begin(), names.end()) == names.end());
  CHECK(std::string(to_string(Status::kSuccess)) == "success");
}

// A forward that fails midway (here: a communicator error) has overwritten part of the reserve:
// it must not leave the previous forward's mark behind, or backward would compute on it.
TEST_CASE("validation: backward after a forward that failed midway -> kNotForwarded") {
  using P = Fixture<decay::None>::P;
  Fixture<decay::None> f(Shape{1, 8, 2, 8, 8, 2});
  TestComm c{1, 2, false};
  REQUIRE(forward<P>(f.fwd(), c, f.wsp()) == Status::kSuccess);
  c.fail = true;
  REQUIRE(forward<P>(f.fwd(), c, f.wsp()) == Status::kCommError);
  c.fail = false;
  CHECK(backward<P>(f.bwd(), c, f.wsp()) == Status::kNotForwarded);
}
