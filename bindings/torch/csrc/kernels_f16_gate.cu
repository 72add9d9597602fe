// __half x lasp::decay::Gate (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(f16_gate, __half, lasp::decay::Gate)
