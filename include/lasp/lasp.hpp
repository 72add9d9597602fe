#pragma once
// lasp: Linear Attention Sequence Parallelism. Host umbrella header: plain C++17, no CUDA needed.
// Gives the public API, the policies, the host backend with its thread communicator, and the
// double-precision reference, the SP x DP rank arithmetic (comm/groups.hpp) and the checking mode
// for host communicators (comm/check.hpp). For the CUDA backend include <lasp/lasp.cuh>; for
// NCCL, <lasp/comm/nccl.cuh>.
#include "api.hpp"
#include "args.hpp"
#include "comm/check.hpp"
#include "comm/concept.hpp"
#include "comm/groups.hpp"
#include "comm/host.hpp"
#include "element.hpp"
#include "plan.hpp"
#include "backend/host/backend.hpp"
#include "policy/policy.hpp"
#include "reference/naive.hpp"
#include "reference/packed.hpp"
#include "status.hpp"
#include "tensor.hpp"
#include "version.hpp"
