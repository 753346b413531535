// sm_80+ tensor-core dense decode, bf16, value tier 512 (absorbed MLA, d_v 512).
#include "cuda/sm80/decode_mma.cuh"

MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 512, 64, false)
MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 512, 32, false)
