#pragma once
// The NCCL communicator of an SP group, and the SP x DP split of a world communicator.
// This is the only lasp file that includes <nccl.h> (link lasp::nccl to use it).
//
//   // One rank per GPU; sp_comm is the user's ncclComm_t of this rank's SP group.
//   lasp::comm::Nccl comm;
//   if (lasp::comm::Nccl::make(sp_comm, &comm) != lasp::Status::kSuccess) ...;
//   using P = lasp::Policy<lasp::decay::PerHead, lasp::schedule::Chain>;
//   lasp::Status st = lasp::forward<P>(fwd_args, comm, workspace, stream);   // stream on this GPU
//
// The communicator is borrowed: lasp never destroys or finalises it, and aborts it only when the
// caller asks (Nccl::abort, or comm::wait with WaitOptions::abort: comm/nccl_wait.cuh, included
// at the end of this file). Every call first polls ncclCommGetAsyncError and returns
// Status::kCommError if NCCL reported an asynchronous failure (or a call fails); the caller then
// decides whether to abort. Non-blocking communicators (ncclConfig_t::blocking = 0) are waited
// for until their calls are enqueued.
//
// Bounded waits: lasp::forward/backward only enqueue work. To learn within a deadline whether it
// finished (a dead or hung peer leaves NCCL kernels spinning for ever), use
//   lasp::Status st = lasp::comm::wait(comm, stream, std::chrono::seconds(10), opts);
// instead of cudaStreamSynchronize (comm/nccl_wait.cuh).
//
// Drive each rank from its own thread (one process per GPU, or one thread per GPU in one
// process), with that GPU current. Not supported:
//  - one thread driving several ranks, or calling lasp::forward/backward inside an outer
//    ncclGroupStart/End: the schedules launch kernels between their NCCL calls (the chain's
//    combine runs between its recv and its send), and NCCL defers grouped calls to the outer
//    ncclGroupEnd, so those kernels would run before the data arrives;
//  - streams of another GPU than the communicator's.
// Use the SP communicator from one stream at a time, and in the same order on every rank (NCCL
// requires it); a communicator dedicated to lasp's SP traffic is simplest.
#include <cuda_runtime.h>
#include <nccl.h>
#include <atomic>
#include <cstddef>
#include <memory>
#include <thread>
#include "../config.hpp"
#include "concept.hpp"
#include "groups.hpp"

#if !defined(NCCL_VERSION_CODE) || NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "lasp/comm/nccl.cuh needs NCCL >= 2.18 (ncclCommSplit, grouped point-to-point)"
#endif

LASP_NAMESPACE_BEGIN
namespace comm {

namespace detail {
/// Waits while a non-blocking communicator reports ncclInProgress; then its final state.
inline ncclResult_t nccl_settle(ncclComm_t comm, ncclResult_t r) {
  while (r == ncclInProgress) {
    std::this_thread::yield();
    if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) return ncclInternalError;
  }
  return r;
}
inline Status nccl_status(ncclResult_t r) { return r == ncclSuccess ? Status::kSuccess : Status::kCommError; }

/// The side stream of a communicator (highest priority, non-blocking) and the two events that
/// fork it from / join it to a caller's stream. Created on the communicator's device.
/// Also the one other piece of state the copies of an Nccl handle share: whether the caller had
/// the communicator aborted (Nccl::abort). ncclCommAbort frees the ncclComm_t, so every copy must
/// stop touching it, not only the copy that aborted.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t forked = nullptr, done = nullptr;
  int device = -1;
  std::atomic<bool> aborted{false};
  ~SideStream() {
    int cur = -1;
    const bool restore = cudaGetDevice(&cur) == cudaSuccess && cur != device && cudaSetDevice(device) == cudaSuccess;
    if (forked) cudaEventDestroy(forked);
    if (done) cudaEventDestroy(done);
    if (stream) cudaStreamDestroy(stream);  // pending work still completes
    if (restore) cudaSetDevice(cur);
  }
  static Status create(int device, std::shared_ptr<SideStream>* out) {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) return Status::kCudaError;
    if (cur != device && cudaSetDevice(device) != cudaSuccess) return Status::kCudaError;
    auto s = std::make_shared<SideStream>();
    s->device = device;
    int lo = 0, hi = 0;
    bool ok = cudaDeviceGetStreamPriorityRange(&lo, &hi) == cudaSuccess &&
              cudaStreamCreateWithPriority(&s->stream, cudaStreamNonBlocking, hi) == cudaSuccess &&
              cudaEventCreateWithFlags(&s->forked, cudaEventDisableTiming) == cudaSuccess &&
              cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming) == cudaSuccess;
    if (cur != device && cudaSetDevice(cur) != cudaSuccess) ok = false;
    if (!ok) return Status::kCudaError;  // s releases whatever was created
    *out = std::move(s);
    return Status::kSuccess;
  }
};
}  // namespace detail

/// lasp's communicator over a user's NCCL communicator of one SP group (models the concept of
/// comm/concept.hpp: device memory, cudaStream_t). A copyable handle around a borrowed
/// ncclComm_t; rank and size are read once, at construction.
///
/// send/recv/sendrecv are each one ncclGroupStart/End group, so they can never deadlock on a
/// half-issued pairing; a send is matched by the peer's recv of the same count. Buffers are
/// fp32 device memory on the communicator's GPU; operations are stream-ordered and return
/// before they complete (NCCL semantics).
///
/// Side stream: construction also creates one high-priority stream and two events on the
/// communicator's GPU (shared by copies of the handle, released with the last one). fork/join
/// let schedule::ChainOverlap / AllGatherOverlap run backward's reverse scan there, overlapped
/// with rank-local kernels on the caller's stream (the plain schedules do not: measured slower,
/// bench/RESULTS.md). Copies share that stream: use one handle per rank, from one thread.
class Nccl {
 public:
  using stream_type = cudaStream_t;
  static constexpr bool kDeviceMemory = true;

  /// An empty handle: size() == 0, every operation returns kCommError.
  Nccl() = default;
  /// Wraps `comm`; check status() (kNullPointer for a null comm, kCommError if NCCL refused to
  /// describe the communicator or reports an error, kCudaError without a side stream).
  explicit Nccl(ncclComm_t comm) { status_ = init(comm); }
  /// The same, with the group's node size (schedule::Hierarchical): ranks [n g, (n+1) g) of the
  /// SP communicator share node n. NCCL does not say which ranks share a host in a portable way,
  /// so the caller, who placed the ranks, says it: comm::GroupRanks::make(w, W, sp,
  /// ranks_per_node, &g) gives g.sp_node_size from the ranks per host. 0 = unknown. No second
  /// communicator is needed: point-to-point within the SP communicator uses NVLink between ranks
  /// of one host and the network between hosts.
  Nccl(ncclComm_t comm, int node_size) : node_size_(node_size) { status_ = init(comm); }

  /// Wraps `comm` into *out. kSuccess, kNullPointer, kCommError (rank/size/device queries failed
  /// or the communicator already carries an asynchronous error), or kCudaError (the side stream
  /// could not be created). *out untouched on failure.
  [[nodiscard]] static Status make(ncclComm_t comm, Nccl* out) { return make(comm, 0, out); }
  /// make() with the group's node size (see the two-argument constructor).
  [[nodiscard]] static Status make(ncclComm_t comm, int node_size, Nccl* out) {
    if (!out) return Status::kNullPointer;
    Nccl c(comm, node_size);
    if (c.status_ != Status::kSuccess) return c.status_;
    *out = c;
    return Status::kSuccess;
  }

  [[nodiscard]] Status status() const { return status_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Ranks per node of the group as given at construction (0 = unknown): schedule::Hierarchical.
  int node_size() const { return node_size_; }
  /// The CUDA device of the communicator (streams passed in must belong to it).
  int device() const { return device_; }
  /// The borrowed communicator. Dangling after abort(): NCCL freed it.
  ncclComm_t handle() const { return comm_; }

  /// kSuccess unless the communicator is unusable, was aborted, or NCCL reports an asynchronous
  /// error.
  [[nodiscard]] Status check() const {
    if (status_ != Status::kSuccess) return status_;
    if (side_->aborted.load(std::memory_order_acquire)) return Status::kCommError;  // comm_ is freed
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess) return Status::kCommError;
    // A non-blocking communicator still enqueueing earlier work is not an error.
    return async == ncclSuccess || async == ncclInProgress ? Status::kSuccess : Status::kCommError;
  }

  /// Sends `count` floats to SP rank `peer` (grouped on its own).
  [[nodiscard]] Status send(const float* buf, std::size_t count, int peer, cudaStream_t stream) {
    LASP_RETURN_IF_ERROR(check_peer(peer));
    return grouped([&] { return ncclSend(buf, count, ncclFloat, peer, comm_, stream); });
  }
  /// Receives `count` floats from SP rank `peer` (grouped on its own).
  [[nodiscard]] Status recv(float* buf, std::size_t count, int peer, cudaStream_t stream) {
    LASP_RETURN_IF_ERROR(check_peer(peer));
    return grouped([&] { return ncclRecv(buf, count, ncclFloat, peer, comm_, stream); });
  }
  /// Sends `count` floats to `dst` and receives `count` from `src` in one group (a ring hop:
  /// every rank may call it at once without deadlock). dst or src may be -1 to skip that half.
  [[nodiscard]] Status sendrecv(const float* sbuf, int dst, float* rbuf, int src, std::size_t count,
                                cudaStream_t stream) {
    if (dst != -1) LASP_RETURN_IF_ERROR(check_peer(dst));
    if (src != -1) LASP_RETURN_IF_ERROR(check_peer(src));
    if (dst == -1 && src == -1) return check();
    return grouped([&] {
      ncclResult_t r = ncclSuccess;
      if (dst >= 0) r = ncclSend(sbuf, count, ncclFloat, dst, comm_, stream);
      if (r == ncclSuccess && src >= 0) r = ncclRecv(rbuf, count, ncclFloat, src, comm_, stream);
      return r;
    });
  }
  /// recv[j*count .. (j+1)*count) = rank j's send[0 .. count). In place when
  /// send == recv + rank()*count.
  [[nodiscard]] Status all_gather(const float* send, float* recv, std::size_t count, cudaStream_t stream) {
    LASP_RETURN_IF_ERROR(check());
    return detail::nccl_status(
        detail::nccl_settle(comm_, ncclAllGather(send, recv, count, ncclFloat, comm_, stream)));
  }

  /// *side = the communicator's side stream, ordered after everything queued on `stream` so far.
  [[nodiscard]] Status fork(cudaStream_t stream, cudaStream_t* side) {
    LASP_RETURN_IF_ERROR(check());
    if (!side) return Status::kNullPointer;
    if (cudaEventRecord(side_->forked, stream) != cudaSuccess ||
        cudaStreamWaitEvent(side_->stream, side_->forked, 0) != cudaSuccess)
      return Status::kCudaError;
    *side = side_->stream;
    return Status::kSuccess;
  }
  /// `stream` waits for everything queued on the side stream so far.
  [[nodiscard]] Status join(cudaStream_t stream) {
    LASP_RETURN_IF_ERROR(check());
    if (cudaEventRecord(side_->done, side_->stream) != cudaSuccess ||
        cudaStreamWaitEvent(stream, side_->done, 0) != cudaSuccess)
      return Status::kCudaError;
    return Status::kSuccess;
  }
  /// The side stream (null for an unusable handle).
  cudaStream_t side_stream() const { return side_ ? side_->stream : nullptr; }

  /// Aborts the communicator, at the caller's request only: lasp itself never does. ncclCommAbort
  /// sets NCCL's abort flag, which the communicator's running kernels poll: they exit without
  /// completing their transfers (receive buffers hold garbage; lasp's kernels queued behind them
  /// still run, on that garbage, so the stream drains), and it frees the communicator. Afterwards:
  ///  - this handle and every copy of it are marked aborted: their operations and check() return
  ///    kCommError without touching the freed ncclComm_t (destroying them is fine);
  ///  - the caller must not use, destroy or abort the ncclComm_t again (NCCL freed it; handle()
  ///    dangles), nor any other Nccl handle made from it separately;
  ///  - the peers are not told: their own NCCL kernels wait for this rank until they abort too
  ///    (each rank's bounded wait times out), or see an asynchronous error on some transports;
  ///  - going on means a new communicator (ncclCommInitRank with a new unique id, among the
  ///    ranks still alive) and a new handle.
  /// kSuccess (also when already aborted), kCommError for an empty or unusable handle or if
  /// ncclCommAbort reported a failure (the handle is marked aborted all the same). Blocks as long
  /// as ncclCommAbort does: it synchronises NCCL's internal streams and frees NCCL's memory, which
  /// may wait for the device's other work; a kernel that is not NCCL's and never ends (a user's
  /// spin loop) can hold it.
  [[nodiscard]] Status abort() {
    if (status_ != Status::kSuccess) return status_;
    if (side_->aborted.exchange(true, std::memory_order_acq_rel)) return Status::kSuccess;
    return ncclCommAbort(comm_) == ncclSuccess ? Status::kSuccess : Status::kCommError;
  }
  /// Whether abort() was called on this handle or a copy of it.
  bool aborted() const { return side_ && side_->aborted.load(std::memory_order_acquire); }

 private:
  Status init(ncclComm_t comm) {
    if (!comm) return Status::kNullPointer;
    int rank = -1, size = 0, dev = -1;
    ncclResult_t async = ncclSuccess;
    if (ncclCommUserRank(comm, &rank) != ncclSuccess || ncclCommCount(comm, &size) != ncclSuccess ||
        ncclCommCuDevice(comm, &dev) != ncclSuccess || ncclCommGetAsyncError(comm, &async) != ncclSuccess)
      return Status::kCommError;
    if (size < 1 || rank < 0 || rank >= size || (async != ncclSuccess && async != ncclInProgress))
      return Status::kCommError;
    std::shared_ptr<detail::SideStream> side;
    LASP_RETURN_IF_ERROR(detail::SideStream::create(dev, &side));
    comm_ = comm;
    rank_ = rank;
    size_ = size;
    device_ = dev;
    side_ = std::move(side);
    return Status::kSuccess;
  }
  Status check_peer(int peer) const {
    LASP_RETURN_IF_ERROR(check());
    return peer < 0 || peer >= size_ || peer == rank_ ? Status::kCommError : Status::kSuccess;
  }
  /// Runs `issue` (one or more NCCL point-to-point calls) inside ncclGroupStart/End.
  template <class Issue>
  Status grouped(Issue&& issue) {
    if (ncclGroupStart() != ncclSuccess) return Status::kCommError;
    const ncclResult_t r = issue();
    const ncclResult_t e = ncclGroupEnd();  // always close the group, even after a failed call
    if (r != ncclSuccess && r != ncclInProgress) return Status::kCommError;
    return detail::nccl_status(detail::nccl_settle(comm_, e));
  }

  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 0, device_ = -1, node_size_ = 0;
  std::shared_ptr<detail::SideStream> side_;
  Status status_ = Status::kCommError;
};

/// Splits a world communicator into SP groups of `sp` contiguous ranks and DP groups of strided
/// ranks (math.md section 5; the rank arithmetic of comm/groups.hpp): with W = 8, sp = 4 the SP
/// communicators hold world ranks (0,1,2,3), (4,5,6,7) and the DP ones (0,4), (1,5), (2,6), (3,7);
/// a rank's position in each is its sp_rank / dp_rank.
///
/// Collective over `world` (ncclCommSplit): every world rank calls it, in the same order
/// relative to its other NCCL calls, with the same `sp` (one thread per GPU, or one thread
/// inside ncclGroupStart/End). The new communicators are OWNED BY THE CALLER: release them
/// with ncclCommDestroy (lasp's Nccl never does). They inherit `world`'s configuration.
///
///   ncclComm_t sp_comm, dp_comm;
///   if (lasp::comm::split_sp_dp(world, 4, &sp_comm, &dp_comm) != lasp::Status::kSuccess) ...;
///   lasp::comm::Nccl comm(sp_comm);   // the SP group for lasp::forward/backward
///   // SP groups spanning hosts (schedule::Hierarchical): say where the nodes are, e.g.
///   //   lasp::comm::GroupRanks g; GroupRanks::make(w, W, 4, ranks_per_host, &g);
///   //   lasp::comm::Nccl comm(sp_comm, g.sp_node_size);
///   ...                               // gradients of parameters: reduce over `world`
///   ncclCommDestroy(dp_comm); ncclCommDestroy(sp_comm);
///
/// Returns kInvalidShape if the world size is not a multiple of sp, kNullPointer for null
/// arguments, kCommError if NCCL fails (then *sp_comm and *dp_comm are null; a communicator
/// created before the failure is aborted: local, never blocks on peers).
[[nodiscard]] inline Status split_sp_dp(ncclComm_t world, int sp, ncclComm_t* sp_comm, ncclComm_t* dp_comm) {
  if (!world || !sp_comm || !dp_comm) return Status::kNullPointer;
  *sp_comm = nullptr;
  *dp_comm = nullptr;
  int w = -1, W = 0;
  if (ncclCommUserRank(world, &w) != ncclSuccess || ncclCommCount(world, &W) != ncclSuccess)
    return Status::kCommError;
  LASP_RETURN_IF_ERROR(check_groups(w, W, sp));
  // A non-blocking world gives non-blocking children that report ncclInProgress: poll the child.
  auto split = [&](int color, int key, ncclComm_t* out) {
    const ncclResult_t r = ncclCommSplit(world, color, key, out, nullptr);
    return r == ncclInProgress && *out ? detail::nccl_settle(*out, r) : r;
  };
  ncclComm_t spc = nullptr, dpc = nullptr;
  if (split(sp_color(w, sp), sp_rank(w, sp), &spc) != ncclSuccess) {
    if (spc) ncclCommAbort(spc);
    return Status::kCommError;
  }
  if (split(dp_color(w, sp), dp_rank(w, sp), &dpc) != ncclSuccess) {
    if (dpc) ncclCommAbort(dpc);
    ncclCommAbort(spc);
    return Status::kCommError;
  }
  *sp_comm = spc;
  *dp_comm = dpc;
  return Status::kSuccess;
}

}  // namespace comm
LASP_NAMESPACE_END

// comm::wait over a communicator (bounded waits, optional abort). Included here so that every
// user of comm::Nccl has it; it needs the class above.
#include "nccl_wait.cuh"
