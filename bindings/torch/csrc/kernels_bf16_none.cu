// __nv_bfloat16 x lasp::decay::None (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(bf16_none, __nv_bfloat16, lasp::decay::None)
