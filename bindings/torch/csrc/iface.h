#pragma once
// The seam between the torch-facing code (binding.cpp: torch headers, compiled by the host
// compiler) and the lasp-facing code (kernels_*.cu, comm.cu: lasp headers, compiled by nvcc).
// Neither side includes the other's headers, so torch's headers never meet nvcc and a CUDA
// toolkit that differs from torch's own (nvcc 13 with a cu12x torch) only compiles lasp.
#include <cstddef>
#include <cstdint>
#include <string>

namespace lasp_torch {

enum class Dtype : int { kBF16 = 0, kF16 = 1, kF32 = 2 };
enum class DecayKind : int { kNone = 0, kPerHead = 1, kGate = 2 };

/// A rank-4 (b, n, h, x) view, last dimension contiguous; strides in elements.
struct View {
  void* ptr = nullptr;
  std::int64_t sb = 0, sn = 0, sh = 0;
};

struct Problem {
  Dtype dtype = Dtype::kBF16;
  DecayKind decay = DecayKind::kNone;
  std::int64_t B = 1, N = 1, H = 1, D = 64, E = 64;
  int comm = 0;  // 0: the single device; >0: a communicator made by comm_create
};

struct FwdCall {
  Problem p;
  View q, k, v, o;
  float scale = 1.f;
  const float* slopes = nullptr;  // host, H values (kPerHead)
  View g;                         // fp32 (b, n, h) log-gates (kGate); sx unused
  const float* h0 = nullptr;      // (B,H,D,E) fp32 device or null
  float* ht = nullptr;            // (B,H,D,E) fp32 device or null
  void* reserve = nullptr;
  std::size_t reserve_bytes = 0;
  void* scratch = nullptr;
  std::size_t scratch_bytes = 0;
  void* stream = nullptr;  // cudaStream_t
};

struct BwdCall {
  Problem p;
  View q, k, v, dout, dq, dk, dv;
  float scale = 1.f;
  const float* slopes = nullptr;
  View g, dg;
  const float* dht = nullptr;
  float* dh0 = nullptr;
  void* reserve = nullptr;
  std::size_t reserve_bytes = 0;
  void* scratch = nullptr;
  std::size_t scratch_bytes = 0;
  void* stream = nullptr;
};

/// The binding's own code (not a lasp::Status): a plan would have to be made during CUDA graph
/// capture (make_plan synchronises): run the call once outside capture first.
constexpr int kNeedPlanOutsideCapture = 1000;

/// lasp::Status as an int (0 = success) and its sentence / enumerator name.
const char* status_sentence(int status);
const char* status_name(int status);

/// Reserve and scratch bytes of a problem on this rank (the current device's SM count decides
/// the segment split). R = the communicator's size.
int workspace_sizes(const Problem& p, int R, std::size_t* reserve, std::size_t* scratch);

/// Makes (collectively, once per problem and slopes: cached) the plan and runs the call.
/// Returns a lasp::Status code. `plan_made` (optional) is set when this call made a plan.
int forward(const FwdCall& c, bool* plan_made);
int backward(const BwdCall& c);

/// The deferred (device-side) verdict of the last call on `reserve` (synchronises the stream).
int deferred_status(void* reserve, std::size_t reserve_bytes, void* stream);

// ---- communicators (comm.cu) -------------------------------------------------------------
/// Whether the extension was built with NCCL.
bool have_nccl();
/// NCCL_UNIQUE_ID_BYTES bytes of a fresh ncclUniqueId into out (128 bytes); false without NCCL.
bool nccl_unique_id(unsigned char* out, std::size_t bytes, std::string* err);
/// ncclCommInitRank on the current device, wrapped in lasp::comm::Nccl; returns the id (> 0) or
/// -1 with *err set.
int comm_create(const unsigned char* id, std::size_t bytes, int rank, int size, std::string* err);
/// Size and rank of communicator `id` (0: the single device: 1 and 0); false for an unknown id.
bool comm_info(int id, int* rank, int* size, int* device);
/// Destroys the NCCL communicator (ncclCommDestroy) and forgets its plans.
void comm_destroy(int id);

}  // namespace lasp_torch
