// Dispatch on (dtype, decay) to the per-pair TUs; statuses; the deferred verdict.
#include <cuda_runtime.h>
#include <lasp/lasp.cuh>
#include "comm_registry.cuh"
#include "iface.h"

namespace lasp_torch {

#define LASP_TORCH_DECLARE(NAME)                                                  \
  int NAME##_forward(const FwdCall&, bool*);                                      \
  int NAME##_backward(const BwdCall&);                                            \
  int NAME##_sizes(const Problem&, int, std::size_t*, std::size_t*);              \
  void NAME##_forget(int);
#define LASP_TORCH_PAIRS(X) \
  X(bf16_none) X(bf16_perhead) X(bf16_gate) X(f16_none) X(f16_perhead) X(f16_gate) X(f32_none) X(f32_perhead) X(f32_gate)
LASP_TORCH_PAIRS(LASP_TORCH_DECLARE)

namespace {
struct Entry {
  int (*fwd)(const FwdCall&, bool*);
  int (*bwd)(const BwdCall&);
  int (*sizes)(const Problem&, int, std::size_t*, std::size_t*);
  void (*forget)(int);
};
#define LASP_TORCH_ENTRY(NAME) Entry{NAME##_forward, NAME##_backward, NAME##_sizes, NAME##_forget},
const Entry kTable[9] = {LASP_TORCH_PAIRS(LASP_TORCH_ENTRY)};
const Entry* entry(const Problem& p) {
  const int t = int(p.dtype), d = int(p.decay);
  if (t < 0 || t > 2 || d < 0 || d > 2) return nullptr;
  return &kTable[t * 3 + d];
}
}  // namespace

const char* status_sentence(int s) {
  if (s == kNeedPlanOutsideCapture)
    return "a new lasp plan cannot be made during CUDA graph capture (make_plan synchronises): run the op once "
           "with this shape before capturing";
  return lasp::to_string(static_cast<lasp::Status>(s));
}

const char* status_name(int s) {
  using S = lasp::Status;
  switch (static_cast<S>(s)) {
    case S::kSuccess: return "kSuccess";
    case S::kNullPointer: return "kNullPointer";
    case S::kMisaligned: return "kMisaligned";
    case S::kOverlap: return "kOverlap";
    case S::kInvalidShape: return "kInvalidShape";
    case S::kUnsupportedHeadDim: return "kUnsupportedHeadDim";
    case S::kUnsupportedTile: return "kUnsupportedTile";
    case S::kUnsupportedDevice: return "kUnsupportedDevice";
    case S::kWrongMemorySpace: return "kWrongMemorySpace";
    case S::kInvalidDecay: return "kInvalidDecay";
    case S::kWorkspaceTooSmall: return "kWorkspaceTooSmall";
    case S::kSpSizeMismatch: return "kSpSizeMismatch";
    case S::kInvalidRank: return "kInvalidRank";
    case S::kPeerMismatch: return "kPeerMismatch";
    case S::kNotForwarded: return "kNotForwarded";
    case S::kCudaError: return "kCudaError";
    case S::kCommError: return "kCommError";
    case S::kPlanMismatch: return "kPlanMismatch";
    case S::kInvalidOffsets: return "kInvalidOffsets";
    case S::kUnsupportedFeature: return "kUnsupportedFeature";
    case S::kInternalError: return "kInternalError";
    case S::kTimeout: return "kTimeout";
    default: return s == kNeedPlanOutsideCapture ? "kNeedPlanOutsideCapture" : "unknown";
  }
}

int workspace_sizes(const Problem& p, int R, std::size_t* reserve, std::size_t* scratch) {
  const Entry* e = entry(p);
  return e ? e->sizes(p, R, reserve, scratch) : int(lasp::Status::kInternalError);
}
int forward(const FwdCall& c, bool* made) {
  const Entry* e = entry(c.p);
  return e ? e->fwd(c, made) : int(lasp::Status::kInternalError);
}
int backward(const BwdCall& c) {
  const Entry* e = entry(c.p);
  return e ? e->bwd(c) : int(lasp::Status::kInternalError);
}
void forget_plans(int comm_id) {
  for (const Entry& e : kTable) e.forget(comm_id);
}
int deferred_status(void* reserve, std::size_t bytes, void* stream) {
  return int(lasp::cuda::deferred_status(lasp::Workspace{reserve, bytes}, static_cast<cudaStream_t>(stream)));
}

}  // namespace lasp_torch
