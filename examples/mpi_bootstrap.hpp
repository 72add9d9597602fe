#pragma once
// What every MPI-launched lasp program does before lasp runs: one GPU per process (the rank on
// its node picks the device) and one NCCL communicator over MPI_COMM_WORLD (MPI only carries
// the NCCL unique id). Shared by examples/mpi_sp.cu and tests/mpi/kill_test.cu.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <cstdlib>

namespace lasp_example {

/// The device this process drives: its rank among the processes of its node, modulo the
/// visible devices; -1 when no CUDA device is visible (the caller skips). Sets it current.
inline int mpi_pick_device(int world_rank) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
  int local_rank = 0, ndev = 0;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_free(&node);
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) return -1;
  const int device = local_rank % ndev;
  return cudaSetDevice(device) == cudaSuccess ? device : -1;
}

/// One NCCL communicator over MPI_COMM_WORLD (rank 0 makes the unique id, MPI broadcasts it).
/// NVLink multicast (NVLS) stays off unless the user set NCCL_NVLS_ENABLE.
inline ncclResult_t mpi_nccl_world(int world_rank, int world_size, ncclComm_t* comm) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  ncclUniqueId id;
  if (world_rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return r;  // (the other ranks then wait in the broadcast: callers abort)
  }
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  return ncclCommInitRank(comm, world_size, id, world_rank);
}

}  // namespace lasp_example
