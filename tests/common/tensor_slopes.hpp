#pragma once
// A decay scheme written outside lasp (the newcomer test of lasp's decay interface, see
// include/lasp/decay/none.hpp): per-head constant slopes read from a tensor in the backend's
// memory (host memory for the host backend, device memory for the CUDA backend), so the host
// cannot validate or copy them: kernels read them on the device. Nothing in lasp names it;
// defining this struct is all it takes to run it on every backend and schedule.
#include <cmath>
#include <lasp/lasp.hpp>

namespace lasp_test {

struct TensorSlopes {
  static constexpr const char* kName = "tensor-slopes";
  static constexpr bool kPerToken = false;
  static constexpr bool kHasGradient = false;
  struct Params {
    const float* slopes = nullptr;  // (H), in the memory of the backend's tensors, s_h >= 0
  };
  struct DeviceParams {
    const float* slopes;
  };

  static lasp::Status check(const Params& p, const lasp::Shape&) {
    return p.slopes ? lasp::Status::kSuccess : lasp::Status::kNullPointer;
  }
  static lasp::Status check_values(const Params& p, const lasp::Shape& s) {  // host memory only
    for (lasp::index_t h = 0; h < s.H; ++h)
      if (!(p.slopes[h] >= 0.f) || !std::isfinite(p.slopes[h])) return lasp::Status::kInvalidDecay;
    return lasp::Status::kSuccess;
  }
  static lasp::ConstGateTensor input_gates(const Params&) { return {}; }
  static const void* host_memory(const Params&) { return nullptr; }
  static bool single_hop(const Params&, const lasp::Shape&) { return false; }
  static DeviceParams device_params(const Params& p, const lasp::Shape&, lasp::GateTensor = {}) { return {p.slopes}; }
  LASP_HD static float log_decay(const Params& p, lasp::index_t, lasp::index_t, lasp::index_t h) { return -p.slopes[h]; }

#if defined(__CUDACC__)
  template <int C>
  struct Chunk {
    int len = 0;
    __device__ void load(const DeviceParams&, lasp::index_t, lasp::index_t, lasp::index_t, int len_, int,
                         unsigned* = nullptr) {
      len = len_;
    }
    __device__ void finish(float* sg, const DeviceParams& d, lasp::index_t h, int lane) const {
      const float s = d.slopes[h];
      for (int i = lane; i < C; i += 32) sg[i] = -s * float(min(i + 1, len));
    }
  };
#endif
};

}  // namespace lasp_test
