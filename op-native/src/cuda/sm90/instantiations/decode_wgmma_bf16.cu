// sm_90a dense decode (wgmma), bf16.
#include "cuda/sm90/decode_wgmma.cuh"

MLA_INSTANTIATE_DECODE_WGMMA(__nv_bfloat16)
