// float x lasp::decay::PerHead (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(f32_perhead, float, lasp::decay::PerHead)
