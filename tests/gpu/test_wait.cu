// Bounded waits (issue 10): comm::wait on a stream (comm/wait.cuh) and, when the suite is built
// with NCCL (LASP_TESTS_NCCL), over a 1-rank communicator (comm/nccl_wait.cuh), abort included.
//
// A stream is "blocked" by a kernel that spins on a flag in mapped pinned host memory. Every case
// sets the flag before it ends (after the wait returned), so the kernel exits and the process can
// synchronise and exit; the kernel also gives up by itself after kSpinLimitNs, a safety net for a
// failing case.
#include <doctest/doctest.h>
#include <lasp/lasp.cuh>
#if LASP_TESTS_NCCL
#include <nccl.h>
#include <lasp/comm/nccl.cuh>
#endif
#include <chrono>
#include <thread>
#include "../common/device.hpp"

namespace {

using std::chrono::milliseconds;
using ms_d = std::chrono::duration<double, std::milli>;
constexpr unsigned long long kSpinLimitNs = 60ull * 1000 * 1000 * 1000;  // 60 s
// Slack of a timed-out wait beyond its timeout: one poll (100 us) plus scheduling noise.
constexpr milliseconds kSlack{1500};

__device__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void spin_until(const volatile int* flag, unsigned long long limit_ns) {
  const unsigned long long t0 = global_ns();
  while (*flag == 0 && global_ns() - t0 < limit_ns) __nanosleep(2000);
}

/// A flag the host sets and a kernel spins on (mapped pinned memory, read through the device
/// pointer with volatile loads, so the kernel sees the host's store).
struct HostFlag {
  int* host = nullptr;
  int* dev = nullptr;
  HostFlag() {
    LASP_TEST_CUDA(cudaHostAlloc(&host, sizeof(int), cudaHostAllocMapped));
    __atomic_store_n(host, 0, __ATOMIC_SEQ_CST);
    LASP_TEST_CUDA(cudaHostGetDevicePointer(reinterpret_cast<void**>(&dev), host, 0));
  }
  void set() { __atomic_store_n(host, 1, __ATOMIC_SEQ_CST); }
  void block(cudaStream_t s) {
    spin_until<<<1, 1, 0, s>>>(dev, kSpinLimitNs);
    LASP_TEST_CUDA(cudaGetLastError());
  }
  ~HostFlag() {
    set();  // a spinning kernel must end before the memory it reads goes away
    cudaDeviceSynchronize();
    cudaFreeHost(host);
  }
  HostFlag(const HostFlag&) = delete;
  HostFlag& operator=(const HostFlag&) = delete;
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { LASP_TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

double ms(std::chrono::microseconds us) { return ms_d(us).count(); }

}  // namespace

TEST_CASE("wait: a finished stream -> kSuccess at once") {
  LASP_TEST_CUDA(cudaSetDevice(0));
  Stream st;
  lasp::comm::WaitReport rep;
  // Empty stream.
  CHECK(lasp::comm::wait(st.s, milliseconds(5000), {}, &rep) == lasp::Status::kSuccess);
  CHECK(rep.outcome == lasp::comm::WaitOutcome::kDone);
  CHECK(ms(rep.elapsed) < 500);
  // A kernel whose flag is already set ends at once.
  HostFlag f;
  f.set();
  f.block(st.s);
  CHECK(lasp::comm::wait(st.s, milliseconds(5000), {}, &rep) == lasp::Status::kSuccess);
  CHECK(rep.outcome == lasp::comm::WaitOutcome::kDone);
  CHECK(!rep.aborted);
  CHECK(rep.cuda_error == cudaSuccess);
  CHECK(ms(rep.elapsed) < 500);
  MESSAGE("finished stream: wait returned after " << ms(rep.elapsed) << " ms");
  // Timeout 0 still polls once.
  CHECK(lasp::comm::wait(st.s, milliseconds(0)) == lasp::Status::kSuccess);
}

TEST_CASE("wait: a stream blocked past the deadline -> kTimeout within timeout + slack, nothing cancelled") {
  LASP_TEST_CUDA(cudaSetDevice(0));
  Stream st;
  HostFlag f;
  f.block(st.s);
  const milliseconds timeout(300);
  lasp::comm::WaitReport rep;
  const auto t0 = std::chrono::steady_clock::now();
  const lasp::Status s = lasp::comm::wait(st.s, timeout, {}, &rep);
  const double wall = ms_d(std::chrono::steady_clock::now() - t0).count();
  CHECK(s == lasp::Status::kTimeout);
  CHECK(rep.outcome == lasp::comm::WaitOutcome::kTimedOut);
  CHECK(!rep.aborted);
  CHECK(wall >= double(timeout.count()));
  CHECK(wall <= double((timeout + kSlack).count()));
  MESSAGE("blocked stream: kTimeout after " << wall << " ms (timeout " << timeout.count() << " ms)");
  // Nothing was cancelled: the kernel still runs; timeout 0 polls once and times out again.
  CHECK(cudaStreamQuery(st.s) == cudaErrorNotReady);
  CHECK(lasp::comm::wait(st.s, milliseconds(0)) == lasp::Status::kTimeout);
  // Released, the same work finishes and a new wait succeeds.
  f.set();
  CHECK(lasp::comm::wait(st.s, milliseconds(10000), {}, &rep) == lasp::Status::kSuccess);
  CHECK(cudaStreamSynchronize(st.s) == cudaSuccess);
}

TEST_CASE("wait: work that ends before the deadline -> kSuccess when it ends") {
  LASP_TEST_CUDA(cudaSetDevice(0));
  Stream st;
  HostFlag f;
  f.block(st.s);
  std::thread release([&f] {
    std::this_thread::sleep_for(milliseconds(200));
    f.set();
  });
  lasp::comm::WaitOptions opts;
  opts.poll = std::chrono::microseconds(0);  // yield between polls
  lasp::comm::WaitReport rep;
  const lasp::Status s = lasp::comm::wait(st.s, milliseconds(10000), opts, &rep);
  release.join();
  CHECK(s == lasp::Status::kSuccess);
  CHECK(ms(rep.elapsed) >= 190);
  CHECK(ms(rep.elapsed) < 5000);
  MESSAGE("released after 200 ms: kSuccess after " << ms(rep.elapsed) << " ms");
}

#if LASP_TESTS_NCCL
namespace {
/// A 1-rank communicator on device 0 (ncclCommInitAll).
ncclComm_t one_rank_comm() {
  ncclComm_t c = nullptr;
  int dev = 0;
  REQUIRE(ncclCommInitAll(&c, 1, &dev) == ncclSuccess);
  return c;
}
}  // namespace

TEST_CASE("wait (NCCL, 1 rank): done -> kSuccess; blocked caller or side stream -> kTimeout without abort") {
  LASP_TEST_CUDA(cudaSetDevice(0));
  ncclComm_t c = one_rank_comm();
  {
    lasp::comm::Nccl h;
    REQUIRE(lasp::comm::Nccl::make(c, &h) == lasp::Status::kSuccess);
    Stream st;
    lasp_test::DeviceBuf<float> a(std::size_t(256)), b(std::size_t(256));
    lasp::comm::WaitReport rep;
    REQUIRE(h.all_gather(a.ptr, b.ptr, 256, st.s) == lasp::Status::kSuccess);
    CHECK(lasp::comm::wait(h, st.s, milliseconds(5000), {}, &rep) == lasp::Status::kSuccess);
    CHECK(rep.outcome == lasp::comm::WaitOutcome::kDone);
    CHECK(rep.nccl_error == 0);

    HostFlag f;
    f.block(st.s);
    CHECK(lasp::comm::wait(h, st.s, milliseconds(300), {}, &rep) == lasp::Status::kTimeout);
    CHECK(rep.outcome == lasp::comm::WaitOutcome::kTimedOut);
    CHECK(!rep.aborted);
    CHECK(ms(rep.elapsed) <= double((milliseconds(300) + kSlack).count()));
    CHECK(h.check() == lasp::Status::kSuccess);  // untouched
    f.set();
    CHECK(lasp::comm::wait(h, st.s, milliseconds(10000)) == lasp::Status::kSuccess);
    REQUIRE(h.all_gather(a.ptr, b.ptr, 256, st.s) == lasp::Status::kSuccess);
    CHECK(lasp::comm::wait(h, st.s, milliseconds(5000)) == lasp::Status::kSuccess);

    // Work on the handle's side stream (what ChainOverlap's backward puts there) is waited for
    // too, although nothing on the caller's stream depends on it.
    HostFlag g;
    cudaStream_t side = nullptr;
    REQUIRE(h.fork(st.s, &side) == lasp::Status::kSuccess);
    g.block(side);
    CHECK(lasp::comm::wait(h, st.s, milliseconds(300), {}, &rep) == lasp::Status::kTimeout);
    CHECK(rep.outcome == lasp::comm::WaitOutcome::kTimedOut);
    CHECK(lasp::comm::wait(st.s, milliseconds(0)) == lasp::Status::kSuccess);  // the caller's stream alone is done
    g.set();
    CHECK(lasp::comm::wait(h, st.s, milliseconds(10000)) == lasp::Status::kSuccess);
  }
  CHECK(ncclCommDestroy(c) == ncclSuccess);
}

TEST_CASE("wait (NCCL, 1 rank): abort on timeout -> kCommError; every copy of the handle refuses") {
  LASP_TEST_CUDA(cudaSetDevice(0));
  ncclComm_t c = one_rank_comm();
  lasp::comm::Nccl h;
  REQUIRE(lasp::comm::Nccl::make(c, &h) == lasp::Status::kSuccess);
  lasp::comm::Nccl copy = h;
  Stream st;
  lasp_test::DeviceBuf<float> a(std::size_t(256)), b(std::size_t(256));
  REQUIRE(h.all_gather(a.ptr, b.ptr, 256, st.s) == lasp::Status::kSuccess);
  REQUIRE(lasp::comm::wait(h, st.s, milliseconds(5000)) == lasp::Status::kSuccess);

  HostFlag f;
  f.block(st.s);
  // The blocking kernel is not NCCL's, so the abort cannot make it exit, and ncclCommAbort may
  // wait for the device while it frees memory: release it a while after the timeout, so that the
  // case ends either way (a dead peer's case, where the stuck kernels are NCCL's, is the
  // multi-process test).
  const milliseconds timeout(300), release_after(3000);
  std::thread release([&f, release_after] {
    std::this_thread::sleep_for(release_after);
    f.set();
  });
  lasp::comm::WaitOptions opts;
  opts.abort = true;
  lasp::comm::WaitReport rep;
  const lasp::Status s = lasp::comm::wait(h, st.s, timeout, opts, &rep);
  release.join();
  CHECK(s == lasp::Status::kCommError);
  CHECK(rep.outcome == lasp::comm::WaitOutcome::kTimedOut);
  CHECK(rep.aborted);
  CHECK(rep.abort_result == 0);
  CHECK(ms(rep.elapsed) >= double(timeout.count()));
  CHECK(ms(rep.elapsed) < double((release_after + milliseconds(10000)).count()));
  MESSAGE("abort on timeout: kCommError after " << ms(rep.elapsed) << " ms (timeout " << timeout.count()
                                                << " ms; the flag was released at " << release_after.count()
                                                << " ms: above it, ncclCommAbort waited for the spinning kernel)");
  // The communicator is freed: every copy refuses without touching it.
  CHECK(h.aborted());
  CHECK(copy.aborted());
  CHECK(copy.check() == lasp::Status::kCommError);
  CHECK(copy.all_gather(a.ptr, b.ptr, 256, st.s) == lasp::Status::kCommError);
  CHECK(lasp::comm::wait(copy, st.s, milliseconds(1000), opts, &rep) == lasp::Status::kCommError);
  CHECK(rep.outcome == lasp::comm::WaitOutcome::kRefused);
  CHECK(!rep.aborted);
  CHECK(h.abort() == lasp::Status::kSuccess);  // already aborted: nothing more to do
  // The stream drains (the spin kernel was released); the stream form waits for it.
  CHECK(lasp::comm::wait(st.s, milliseconds(10000)) == lasp::Status::kSuccess);
  // c is freed by the abort: no ncclCommDestroy.
}

TEST_CASE("wait (NCCL, raw communicator): abort on timeout; null communicator") {
  LASP_TEST_CUDA(cudaSetDevice(0));
  Stream st;
  CHECK(lasp::comm::wait(ncclComm_t{}, st.s, milliseconds(10)) == lasp::Status::kNullPointer);
  ncclComm_t c = one_rank_comm();
  lasp::comm::WaitReport rep;
  CHECK(lasp::comm::wait(c, st.s, milliseconds(1000), {}, &rep) == lasp::Status::kSuccess);
  HostFlag f;
  f.block(st.s);
  CHECK(lasp::comm::wait(c, st.s, milliseconds(200), {}, &rep) == lasp::Status::kTimeout);
  std::thread release([&f] {
    std::this_thread::sleep_for(milliseconds(3000));
    f.set();
  });
  lasp::comm::WaitOptions opts;
  opts.abort = true;
  const lasp::Status s = lasp::comm::wait(c, st.s, milliseconds(200), opts, &rep);
  release.join();
  CHECK(s == lasp::Status::kCommError);
  CHECK(rep.outcome == lasp::comm::WaitOutcome::kTimedOut);
  CHECK(rep.aborted);
  CHECK(rep.abort_result == 0);
  MESSAGE("raw communicator: kCommError after " << ms(rep.elapsed) << " ms");
  CHECK(lasp::comm::wait(st.s, milliseconds(10000)) == lasp::Status::kSuccess);
}
#endif  // LASP_TESTS_NCCL
