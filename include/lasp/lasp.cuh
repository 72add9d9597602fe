#pragma once
// lasp CUDA umbrella: everything of <lasp/lasp.hpp> plus the CUDA backend (chunk kernels, sm_80+),
// the single-device communicator and the checking mode for device communicators (comm/check.cuh).
// NCCL lives in <lasp/comm/nccl.cuh> (opt-in).
#include "lasp.hpp"
#include "comm/check.cuh"
#include "comm/device_single.cuh"
#include "backend/cuda/backend.cuh"
