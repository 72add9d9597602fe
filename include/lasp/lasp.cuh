#pragma once
// lasp CUDA umbrella: everything of <lasp/lasp.hpp> plus the CUDA backend (chunk kernels, sm_80+),
// the single-device communicator, the checking mode for device communicators (comm/check.cuh),
// make_plan for device communicators (plan.cuh) and bounded waits on streams (comm/wait.cuh).
// NCCL lives in <lasp/comm/nccl.cuh> (opt-in).
#include "lasp.hpp"
#include "comm/check.cuh"
#include "comm/device_single.cuh"
#include "comm/wait.cuh"
#include "backend/cuda/backend.cuh"
#include "plan.cuh"
