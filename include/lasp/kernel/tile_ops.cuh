#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): the sm_80 kernels are classes in kernel/sm80/.
#include "sm80/tile_ops.cuh"
