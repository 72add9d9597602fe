#pragma once
// Bounded waits on streams (issue 10): wait for the work queued on a stream so far, giving up
// after a timeout, instead of cudaStreamSynchronize, which blocks for ever when the stream holds
// a collective whose peer died or hangs (NCCL kernels spin until their data arrives).
//
//   lasp::comm::WaitReport rep;
//   lasp::Status st = lasp::comm::wait(stream, std::chrono::seconds(10), {}, &rep);
//   // kSuccess: the work queued before the call finished. kTimeout: not finished after 10 s,
//   // nothing cancelled (call again, or give up). kCudaError: recording or querying failed
//   // (rep.cuda_error; e.g. a kernel faulted).
//
// This file knows no NCCL. comm/nccl_wait.cuh (included by comm/nccl.cuh) has the form for a
// communicator: it also covers comm::Nccl's side stream, polls ncclCommGetAsyncError and, when
// the caller asks, aborts the communicator on a failure (the pattern of PyTorch's NCCL watchdog).
//
// How: one event is recorded on each stream, so only the work queued BEFORE the call is waited
// for; then every `poll` the events are queried (cudaEventQuery) until all completed or the
// deadline passed. Polling, not cudaEventSynchronize: a blocking synchronisation cannot be given
// up, which is the problem being solved. Events, not cudaStreamQuery: work queued after the call
// (by another thread) would otherwise extend the wait. The stream must belong to the current
// device (the events are created there), and must not be capturing a CUDA graph.
#include "../config.hpp"
#include <cuda_runtime.h>
#include <algorithm>
#include <chrono>
#include <thread>
#include "../status.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

/// How comm::wait waits. An aggregate: `WaitOptions o; o.abort = true;` (C++17 has no
/// designated initialisers).
struct WaitOptions {
  /// Communicator forms only (comm/nccl_wait.cuh): on a failure (an asynchronous NCCL error, the
  /// timeout, a CUDA error while waiting), abort the communicator with ncclCommAbort. Off by
  /// default: lasp borrows communicators and never aborts one unless asked (see nccl_wait.cuh for
  /// the communicator's state afterwards). The stream form ignores it.
  bool abort = false;
  /// Time between two polls. A finished stream is noticed at most this late; each poll costs one
  /// cudaEventQuery per stream (and one ncclCommGetAsyncError in the communicator forms), about a
  /// microsecond of host time. Zero: yield between polls instead of sleeping.
  std::chrono::microseconds poll{100};
};

/// Why comm::wait returned.
enum class WaitOutcome : int {
  kDone,        // every event completed (and, for a communicator, no asynchronous error)
  kTimedOut,    // the deadline passed first
  kAsyncError,  // the communicator reported an asynchronous error (WaitReport::nccl_error)
  kCudaError,   // creating, recording or querying an event failed (WaitReport::cuda_error)
  kRefused,     // nothing was waited for: an unusable or already aborted communicator handle
};

/// What comm::wait saw (optional out-parameter).
struct WaitReport {
  WaitOutcome outcome = WaitOutcome::kRefused;
  bool aborted = false;                  // the communicator was aborted by this call
  int nccl_error = 0;                    // the asynchronous ncclResult_t seen (0: none)
  int abort_result = 0;                  // when aborted: 0, or the failure the abort reported
  cudaError_t cuda_error = cudaSuccess;  // the CUDA error behind kCudaError
  std::chrono::microseconds elapsed{0};  // from the call to its return, abort included
};

namespace detail {

/// Makes `device` current for a scope and restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (device < 0) return;
    if ((error_ = cudaGetDevice(&prev_)) != cudaSuccess) return;
    if (prev_ != device && (error_ = cudaSetDevice(device)) == cudaSuccess) restore_ = true;
  }
  ~DeviceScope() {
    if (restore_) cudaSetDevice(prev_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  cudaError_t error() const { return error_; }

 private:
  int prev_ = -1;
  bool restore_ = false;
  cudaError_t error_ = cudaSuccess;
};

/// A communicator form waits on the caller's stream and the communicator's side stream.
constexpr int kMaxWaitStreams = 2;

/// The bounded wait every form shares: records one event on each of streams[0..n) (the current
/// device must be theirs), then polls. `poll_error()` returns 0, or the communicator's nonzero
/// error code; it is called at every poll and once more after the events completed, so that work
/// that "finished" because a failed communicator let it through is not reported as done.
template <class PollError>
WaitOutcome wait_streams(const cudaStream_t* streams, int n, std::chrono::steady_clock::time_point deadline,
                         std::chrono::microseconds poll, PollError&& poll_error, WaitReport* rep) {
  cudaEvent_t ev[kMaxWaitStreams] = {};
  n = std::min(n, kMaxWaitStreams);
  cudaError_t e = cudaSuccess;
  for (int i = 0; i < n && e == cudaSuccess; ++i) {
    e = cudaEventCreateWithFlags(&ev[i], cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(ev[i], streams[i]);
  }
  WaitOutcome out = WaitOutcome::kCudaError;
  while (e == cudaSuccess) {
    if (const int c = poll_error()) {
      rep->nccl_error = c;
      out = WaitOutcome::kAsyncError;
      break;
    }
    bool pending = false;
    for (int i = 0; i < n && e == cudaSuccess; ++i) {
      if (!ev[i]) continue;
      const cudaError_t q = cudaEventQuery(ev[i]);
      if (q == cudaErrorNotReady) {
        pending = true;
      } else if (q == cudaSuccess) {
        cudaEventDestroy(ev[i]);
        ev[i] = nullptr;
      } else {
        e = q;
      }
    }
    if (e != cudaSuccess) break;
    if (!pending) {
      if (const int c = poll_error()) {
        rep->nccl_error = c;
        out = WaitOutcome::kAsyncError;
      } else {
        out = WaitOutcome::kDone;
      }
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      out = WaitOutcome::kTimedOut;
      break;
    }
    if (poll.count() > 0)
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(poll, deadline - now));
    else
      std::this_thread::yield();
  }
  if (e != cudaSuccess) rep->cuda_error = e;
  // Destroying an event whose work is still pending is fine: CUDA releases it on completion.
  for (int i = 0; i < n; ++i)
    if (ev[i]) cudaEventDestroy(ev[i]);
  return out;
}

inline std::chrono::microseconds since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
}

}  // namespace detail

/// Waits at most `timeout` for the work queued on `stream` (a stream of the current device) before
/// this call. kSuccess: it finished. kTimeout: it had not finished at the deadline; nothing was
/// cancelled, the work may still finish (wait again, or give up: a kernel that never ends keeps
/// the stream, and cudaStreamSynchronize / cudaFree / process exit waiting on it, busy).
/// kCudaError: an event could not be created, recorded or queried (report->cuda_error; a kernel
/// of the stream may have faulted). Returns within timeout + one poll interval.
[[nodiscard]] inline Status wait(cudaStream_t stream, std::chrono::milliseconds timeout, const WaitOptions& opts = {},
                                 WaitReport* report = nullptr) {
  const auto t0 = std::chrono::steady_clock::now();
  WaitReport local;
  WaitReport& rep = report ? *report : local;
  rep = WaitReport{};
  const WaitOutcome out =
      detail::wait_streams(&stream, 1, t0 + timeout, opts.poll, [] { return 0; }, &rep);
  rep.outcome = out;
  rep.elapsed = detail::since(t0);
  return out == WaitOutcome::kDone ? Status::kSuccess
         : out == WaitOutcome::kTimedOut ? Status::kTimeout
                                         : Status::kCudaError;
}

}  // namespace comm
LASP_NAMESPACE_END
