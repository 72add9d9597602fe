#pragma once
// make_plan for device communicators (comm::Nccl, comm::DeviceSingle): plan.hpp has the Plan and
// api.hpp the host version. The records travel through a small device buffer the caller lends
// for the call:
//
//   float* staging;  // device memory on the communicator's GPU
//   cudaMalloc(&staging, lasp::plan_staging_floats(comm.size()) * sizeof(float));
//   lasp::Plan<P, __nv_bfloat16> plan;
//   lasp::Status st = lasp::make_plan<P, __nv_bfloat16>(shape, {slopes}, comm, staging, stream, &plan);
//   cudaFree(staging);   // the plan keeps nothing of it
//
// Unlike forward/backward this SYNCHRONISES `stream` (it reads the records back; while waiting
// it polls the communicator for asynchronous errors when it has a check() member, as comm::Nccl
// does). Collective: every rank of the SP group calls it, once per layer shape, at set-up.
#include <cuda_runtime.h>
#include <thread>
#include <type_traits>
#include <vector>
#include "api.hpp"
#include "backend/cuda/backend.cuh"
#include "comm/check.cuh"
#include "plan.hpp"

LASP_NAMESPACE_BEGIN

/// Device floats make_plan needs on a communicator of `comm_size` ranks (this rank's record,
/// then every rank's): about 250 bytes per rank.
constexpr std::size_t plan_staging_floats(int comm_size) {
  return detail::kPlanRecordFloats * std::size_t(1 + (comm_size > 0 ? comm_size : 0));
}

/// make_plan (api.hpp) for device communicators. `d_staging`: plan_staging_floats(comm.size())
/// floats of device memory on the communicator's GPU, 16-byte aligned, used during the call
/// only. Same statuses as the host version, the same on every rank, plus kCudaError when a copy
/// fails (ranks may then disagree) and kNullPointer for a null staging buffer (returned without
/// communicating: pass one on every rank). Synchronises `stream`.
template <class Policy, class T, class Comm>
[[nodiscard]] Status make_plan(const Shape& shape, const typename Policy::Decay::Params& decay, Comm& comm,
                               float* d_staging, cudaStream_t stream, Plan<Policy, T>* plan) {
  static_assert(is_communicator_v<Comm>, "Comm does not model the lasp communicator concept (comm/concept.hpp).");
  static_assert(Comm::kDeviceMemory, "Host communicators: use make_plan(shape, decay, comm, plan) of <lasp/api.hpp>.");
  using Backend = backend::for_comm<Comm>;
  using A = detail::PlanAccess;
  if (!d_staging) return Status::kNullPointer;
  const int R = comm.size();
  if (R < 1) return Status::kCommError;
  const Status local = A::local_status<Policy, Backend, T>(shape, comm.rank(), R, plan);
  const std::vector<float> mine = A::record<Policy>(shape, R, lasp::comm::detail::device_elem_code<T>(), sizeof(T),
                                                    local, A::local_hop<Policy>(shape, decay, local),
                                                    schedule::plan_node_size<typename Policy::Schedule>(comm));
  std::vector<float> all(detail::kPlanRecordFloats * std::size_t(R));
  float* d_mine = d_staging;
  float* d_all = d_staging + detail::kPlanRecordFloats;
  if (cudaMemcpyAsync(d_mine, mine.data(), mine.size() * sizeof(float), cudaMemcpyHostToDevice, stream) != cudaSuccess)
    return Status::kCudaError;
  LASP_RETURN_IF_ERROR(comm.all_gather(d_mine, d_all, detail::kPlanRecordFloats, stream));
  if (cudaMemcpyAsync(all.data(), d_all, all.size() * sizeof(float), cudaMemcpyDeviceToHost, stream) != cudaSuccess)
    return Status::kCudaError;
  // Wait, polling the communicator: a peer that died must not hang this rank silently.
  for (;;) {
    const cudaError_t q = cudaStreamQuery(stream);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) return Status::kCudaError;
    if constexpr (lasp::comm::detail::has_check<Comm>::value) LASP_RETURN_IF_ERROR(comm.check());
    std::this_thread::yield();
  }
  const WorkspaceSizes z =
      local == Status::kSuccess ? driver::sizes<Policy, Backend, std::remove_const_t<T>>(shape) : WorkspaceSizes{};
  return A::finish(all.data(), R, comm.rank(), shape, z, plan);
}

LASP_NAMESPACE_END
