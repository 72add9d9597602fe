// float x lasp::decay::Gate (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(f32_gate, float, lasp::decay::Gate)
