#pragma once
// Status codes returned by every lasp entry point. The library never throws, exits or prints.
// New statuses are appended, so existing codes keep their values (kTimeout, 21, came after
// kInternalError, 20).
#include "config.hpp"

LASP_NAMESPACE_BEGIN

enum class Status : int {
  kSuccess = 0,
  kNullPointer,            // a required pointer is null
  kMisaligned,             // a pointer or stride breaks the 16-byte alignment rule
  kOverlap,                // an output buffer overlaps an input or another output
  kInvalidShape,           // B, N, H < 1, or a stride that makes rows alias
  kUnsupportedHeadDim,     // D or E not supported by this backend
  kUnsupportedTile,        // tile policy (chunk, warps) not built for this backend
  kUnsupportedDevice,      // the device cannot run this (compute capability, shared memory per block)
  kWrongMemorySpace,       // a pointer is not in the memory the backend needs (device memory for
                           // the CUDA backend's tensors, host memory for per-head slopes)
  kInvalidDecay,           // a slope < 0 (or not finite), a log-gate > 0 (or not finite)
  kWorkspaceTooSmall,      // workspace bytes below workspace_size()
  kSpSizeMismatch,         // args.shape.R differs from the communicator's size
  kInvalidRank,            // communicator rank outside [0, size)
  kPeerMismatch,           // SP ranks disagree on shapes, dtype or policies (checking mode)
  kNotForwarded,           // backward called on a workspace that holds no forward of this problem
  kCudaError,              // a CUDA runtime call or kernel launch failed
  kCommError,              // the communicator reported an error (e.g. ncclCommGetAsyncError)
  kPlanMismatch,           // the call does not match its Plan (shape, communicator, or slopes that no
                           // longer allow the plan's single hop)
  kInvalidOffsets,         // packed documents: cu_seqlens not 0 = o_0 <= ... <= o_docs = total tokens,
                           // an index width other than 32/64, docs < 1, or a state index out of range
  kUnsupportedFeature,     // this backend (or this combination of arguments) does not support a
                           // requested feature yet: packed documents or the zigzag layout on the
                           // CUDA backend; whole-sequence states together with packed documents
  kInternalError,
  kTimeout,                // comm::wait: the deadline passed before the stream's work finished; nothing
                           // was aborted (the work may still finish, the communicator is untouched)
};

[[nodiscard]] constexpr const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kNullPointer: return "a required pointer is null";
    case Status::kMisaligned: return "a pointer or stride is not 16-byte aligned";
    case Status::kOverlap: return "an output buffer overlaps another buffer";
    case Status::kInvalidShape: return "invalid shape or strides";
    case Status::kUnsupportedHeadDim: return "head dimension D or E not supported by this backend";
    case Status::kUnsupportedTile: return "tile policy (chunk length, warps) not built for this backend";
    case Status::kUnsupportedDevice: return "the device cannot run this (compute capability or shared memory per block)";
    case Status::kWrongMemorySpace: return "a pointer is in the wrong memory space (device tensors, host slopes)";
    case Status::kInvalidDecay: return "invalid decay: slope < 0, log-gate > 0, or not finite";
    case Status::kWorkspaceTooSmall: return "workspace smaller than workspace_size()";
    case Status::kSpSizeMismatch: return "args.shape.R differs from the communicator size";
    case Status::kInvalidRank: return "communicator rank out of range";
    case Status::kPeerMismatch: return "sequence-parallel ranks disagree on the problem";
    case Status::kNotForwarded: return "backward needs the workspace of a forward of the same problem";
    case Status::kCudaError: return "CUDA error";
    case Status::kCommError: return "communicator error";
    case Status::kPlanMismatch: return "the arguments do not match the plan (shape, communicator or decay)";
    case Status::kInvalidOffsets: return "invalid packed-document offsets (cu_seqlens) or state indices";
    case Status::kUnsupportedFeature: return "feature not supported by this backend or with these arguments (packed documents, zigzag layout)";
    case Status::kInternalError: return "internal error";
    case Status::kTimeout: return "timed out waiting for the stream's work (nothing aborted; it may still finish)";
  }
  return "unknown status";
}

LASP_NAMESPACE_END
