#pragma once
// Forwarding header (lasp 0.1 path; removed in 0.3): tile defaults are in backend/cuda/tuning.cuh.
#include "../backend/cuda/tuning.cuh"
