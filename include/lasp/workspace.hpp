#pragma once
// The memory a caller lends to forward/backward, and the carver that lays regions out in it.
//
// A layer's workspace has two parts (cuDNN's reserve/workspace split):
//   reserve  written by forward and read by backward of the same layer: keep it per layer,
//            unchanged from forward to backward (small: states and summaries);
//   scratch  used only during a call: callers may share one scratch region across layers and
//            reuse it between calls (on the same stream, or ordered by the caller).
// workspace_sizes() gives both; workspace_size() gives the bytes of one buffer holding the
// reserve followed by the scratch (the convenience form: Workspace{ptr, bytes}).
#include <cstddef>
#include <cstdint>
#include "config.hpp"

LASP_NAMESPACE_BEGIN

/// User memory (device memory for the CUDA backend). With `scratch` null, `ptr` holds the
/// reserve followed by the scratch (sized by workspace_size); otherwise `ptr` is the reserve
/// alone (WorkspaceSizes::reserve bytes) and `scratch` the scratch (WorkspaceSizes::scratch).
struct Workspace {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  void* scratch = nullptr;
  std::size_t scratch_bytes = 0;
};

inline constexpr std::size_t kRegionAlign = 256;
constexpr std::size_t align_up(std::size_t x, std::size_t a = kRegionAlign) { return (x + a - 1) / a * a; }

/// Bytes of the two parts of a workspace.
struct WorkspaceSizes {
  std::size_t reserve = 0, scratch = 0;
  /// One buffer holding both: the reserve, then the scratch at the next 256-byte boundary.
  constexpr std::size_t single() const { return align_up(reserve) + scratch; }
};

/// Lays out regions one after another from `base`, each 256-byte aligned. With a null base it
/// only counts (every region it hands out is null), so the same code sizes and carves.
class Carver {
 public:
  explicit Carver(void* base = nullptr) : base_(static_cast<char*>(base)) {}
  template <class U>
  U* take(std::size_t count) {
    U* p = base_ ? reinterpret_cast<U*>(base_ + off_) : nullptr;
    off_ += align_up(count * sizeof(U));
    return p;
  }
  std::size_t bytes() const { return off_; }

 private:
  char* base_;
  std::size_t off_ = 0;
};

LASP_NAMESPACE_END
