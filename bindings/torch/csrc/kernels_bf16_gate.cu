// __nv_bfloat16 x lasp::decay::Gate (one TU per pair: parallel build).
#include "kernels.cuh"
LASP_TORCH_INSTANTIATE(bf16_gate, __nv_bfloat16, lasp::decay::Gate)
