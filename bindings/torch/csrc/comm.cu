// The NCCL communicators of the binding: one per torch.distributed group (the Python side
// shares the unique id over the group and caches the id returned here).
#include <cuda_runtime.h>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include "comm_registry.cuh"
#include "iface.h"

namespace lasp_torch {

#if LASP_TORCH_WITH_NCCL
namespace {
std::mutex g_mu;
std::map<int, std::unique_ptr<CommEntry>> g_comms;
int g_next = 1;
}  // namespace

CommEntry* comm_get(int id) {
  std::lock_guard<std::mutex> l(g_mu);
  auto it = g_comms.find(id);
  return it == g_comms.end() ? nullptr : it->second.get();
}

bool have_nccl() { return true; }

bool nccl_unique_id(unsigned char* out, std::size_t bytes, std::string* err) {
  if (bytes != sizeof(ncclUniqueId)) {
    *err = "ncclUniqueId has " + std::to_string(sizeof(ncclUniqueId)) + " bytes";
    return false;
  }
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) {
    *err = std::string("ncclGetUniqueId: ") + ncclGetErrorString(r);
    return false;
  }
  std::memcpy(out, &id, sizeof id);
  return true;
}

int comm_create(const unsigned char* idb, std::size_t bytes, int rank, int size, std::string* err) {
  if (bytes != sizeof(ncclUniqueId)) {
    *err = "ncclUniqueId has " + std::to_string(sizeof(ncclUniqueId)) + " bytes";
    return -1;
  }
  ncclUniqueId id;
  std::memcpy(&id, idb, sizeof id);
  auto e = std::make_unique<CommEntry>();
  if (cudaGetDevice(&e->device) != cudaSuccess) {
    *err = "cudaGetDevice failed";
    return -1;
  }
  const ncclResult_t r = ncclCommInitRank(&e->raw, size, id, rank);
  if (r != ncclSuccess) {
    *err = std::string("ncclCommInitRank: ") + ncclGetErrorString(r);
    return -1;
  }
  const lasp::Status st = lasp::comm::Nccl::make(e->raw, &e->comm);
  if (st != lasp::Status::kSuccess) {
    ncclCommDestroy(e->raw);
    *err = std::string("lasp::comm::Nccl: ") + lasp::to_string(st);
    return -1;
  }
  std::lock_guard<std::mutex> l(g_mu);
  const int key = g_next++;
  g_comms.emplace(key, std::move(e));
  return key;
}

bool comm_info(int id, int* rank, int* size, int* device) {
  if (id == 0) {
    *rank = 0, *size = 1, *device = -1;
    return true;
  }
  CommEntry* e = comm_get(id);
  if (!e) return false;
  *rank = e->comm.rank(), *size = e->comm.size(), *device = e->device;
  return true;
}

void comm_destroy(int id) {
  std::unique_ptr<CommEntry> e;
  {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_comms.find(id);
    if (it == g_comms.end()) return;
    e = std::move(it->second);
    g_comms.erase(it);
  }
  forget_plans(id);
  e->comm = lasp::comm::Nccl{};  // drop the side stream first
  ncclCommDestroy(e->raw);
}
#else
bool have_nccl() { return false; }
bool nccl_unique_id(unsigned char*, std::size_t, std::string* err) {
  *err = "lasp_torch was built without NCCL";
  return false;
}
int comm_create(const unsigned char*, std::size_t, int, int, std::string* err) {
  *err = "lasp_torch was built without NCCL";
  return -1;
}
bool comm_info(int id, int* rank, int* size, int* device) {
  if (id != 0) return false;
  *rank = 0, *size = 1, *device = -1;
  return true;
}
void comm_destroy(int) {}
#endif

}  // namespace lasp_torch
