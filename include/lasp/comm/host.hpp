#pragma once
// Host communicators: SP size 1 (HostSingle) and R ranks as threads of one process (HostGroup).
// Buffers are host memory; every call completes before it returns (recv blocks).
#include "../config.hpp"
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>
#include "concept.hpp"

LASP_NAMESPACE_BEGIN
namespace comm {

/// One rank, nothing to communicate.
struct HostSingle {
  using stream_type = host_stream;
  static constexpr bool kDeviceMemory = false;
  int rank() const { return 0; }
  int size() const { return 1; }
  Status send(const float*, std::size_t, int, stream_type) { return Status::kCommError; }
  Status recv(float*, std::size_t, int, stream_type) { return Status::kCommError; }
  Status all_gather(const float* s, float* r, std::size_t n, stream_type) {
    if (s != r) std::memmove(r, s, n * sizeof(float));
    return Status::kSuccess;
  }
};

/// Shared state of R ranks that run as threads: one mailbox per (src, dst) pair and a
/// generation-counted barrier for the all-gather. Create one, then hand comm(r) to thread r.
///
/// Optional timeout: with `timeout` > 0, a recv or all_gather that waits longer than that for
/// its peers returns kCommError and BREAKS the group: every pending and later operation of every
/// rank then returns kCommError at once (a broken group stays broken: make a new one). So a rank
/// that never arrives (a deadlock, a peer that returned early) turns into kCommError on every
/// rank instead of a hang. 0 (the default) waits forever.
class HostGroup {
 public:
  explicit HostGroup(int size, std::chrono::milliseconds timeout = std::chrono::milliseconds(0))
      : size_(size), timeout_(timeout), gather_(std::size_t(size > 0 ? size : 0)) {}
  int size() const { return size_; }
  /// Emulated nodes (schedule::Hierarchical): ranks [n g, (n+1) g) form node n. 0 (the default)
  /// = unknown. Set it before handing out communicators; every rank sees the same value.
  void set_node_size(int g) { node_size_ = g; }
  int node_size() const { return node_size_; }
  /// True once an operation timed out (see the class comment).
  bool broken() const {
    std::lock_guard<std::mutex> lk(mu_);
    return broken_;
  }

  /// The communicator of rank r (a cheap handle; the group must outlive it).
  class Comm {
   public:
    using stream_type = host_stream;
    static constexpr bool kDeviceMemory = false;
    Comm(HostGroup* g, int r) : g_(g), r_(r) {}
    int rank() const { return r_; }
    int size() const { return g_->size_; }
    /// The group's emulated node size (HostGroup::set_node_size; 0 = unknown).
    int node_size() const { return g_->node_size_; }
    Status send(const float* buf, std::size_t n, int peer, stream_type) {
      if (peer < 0 || peer >= size() || peer == r_) return Status::kCommError;
      std::lock_guard<std::mutex> lk(g_->mu_);
      if (g_->broken_) return Status::kCommError;
      g_->box_[{r_, peer}].emplace_back(buf, buf + n);
      g_->cv_.notify_all();
      return Status::kSuccess;
    }
    Status recv(float* buf, std::size_t n, int peer, stream_type) {
      if (peer < 0 || peer >= size() || peer == r_) return Status::kCommError;
      std::unique_lock<std::mutex> lk(g_->mu_);
      auto& q = g_->box_[{peer, r_}];
      if (!g_->wait(lk, [&] { return !q.empty(); })) return Status::kCommError;
      std::vector<float> msg = std::move(q.front());
      q.pop_front();
      lk.unlock();
      if (msg.size() != n) return Status::kCommError;  // mismatched send/recv counts
      std::memcpy(buf, msg.data(), n * sizeof(float));
      return Status::kSuccess;
    }
    Status all_gather(const float* s, float* r, std::size_t n, stream_type) {
      std::unique_lock<std::mutex> lk(g_->mu_);
      // Wait for the previous gather to be fully consumed before reusing the slots.
      if (!g_->wait(lk, [&] { return g_->readers_ == 0; })) return Status::kCommError;
      g_->gather_[std::size_t(r_)].assign(s, s + n);
      const unsigned long gen = g_->gen_;
      if (++g_->arrived_ == g_->size_) {
        g_->arrived_ = 0;
        g_->readers_ = g_->size_;
        ++g_->gen_;
        g_->cv_.notify_all();
      } else if (!g_->wait(lk, [&] { return g_->gen_ != gen; })) {
        return Status::kCommError;
      }
      Status st = Status::kSuccess;
      for (int j = 0; j < g_->size_; ++j) {
        if (g_->gather_[std::size_t(j)].size() != n) { st = Status::kCommError; continue; }
        std::memcpy(r + std::size_t(j) * n, g_->gather_[std::size_t(j)].data(), n * sizeof(float));
      }
      if (--g_->readers_ == 0) g_->cv_.notify_all();
      return st;
    }

   private:
    HostGroup* g_;
    int r_;
  };

  Comm comm(int r) { return Comm(this, r); }

 private:
  /// Waits (lock held) until ready() or the group breaks; false if broken or timed out (which
  /// breaks it).
  template <class Ready>
  bool wait(std::unique_lock<std::mutex>& lk, Ready ready) {
    auto done = [&] { return broken_ || ready(); };
    if (timeout_.count() <= 0) {
      cv_.wait(lk, done);
    } else if (!cv_.wait_for(lk, timeout_, done)) {
      broken_ = true;
      cv_.notify_all();
    }
    return !broken_;
  }

  int size_;
  int node_size_ = 0;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<int, int>, std::deque<std::vector<float>>> box_;
  std::vector<std::vector<float>> gather_;
  int arrived_ = 0, readers_ = 0;
  unsigned long gen_ = 0;
  bool broken_ = false;
};

}  // namespace comm
LASP_NAMESPACE_END
