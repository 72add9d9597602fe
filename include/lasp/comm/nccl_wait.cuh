#pragma once
// Bounded waits over an NCCL communicator (issue 10): the pattern of PyTorch's NCCL watchdog.
// Wait for lasp's work with a deadline, polling NCCL's asynchronous error; on a failure, abort
// the communicator if the caller asked, so that NCCL kernels stuck waiting for a dead or hung
// peer exit and the stream drains.
//
//   lasp::comm::Nccl comm(sp_comm);
//   lasp::comm::WaitOptions opts;
//   opts.abort = true;                                  // the caller's opt-in (default: off)
//   for (...) {
//     lasp::forward(plan, fa, comm, ws, stream);  lasp::backward(plan, ba, comm, ws, stream);
//     lasp::Status st = lasp::comm::wait(comm, stream, std::chrono::seconds(10), opts);
//     if (st != lasp::Status::kSuccess) { /* kCommError: sp_comm is gone; re-form the group */ }
//   }
//
// Outcomes (WaitReport says which; the status says what the communicator's state is):
//  - kSuccess: the work queued on `stream` (and the handle's side stream) before the call
//    finished, and NCCL reports no asynchronous error.
//  - kCommError: NCCL reported an asynchronous error (aborted if opts.abort; without it the
//    communicator is still allocated but broken: NCCL's rule is to abort it), or the deadline
//    passed and opts.abort aborted the communicator. After an abort see Nccl::abort: every copy
//    of the handle refuses, the ncclComm_t is freed (do not destroy it), a new one is needed.
//  - kTimeout: the deadline passed, opts.abort is off: nothing was done; the work may still
//    finish; wait again, or abort (Nccl::abort) yourself.
//  - kCudaError: an event could not be created, recorded or queried (a faulted kernel, or a
//    stream of another device); aborted too if opts.abort, since this rank cannot go on.
//  - the handle's own status (kCommError, kNullPointer, ...) if it is unusable or was aborted
//    before: nothing waited for (outcome kRefused; use the stream form, comm/wait.cuh, to wait
//    for a stream to drain after an abort).
//
// What is covered, and what is not:
//  - covered: work already queued on `stream` and on the handle's side stream. The side stream
//    matters: schedule::ChainOverlap / AllGatherOverlap run backward's NCCL scan there and join it
//    into the caller's stream, but a call that fails between fork and join returns before the
//    join, and copies of a handle used from several streams share one side stream; an event on
//    the caller's stream alone would miss that work.
//  - not covered: host calls that block inside NCCL before anything is queued (connection setup
//    with a peer on first use, ncclCommInitRank, a non-blocking communicator's ncclInProgress
//    loop inside lasp's calls); other streams of the caller and other communicators; the time
//    ncclCommAbort itself takes (counted in WaitReport::elapsed, not bounded by the timeout).
//  - the peers are not told: each rank needs its own bounded wait (a rank whose peer died sees
//    its own timeout, or an asynchronous error on transports that notice the lost connection).
//  - waits from the thread that drives the rank: aborting from a second (watchdog) thread while
//    the first is inside a lasp call on the same communicator is a use-after-free.
#include <cuda_runtime.h>
#include <nccl.h>
#include <chrono>
#include "../config.hpp"
#include "../status.hpp"
#include "nccl.cuh"
#include "wait.cuh"

LASP_NAMESPACE_BEGIN
namespace comm {

namespace detail {
/// 0, or the asynchronous error NCCL reports for `comm` (ncclInProgress, a non-blocking
/// communicator still enqueueing, is not an error).
inline int nccl_async_error(ncclComm_t comm) {
  ncclResult_t async = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm, &async);
  if (r != ncclSuccess) return int(r);
  return async == ncclSuccess || async == ncclInProgress ? 0 : int(async);
}

/// Turns a wait's outcome into the status of a communicator form, aborting when asked.
/// `abort()` returns ncclCommAbort's result.
template <class Abort>
Status finish_comm_wait(WaitOutcome out, const WaitOptions& opts, Abort&& abort, WaitReport& rep) {
  rep.outcome = out;
  if (out == WaitOutcome::kDone) return Status::kSuccess;
  if (opts.abort) {
    rep.abort_result = int(abort());
    rep.aborted = true;
  }
  switch (out) {
    case WaitOutcome::kAsyncError: return Status::kCommError;
    case WaitOutcome::kTimedOut: return opts.abort ? Status::kCommError : Status::kTimeout;
    default: return Status::kCudaError;
  }
}
}  // namespace detail

/// Waits at most `timeout` for the work queued on `stream` and on `comm`'s side stream before
/// this call, polling NCCL's asynchronous error; aborts the communicator on a failure when
/// opts.abort (then through Nccl::abort: every copy of `comm` is marked). `stream` must belong to
/// the communicator's device (it is made current for the call and restored). Statuses: see the
/// top of this file. Returns within timeout + one poll interval + the time of ncclCommAbort.
[[nodiscard]] inline Status wait(Nccl& comm, cudaStream_t stream, std::chrono::milliseconds timeout,
                                 const WaitOptions& opts = {}, WaitReport* report = nullptr) {
  const auto t0 = std::chrono::steady_clock::now();
  WaitReport local;
  WaitReport& rep = report ? *report : local;
  rep = WaitReport{};
  if (comm.status() != Status::kSuccess || comm.aborted()) {
    rep.elapsed = detail::since(t0);
    return comm.status() != Status::kSuccess ? comm.status() : Status::kCommError;
  }
  const detail::DeviceScope dev(comm.device());
  WaitOutcome out = WaitOutcome::kCudaError;
  if (dev.error() != cudaSuccess) {
    rep.cuda_error = dev.error();
  } else {
    const cudaStream_t streams[detail::kMaxWaitStreams] = {stream, comm.side_stream()};
    const int n = streams[1] && streams[1] != stream ? 2 : 1;
    const ncclComm_t h = comm.handle();
    out = detail::wait_streams(streams, n, t0 + timeout, opts.poll, [h] { return detail::nccl_async_error(h); },
                               &rep);
  }
  const Status st = detail::finish_comm_wait(
      out, opts, [&comm] { return comm.abort() == Status::kSuccess ? ncclSuccess : ncclInternalError; }, rep);
  rep.elapsed = detail::since(t0);
  return st;
}

/// The same over a raw communicator, for NCCL traffic of the caller's own (a DP gradient
/// all-reduce on `stream`, say): no side stream; the abort is a plain ncclCommAbort, so Nccl
/// handles made from `comm` are NOT marked (they dangle: destroy them without using them).
/// kNullPointer for a null communicator.
[[nodiscard]] inline Status wait(ncclComm_t comm, cudaStream_t stream, std::chrono::milliseconds timeout,
                                 const WaitOptions& opts = {}, WaitReport* report = nullptr) {
  const auto t0 = std::chrono::steady_clock::now();
  WaitReport local;
  WaitReport& rep = report ? *report : local;
  rep = WaitReport{};
  if (!comm) return Status::kNullPointer;
  int device = -1;
  WaitOutcome out = WaitOutcome::kCudaError;
  if (ncclCommCuDevice(comm, &device) != ncclSuccess) {
    out = WaitOutcome::kAsyncError;  // NCCL cannot even describe it
    rep.nccl_error = int(ncclInvalidArgument);
  } else {
    const detail::DeviceScope dev(device);
    if (dev.error() != cudaSuccess)
      rep.cuda_error = dev.error();
    else
      out = detail::wait_streams(&stream, 1, t0 + timeout, opts.poll, [comm] { return detail::nccl_async_error(comm); },
                                 &rep);
  }
  const Status st = detail::finish_comm_wait(out, opts, [comm] { return ncclCommAbort(comm); }, rep);
  rep.elapsed = detail::since(t0);
  return st;
}

}  // namespace comm
LASP_NAMESPACE_END
