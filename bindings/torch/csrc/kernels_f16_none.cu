// __half x lasp::decay::None (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(f16_none, __half, lasp::decay::None)
