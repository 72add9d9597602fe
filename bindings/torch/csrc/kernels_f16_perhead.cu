// __half x lasp::decay::PerHead (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(f16_perhead, __half, lasp::decay::PerHead)
