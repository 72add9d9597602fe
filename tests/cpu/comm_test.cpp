// The host communicators: comm::HostGroup (ranks as threads) and comm::HostSingle.
#include "support.hpp"

#include <atomic>
#include <numeric>
#include <thread>

using namespace lasp_test;
using namespace lasp;

namespace {
template <class F>
void on_threads(int R, F&& f) {
  std::vector<std::thread> th;
  for (int r = 0; r < R; ++r) th.emplace_back([&f, r] { f(r); });
  for (auto& t : th) t.join();
}
}  // namespace

TEST_CASE("HostGroup: send/recv deliver each message once, in order, between any pair") {
  constexpr int R = 4, kMsgs = 5;
  comm::HostGroup group(R);
  std::atomic<int> errors{0}, mismatches{0};
  on_threads(R, [&](int r) {
    auto c = group.comm(r);
    // Every rank sends kMsgs messages to every other rank, then receives them.
    for (int m = 0; m < kMsgs; ++m)
      for (int peer = 0; peer < R; ++peer) {
        if (peer == r) continue;
        std::vector<float> msg(std::size_t(3 + m), float(100 * r + 10 * peer + m));
        if (c.send(msg.data(), msg.size(), peer, {}) != Status::kSuccess) ++errors;
      }
    for (int peer = 0; peer < R; ++peer) {
      if (peer == r) continue;
      for (int m = 0; m < kMsgs; ++m) {
        std::vector<float> got(std::size_t(3 + m), -1.f);
        if (c.recv(got.data(), got.size(), peer, {}) != Status::kSuccess) ++errors;
        for (float x : got)
          if (x != float(100 * peer + 10 * r + m)) ++mismatches;
      }
    }
  });
  CHECK(errors == 0);
  CHECK(mismatches == 0);
}

TEST_CASE("HostGroup: recv blocks until the matching send arrives") {
  comm::HostGroup group(2);
  std::atomic<bool> sent{false};
  float got = 0;
  Status st = Status::kInternalError;
  on_threads(2, [&](int r) {
    auto c = group.comm(r);
    if (r == 1) {
      st = c.recv(&got, 1, 0, {});
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const float x = 42.f;
      sent = true;
      (void)c.send(&x, 1, 1, {});
    }
  });
  CHECK(sent);
  CHECK(st == Status::kSuccess);
  CHECK(got == 42.f);
}

TEST_CASE("HostGroup: all_gather gives every rank every rank's data, repeatedly") {
  constexpr int R = 5, kRounds = 20;
  constexpr std::size_t n = 7;
  comm::HostGroup group(R);
  std::atomic<int> errors{0}, mismatches{0};
  on_threads(R, [&](int r) {
    auto c = group.comm(r);
    for (int round = 0; round < kRounds; ++round) {
      std::vector<float> mine(n), all(n * R, -1.f);
      for (std::size_t i = 0; i < n; ++i) mine[i] = float(1000 * round + 10 * r) + float(i);
      if (c.all_gather(mine.data(), all.data(), n, {}) != Status::kSuccess) ++errors;
      for (int j = 0; j < R; ++j)
        for (std::size_t i = 0; i < n; ++i)
          if (all[std::size_t(j) * n + i] != float(1000 * round + 10 * j) + float(i)) ++mismatches;
    }
  });
  CHECK(errors == 0);
  CHECK(mismatches == 0);
}

TEST_CASE("HostGroup: a recv of another count than was sent -> kCommError") {
  comm::HostGroup group(2);
  Status st_recv = Status::kSuccess, st_next = Status::kInternalError;
  std::vector<float> got(5, -1.f);
  float next = 0;
  on_threads(2, [&](int r) {
    auto c = group.comm(r);
    if (r == 0) {
      const std::vector<float> msg(4, 1.f);
      (void)c.send(msg.data(), msg.size(), 1, {});
      const float x = 9.f;
      (void)c.send(&x, 1, 1, {});
    } else {
      st_recv = c.recv(got.data(), got.size(), 0, {});
      st_next = c.recv(&next, 1, 0, {});  // the channel keeps working
    }
  });
  CHECK(st_recv == Status::kCommError);
  CHECK(std::all_of(got.begin(), got.end(), [](float x) { return x == -1.f; }));  // nothing written
  CHECK(st_next == Status::kSuccess);
  CHECK(next == 9.f);
}

TEST_CASE("HostGroup: all_gather with mismatched counts -> kCommError on every rank") {
  constexpr int R = 3;
  comm::HostGroup group(R);
  std::vector<Status> st(R, Status::kInternalError);
  on_threads(R, [&](int r) {
    auto c = group.comm(r);
    const std::size_t n = r == 2 ? 5 : 4;
    std::vector<float> mine(n, float(r)), all(5 * R, 0.f);
    st[std::size_t(r)] = c.all_gather(mine.data(), all.data(), n, {});
  });
  for (int r = 0; r < R; ++r) CHECK(st[std::size_t(r)] == Status::kCommError);
}

TEST_CASE("HostGroup: sends to itself or to a peer outside the group -> kCommError") {
  comm::HostGroup group(3);
  auto c = group.comm(1);
  float x = 1.f;
  CHECK(group.size() == 3);
  CHECK(c.rank() == 1);
  CHECK(c.size() == 3);
  CHECK(c.send(&x, 1, 1, {}) == Status::kCommError);
  CHECK(c.send(&x, 1, 3, {}) == Status::kCommError);
  CHECK(c.send(&x, 1, -1, {}) == Status::kCommError);
  CHECK(c.recv(&x, 1, 1, {}) == Status::kCommError);
  CHECK(c.recv(&x, 1, 7, {}) == Status::kCommError);
}

TEST_CASE("HostGroup with a timeout: a recv or all_gather nobody answers -> kCommError, and the group is broken") {
  {
    comm::HostGroup group(2, std::chrono::milliseconds(50));
    auto c0 = group.comm(0);
    float x = 0;
    CHECK(c0.recv(&x, 1, 1, {}) == Status::kCommError);  // rank 1 never sends
    CHECK(group.broken());
    auto c1 = group.comm(1);
    CHECK(c1.send(&x, 1, 0, {}) == Status::kCommError);  // broken: everything fails at once
    CHECK(c1.all_gather(&x, &x, 1, {}) == Status::kCommError);
  }
  {
    // Ranks 0 and 1 gather, rank 2 never comes: both get kCommError instead of waiting forever.
    comm::HostGroup group(3, std::chrono::milliseconds(50));
    std::vector<Status> st(2, Status::kInternalError);
    on_threads(2, [&](int r) {
      float mine = float(r), all[3];
      st[std::size_t(r)] = group.comm(r).all_gather(&mine, all, 1, {});
    });
    CHECK(st[0] == Status::kCommError);
    CHECK(st[1] == Status::kCommError);
    CHECK(group.broken());
  }
  {
    // Without a timeout failure, a group with one behaves as before.
    comm::HostGroup group(2, std::chrono::seconds(10));
    float got = 0;
    on_threads(2, [&](int r) {
      auto c = group.comm(r);
      const float x = 7.f;
      if (r == 0) (void)c.send(&x, 1, 1, {});
      else (void)c.recv(&got, 1, 0, {});
    });
    CHECK(got == 7.f);
    CHECK(!group.broken());
  }
}

TEST_CASE("HostSingle: rank 0 of 1, all_gather copies, point-to-point is an error") {
  comm::HostSingle c;
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  std::vector<float> a{1.f, 2.f, 3.f}, b(3, 0.f);
  CHECK(c.all_gather(a.data(), b.data(), 3, {}) == Status::kSuccess);
  CHECK(b == a);
  CHECK(c.all_gather(a.data(), a.data(), 3, {}) == Status::kSuccess);  // in place
  CHECK(a == std::vector<float>{1.f, 2.f, 3.f});
  CHECK(c.send(a.data(), 3, 0, {}) == Status::kCommError);
  CHECK(c.recv(b.data(), 3, 0, {}) == Status::kCommError);
}
