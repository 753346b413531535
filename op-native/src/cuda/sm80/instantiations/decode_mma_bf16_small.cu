// sm_80+ tensor-core dense decode, bf16, value tiers 64, 128 and 256.
#include "cuda/sm80/decode_mma.cuh"

MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 64, 64, false)
MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 128, 64, false)
MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 256, 64, false)
