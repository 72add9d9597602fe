#pragma once
// lasp CUDA umbrella: everything of <lasp/lasp.hpp> plus the CUDA backend (chunk kernels, sm_80+)
// and the single-device communicator. NCCL lives in <lasp/comm/nccl.cuh> (opt-in).
#include "lasp.hpp"
#include "comm/device_single.cuh"
#include "dispatch/backend.cuh"
