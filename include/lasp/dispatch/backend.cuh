#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): the CUDA backend is in backend/cuda/.
#include "../backend/cuda/backend.cuh"
