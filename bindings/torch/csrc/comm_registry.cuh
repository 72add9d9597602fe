#pragma once
// The communicators the binding made (comm.cu owns them); kernels_*.cu look them up by id.
#include <cuda_runtime.h>
#include <lasp/lasp.cuh>
#if LASP_TORCH_WITH_NCCL
#include <lasp/comm/nccl.cuh>
#endif

namespace lasp_torch {
#if LASP_TORCH_WITH_NCCL
struct CommEntry {
  ncclComm_t raw = nullptr;
  lasp::comm::Nccl comm;
  int device = -1;
};
/// The entry of id (> 0), or null. The pointer stays valid until comm_destroy(id).
CommEntry* comm_get(int id);
#endif
/// Called by comm_destroy so each kernel TU forgets the plans made on that communicator.
void forget_plans(int comm_id);
}  // namespace lasp_torch
