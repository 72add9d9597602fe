// comm::Nccl on real GPUs (one thread per rank): construction and refusals, send/recv pairs,
// the grouped ring hop (sendrecv), all_gather, the concept trait; and the checking mode
// comm::check_peers: same shape -> kSuccess on every rank, a rank with another N or another
// policy -> kPeerMismatch on every rank.
#include "support.cuh"

using namespace lasp_test;
using lasp::Status;

static_assert(lasp::is_communicator_v<lasp::comm::Nccl>, "comm::Nccl must model the communicator concept");
static_assert(lasp::comm::Nccl::kDeviceMemory, "comm::Nccl moves device memory");

namespace {
/// Device buffer of n floats filled with `v`.
DeviceBuf<float> filled(std::size_t n, float v) {
  std::vector<float> h(n, v);
  DeviceBuf<float> d(n);
  d.upload(h);
  return d;
}
std::vector<float> fetch(const DeviceBuf<float>& d) {
  std::vector<float> h(d.n);
  d.download(h);
  return h;
}
}  // namespace

TEST_CASE("comm::Nccl: refusals without a usable communicator") {
  if (skip_unless_gpus(2, "comm::Nccl refusals")) return;
  lasp::comm::Nccl none;
  CHECK(none.size() == 0);
  CHECK(none.status() != Status::kSuccess);
  CHECK(none.send(nullptr, 1, 0, nullptr) == Status::kCommError);
  CHECK(none.recv(nullptr, 1, 0, nullptr) == Status::kCommError);
  CHECK(none.all_gather(nullptr, nullptr, 1, nullptr) == Status::kCommError);
  lasp::comm::Nccl out;
  CHECK(lasp::comm::Nccl::make(nullptr, &out) == Status::kNullPointer);
  CHECK(lasp::comm::Nccl(nullptr).status() == Status::kNullPointer);
  ncclComm_t sp = nullptr, dp = nullptr;
  CHECK(lasp::comm::split_sp_dp(nullptr, 1, &sp, &dp) == Status::kNullPointer);
}

TEST_CASE("comm::Nccl: rank/size, send/recv, sendrecv ring hops and all_gather on every GPU") {
  if (skip_unless_gpus(2, "comm::Nccl ops")) return;
  const int R = gpu_count() >= 4 ? 4 : 2;
  Clique cq(R);
  constexpr std::size_t n = 1000;
  std::vector<Status> st_make(R), st_peer(R), st_chain(R), st_ring(R), st_gather(R);
  std::vector<int> rank(R), size(R), dev(R);
  std::vector<std::vector<float>> chain(R), ring(R), gathered(R);
  on_gpu_threads(R, [&](int r) {
    lasp::comm::Nccl c;
    st_make[r] = lasp::comm::Nccl::make(cq.comms[std::size_t(r)], &c);
    if (st_make[r] != Status::kSuccess) return;
    rank[r] = c.rank(), size[r] = c.size(), dev[r] = c.device();
    // Refusals: self, out of range (no NCCL call is made).
    const Status a = c.send(nullptr, n, r, nullptr), b = c.recv(nullptr, n, R, nullptr),
                 d = c.sendrecv(nullptr, -2, nullptr, -1, n, nullptr);
    st_peer[r] = a == Status::kCommError && b == Status::kCommError && d == Status::kCommError ? Status::kSuccess
                                                                                               : Status::kInternalError;
    cudaStream_t s;
    LASP_TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    // Chain as in schedule::Chain: receive from r-1, add, send to r+1 (separate groups).
    DeviceBuf<float> acc = filled(n, 0.f), one = filled(n, float(r + 1));
    Status st = Status::kSuccess;
    if (r > 0) st = c.recv(acc.ptr, n, r - 1, s);
    LASP_TEST_CUDA(cudaStreamSynchronize(s));
    std::vector<float> h = fetch(acc);
    for (float& x : h) x += float(r + 1);
    acc.upload(h);
    if (st == Status::kSuccess && r < R - 1) st = c.send(acc.ptr, n, r + 1, s);
    LASP_TEST_CUDA(cudaStreamSynchronize(s));
    st_chain[r] = st;
    chain[r] = fetch(acc);
    // Ring hop: every rank sends to r+1 and receives from r-1 at once (wrap-around).
    DeviceBuf<float> mine = filled(n, float(10 * r)), got = filled(n, -1.f);
    st_ring[r] = c.sendrecv(mine.ptr, (r + 1) % R, got.ptr, (r + R - 1) % R, n, s);
    LASP_TEST_CUDA(cudaStreamSynchronize(s));
    ring[r] = fetch(got);
    // All-gather.
    DeviceBuf<float> all = filled(n * std::size_t(R), -1.f);
    st_gather[r] = c.all_gather(mine.ptr, all.ptr, n, s);
    LASP_TEST_CUDA(cudaStreamSynchronize(s));
    gathered[r] = fetch(all);
    LASP_TEST_CUDA(cudaStreamDestroy(s));
    if (c.check() != Status::kSuccess) st_gather[r] = Status::kCommError;
  });
  for (int r = 0; r < R; ++r) {
    CAPTURE(r);
    REQUIRE(st_make[r] == Status::kSuccess);
    CHECK(rank[r] == r);
    CHECK(size[r] == R);
    CHECK(dev[r] == r);
    CHECK(st_peer[r] == Status::kSuccess);
    CHECK(st_chain[r] == Status::kSuccess);
    CHECK(st_ring[r] == Status::kSuccess);
    CHECK(st_gather[r] == Status::kSuccess);
    const float want_chain = float((r + 1) * (r + 2) / 2);  // 1 + 2 + ... + (r+1)
    bool chain_ok = true, ring_ok = true, gather_ok = true;
    for (float x : chain[r]) chain_ok &= x == want_chain;
    for (float x : ring[r]) ring_ok &= x == float(10 * ((r + R - 1) % R));
    for (std::size_t i = 0; i < gathered[r].size(); ++i) gather_ok &= gathered[r][i] == float(10 * int(i / n));
    CHECK(chain_ok);
    CHECK(ring_ok);
    CHECK(gather_ok);
  }
}

namespace {
/// Spins for about `ns` nanoseconds, then writes v to *p (makes ordering mistakes visible).
__global__ void spin_then_write(float* p, float v, unsigned long long ns) {
  const unsigned long long t0 = clock64();
  // clock64 counts SM cycles (~1.5-2 GHz): 2 cycles per ns is an upper bound for the wait.
  while (clock64() - t0 < 2 * ns) {
  }
  *p = v;
}
}  // namespace

TEST_CASE("comm::Nccl: fork/join order the side stream after and before the caller's stream") {
  if (skip_unless_gpus(2, "comm::Nccl fork/join")) return;
  Clique cq(2);
  std::vector<float> seen(2, -1.f), after(2, -1.f);
  std::vector<Status> st(2, Status::kInternalError);
  std::vector<int> distinct(2, 0);
  on_gpu_threads(2, [&](int r) {
    lasp::comm::Nccl c(cq.comms[std::size_t(r)]);
    if (c.status() != Status::kSuccess) {
      st[std::size_t(r)] = c.status();
      return;
    }
    cudaStream_t s, side = nullptr;
    LASP_TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    DeviceBuf<float> a = filled(1, 0.f), b = filled(1, 0.f);
    spin_then_write<<<1, 1, 0, s>>>(a.ptr, 7.f, 20000000ull);  // ~20 ms, then a = 7
    Status x = c.fork(s, &side);
    distinct[std::size_t(r)] = side != nullptr && side != s && side == c.side_stream();
    if (x == Status::kSuccess) {
      // On the side stream: b = a (must see 7), then a = 9 after a delay.
      LASP_TEST_CUDA(cudaMemcpyAsync(b.ptr, a.ptr, sizeof(float), cudaMemcpyDeviceToDevice, side));
      spin_then_write<<<1, 1, 0, side>>>(a.ptr, 9.f, 20000000ull);
      x = c.join(s);
    }
    float h[2] = {-1.f, -1.f};
    LASP_TEST_CUDA(cudaMemcpyAsync(&h[0], b.ptr, sizeof(float), cudaMemcpyDeviceToHost, s));
    LASP_TEST_CUDA(cudaMemcpyAsync(&h[1], a.ptr, sizeof(float), cudaMemcpyDeviceToHost, s));  // must see 9
    LASP_TEST_CUDA(cudaStreamSynchronize(s));
    seen[std::size_t(r)] = h[0], after[std::size_t(r)] = h[1], st[std::size_t(r)] = x;
    LASP_TEST_CUDA(cudaStreamDestroy(s));
  });
  for (int r = 0; r < 2; ++r) {
    CAPTURE(r);
    CHECK(st[std::size_t(r)] == Status::kSuccess);
    CHECK(distinct[std::size_t(r)] == 1);
    CHECK(seen[std::size_t(r)] == 7.f);
    CHECK(after[std::size_t(r)] == 9.f);
  }
  lasp::comm::Nccl none;
  cudaStream_t side = nullptr;
  CHECK(none.fork(nullptr, &side) == Status::kCommError);
  CHECK(none.join(nullptr) == Status::kCommError);
}

namespace {
using PH = lasp::Policy<lasp::decay::PerHead>;
using PG = lasp::Policy<lasp::decay::Gate>;
using PHAG = lasp::Policy<lasp::decay::PerHead, lasp::schedule::AllGather>;

/// check_peers on every rank of `cq`; rank r checks `shape_of(r)` with policy `policy_of(r)`
/// (0: PH, 1: PG, 2: PHAG) and element type bf16 unless `fp16_rank` == r.
template <class ShapeOf>
std::vector<Status> check_all(Clique& cq, ShapeOf shape_of, int other_policy_rank = -1, int fp16_rank = -1) {
  const int R = cq.size();
  std::vector<Status> st(std::size_t(R), Status::kInternalError);
  on_gpu_threads(R, [&](int r) {
    lasp::comm::Nccl c(cq.comms[std::size_t(r)]);
    if (c.status() != Status::kSuccess) {
      st[std::size_t(r)] = c.status();
      return;
    }
    DeviceBuf<float> scratch(lasp::comm::check_peers_scratch_floats(c.size()));
    cudaStream_t s;
    LASP_TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const lasp::Shape shape = shape_of(r);
    Status x;
    if (r == other_policy_rank) x = lasp::comm::check_peers<PG, lasp::bf16>(shape, c, scratch.ptr, s);
    else if (r == fp16_rank) x = lasp::comm::check_peers<PH, __half>(shape, c, scratch.ptr, s);
    else x = lasp::comm::check_peers<PH, __nv_bfloat16>(shape, c, scratch.ptr, s);  // = lasp::bf16
    st[std::size_t(r)] = x;
    LASP_TEST_CUDA(cudaStreamDestroy(s));
  });
  return st;
}
bool all_are(const std::vector<Status>& v, Status s) {
  for (Status x : v)
    if (x != s) return false;
  return true;
}
}  // namespace

TEST_CASE("check_peers over NCCL: agreement -> kSuccess; another N or policy on one rank -> kPeerMismatch everywhere") {
  if (skip_unless_gpus(2, "check_peers")) return;
  const int R = gpu_count() >= 4 ? 4 : 2;
  Clique cq(R);
  const lasp::Shape base{2, 200, 3, 128, 128, R};
  {
    const auto st = check_all(cq, [&](int) { return base; });
    CHECK(all_are(st, Status::kSuccess));
  }
  {  // lasp::bf16 on one rank, __nv_bfloat16 on the others: the same element type
    std::vector<Status> st(std::size_t(R), Status::kInternalError);
    on_gpu_threads(R, [&](int r) {
      lasp::comm::Nccl c(cq.comms[std::size_t(r)]);
      DeviceBuf<float> scratch(lasp::comm::check_peers_scratch_floats(c.size()));
      st[std::size_t(r)] = r == 0 ? lasp::comm::check_peers<PH, lasp::bf16>(base, c, scratch.ptr, nullptr)
                                  : lasp::comm::check_peers<PH, __nv_bfloat16>(base, c, scratch.ptr, nullptr);
    });
    CHECK(all_are(st, Status::kSuccess));
  }
  {  // the last rank has another local N
    const auto st = check_all(cq, [&](int r) {
      lasp::Shape s = base;
      if (r == R - 1) s.N = 199;
      return s;
    });
    CHECK(all_are(st, Status::kPeerMismatch));
  }
  {  // rank 0 has another decay policy
    const auto st = check_all(cq, [&](int) { return base; }, 0);
    CHECK(all_are(st, Status::kPeerMismatch));
  }
  {  // rank 1 has fp16 instead of bf16
    const auto st = check_all(cq, [&](int) { return base; }, -1, 1);
    CHECK(all_are(st, Status::kPeerMismatch));
  }
  {  // rank 1 has another E
    const auto st = check_all(cq, [&](int r) {
      lasp::Shape s = base;
      if (r == 1) s.E = 64;
      return s;
    });
    CHECK(all_are(st, Status::kPeerMismatch));
  }
  {  // everyone agrees on an R that is not the communicator size
    const auto st = check_all(cq, [&](int) {
      lasp::Shape s = base;
      s.R = R + 1;
      return s;
    });
    CHECK(all_are(st, Status::kSpSizeMismatch));
  }
  {  // and the clique still works afterwards
    const auto st = check_all(cq, [&](int) { return base; });
    CHECK(all_are(st, Status::kSuccess));
  }
}
