#pragma once
// lasp CUDA umbrella: everything of <lasp/lasp.hpp> plus the CUDA backend (chunk kernels, sm_80+),
// the single-device communicator, the checking mode for device communicators (comm/check.cuh)
// and make_plan for device communicators (plan.cuh).
// NCCL lives in <lasp/comm/nccl.cuh> (opt-in).
#include "lasp.hpp"
#include "comm/check.cuh"
#include "comm/device_single.cuh"
#include "backend/cuda/backend.cuh"
#include "plan.cuh"
