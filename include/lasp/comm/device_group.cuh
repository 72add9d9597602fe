#pragma once
// Device communicator for R ranks that are threads of ONE process (comm::DeviceGroup): device
// buffers, CUDA streams, no NCCL. It is HostGroup (comm/host.hpp) for the CUDA backend.
//
// What it is for: running a sequence-parallel group of any size on one GPU (every rank a host
// thread with its own stream; ranks may also sit on different devices of the process), so the
// CUDA backend's multi-rank paths (every schedule, plans, uneven N, packed documents across
// ranks) run real kernels against the reference where no multi-GPU machine is at hand, and so
// that a user can try sequence parallelism on a workstation. It is not fast and not meant to
// be: for training, use comm::Nccl.
//
//   lasp::comm::DeviceGroup g(R, std::chrono::seconds(60));  // shared; optional timeout
//   // thread r (cudaSetDevice(dev_of(r)), its own stream st):
//   auto comm = g.comm(r);
//   lasp::forward<Policy>(fa, comm, ws, st);
//
// Semantics (the concept's, stream-ordered like NCCL's):
// - send(buf, n, peer, st): enqueues on st a copy of buf into a staging buffer (stream-ordered
//   allocation on st's device), records an event after it and posts {staging, n, event} to the
//   (rank -> peer) mailbox. It never blocks the host; buf may be reused by later work on st.
// - recv(buf, n, peer, st): BLOCKS THE HOST until the peer's matching send has been posted
//   (not executed), then makes st wait for the sender's event, copies staging -> buf on st and
//   frees the staging buffer on st. Messages of one (src, dst) pair match in order; a count or
//   kind mismatch (a recv meeting an all-gather's message) returns kCommError.
// - all_gather(s, r, n, st): a send of s to every other rank, a copy of s into its own slot,
//   then a recv from every other rank (messages tagged as the gather's, so a rank in an
//   all-gather and a peer in a point-to-point exchange fail instead of pairing up).
// - sendrecv: send then recv (send does not block, so a ring of shifts cannot deadlock).
// Because recv blocks the host until the peer has posted, a rank's host thread runs at most as
// far ahead as its inputs allow; lasp's schedules post every send before the recv that could
// depend on it, as they must for NCCL too.
//
// Timeout and breaking: with `timeout` > 0, a recv that waits longer BREAKS the group (as in
// HostGroup): every pending and later operation of every rank returns kCommError. abort()
// breaks it at once (a test whose rank failed early calls it so that the peers stop waiting).
// Streams never hang on a broken group: a stream only ever waits for events already recorded.
//
// Staging memory comes from the stream-ordered allocator of the sender's device
// (cudaMallocAsync), freed on the receiver's stream after its copy (cudaFreeAsync): one
// allocation per message, which is fine for states of a few MiB and the point of this class.
#include "../config.hpp"
#include <cuda_runtime.h>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <utility>
#include "concept.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

class DeviceGroup {
  /// What a message is part of: a point-to-point send or an all-gather.
  enum class Kind : int { kP2P, kGather };
  struct Msg {
    float* data;          // staging buffer (sender's device), freed by the receiver
    std::size_t n;        // floats
    Kind kind;
    cudaEvent_t ready;    // recorded on the sender's stream after the copy into data
  };

 public:
  explicit DeviceGroup(int size, std::chrono::milliseconds timeout = std::chrono::milliseconds(0))
      : size_(size), timeout_(timeout) {}
  DeviceGroup(const DeviceGroup&) = delete;
  DeviceGroup& operator=(const DeviceGroup&) = delete;
  /// Messages never received (a broken group, or a test that stopped early) are released here.
  ~DeviceGroup() {
    for (auto& kv : box_)
      for (Msg& m : kv.second) {
        cudaEventSynchronize(m.ready);
        cudaEventDestroy(m.ready);
        cudaFree(m.data);
      }
  }
  int size() const { return size_; }
  /// Emulated nodes (schedule::Hierarchical): ranks [n g, (n+1) g) form node n; 0 = unknown.
  /// Set it before handing out communicators.
  void set_node_size(int g) { node_size_ = g; }
  int node_size() const { return node_size_; }
  /// Breaks the group: every blocked and later operation of every rank returns kCommError.
  void abort() {
    std::lock_guard<std::mutex> lk(mu_);
    broken_ = true;
    cv_.notify_all();
  }
  bool broken() const {
    std::lock_guard<std::mutex> lk(mu_);
    return broken_;
  }

  /// The communicator of rank r (a cheap handle; the group must outlive it).
  class Comm {
   public:
    using stream_type = cudaStream_t;
    static constexpr bool kDeviceMemory = true;
    Comm(DeviceGroup* g, int r) : g_(g), r_(r) {}
    int rank() const { return r_; }
    int size() const { return g_->size_; }
    int node_size() const { return g_->node_size_; }
    Status send(const float* buf, std::size_t n, int peer, cudaStream_t st) {
      if (peer < 0 || peer >= size() || peer == r_) return Status::kCommError;
      return g_->post(r_, peer, buf, n, Kind::kP2P, st);
    }
    Status recv(float* buf, std::size_t n, int peer, cudaStream_t st) {
      if (peer < 0 || peer >= size() || peer == r_) return Status::kCommError;
      return g_->take(peer, r_, buf, n, Kind::kP2P, st);
    }
    Status sendrecv(const float* s, int dst, float* r, int src, std::size_t n, cudaStream_t st) {
      if (dst >= 0) LASP_RETURN_IF_ERROR(send(s, n, dst, st));
      if (src >= 0) LASP_RETURN_IF_ERROR(recv(r, n, src, st));
      return Status::kSuccess;
    }
    Status all_gather(const float* s, float* r, std::size_t n, cudaStream_t st) {
      const int R = size();
      for (int j = 0; j < R; ++j)
        if (j != r_) LASP_RETURN_IF_ERROR(g_->post(r_, j, s, n, Kind::kGather, st));
      float* mine = r + std::size_t(r_) * n;
      if (mine != s && n > 0 &&
          cudaMemcpyAsync(mine, s, n * sizeof(float), cudaMemcpyDefault, st) != cudaSuccess)
        return Status::kCudaError;
      for (int j = 0; j < R; ++j)
        if (j != r_) LASP_RETURN_IF_ERROR(g_->take(j, r_, r + std::size_t(j) * n, n, Kind::kGather, st));
      return Status::kSuccess;
    }

   private:
    DeviceGroup* g_;
    int r_;
  };

  Comm comm(int r) { return Comm(this, r); }

 private:
  Status post(int src, int dst, const float* buf, std::size_t n, Kind kind, cudaStream_t st) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (broken_) return Status::kCommError;
    }
    Msg m{nullptr, n, kind, nullptr};
    if (cudaEventCreateWithFlags(&m.ready, cudaEventDisableTiming) != cudaSuccess) return Status::kCudaError;
    const std::size_t bytes = (n > 0 ? n : 1) * sizeof(float);
    if (cudaMallocAsync(reinterpret_cast<void**>(&m.data), bytes, st) != cudaSuccess ||
        (n > 0 && cudaMemcpyAsync(m.data, buf, n * sizeof(float), cudaMemcpyDefault, st) != cudaSuccess) ||
        cudaEventRecord(m.ready, st) != cudaSuccess) {
      if (m.data) cudaFreeAsync(m.data, st);
      cudaEventDestroy(m.ready);
      return Status::kCudaError;
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (broken_) {  // broke meanwhile: nobody will take it
      cudaFreeAsync(m.data, st);
      cudaEventDestroy(m.ready);
      return Status::kCommError;
    }
    box_[{src, dst}].push_back(m);
    cv_.notify_all();
    return Status::kSuccess;
  }

  Status take(int src, int dst, float* buf, std::size_t n, Kind kind, cudaStream_t st) {
    Msg m;
    {
      std::unique_lock<std::mutex> lk(mu_);
      auto& q = box_[{src, dst}];
      auto done = [&] { return broken_ || !q.empty(); };
      if (timeout_.count() <= 0) {
        cv_.wait(lk, done);
      } else if (!cv_.wait_for(lk, timeout_, done)) {
        broken_ = true;
        cv_.notify_all();
      }
      if (broken_) return Status::kCommError;
      m = q.front();
      q.pop_front();
    }
    Status s = Status::kSuccess;
    if (m.n != n || m.kind != kind) s = Status::kCommError;  // mismatched operations: data not copied
    if (cudaStreamWaitEvent(st, m.ready, 0) != cudaSuccess) s = Status::kCudaError;
    if (s == Status::kSuccess && n > 0 &&
        cudaMemcpyAsync(buf, m.data, n * sizeof(float), cudaMemcpyDefault, st) != cudaSuccess)
      s = Status::kCudaError;
    cudaFreeAsync(m.data, st);
    cudaEventDestroy(m.ready);  // released once the recorded work completes
    if (s != Status::kSuccess) abort();  // the group is out of step: nobody may go on
    return s;
  }

  int size_;
  int node_size_ = 0;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<int, int>, std::deque<Msg>> box_;
  bool broken_ = false;
};

}  // namespace comm
LASP_NAMESPACE_END
