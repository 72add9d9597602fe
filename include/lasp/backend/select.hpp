#pragma once
// Which backend runs a call follows from the communicator: host communicators (buffers in host
// memory) run the host backend, device communicators the CUDA backend. Each backend specialises
// `select` for its memory space in its own header; api.hpp needs only this declaration.
#include "../config.hpp"

LASP_NAMESPACE_BEGIN
namespace backend {

template <bool DeviceMemory>
struct select;  // ::type = the backend; host: backend/host/backend.hpp, CUDA: backend/cuda/backend.cuh

template <class Comm>
using for_comm = typename select<Comm::kDeviceMemory>::type;

}  // namespace backend
LASP_NAMESPACE_END
