// __nv_bfloat16 x lasp::decay::PerHead (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(bf16_perhead, __nv_bfloat16, lasp::decay::PerHead)
