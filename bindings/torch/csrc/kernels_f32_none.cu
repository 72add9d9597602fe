// float x lasp::decay::None (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(f32_none, float, lasp::decay::None)
