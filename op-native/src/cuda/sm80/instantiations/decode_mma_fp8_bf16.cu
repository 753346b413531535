// sm_80+ tensor-core dense decode from FP8 caches (V32, MODEL1) dequantised to bf16 in
// shared memory: value tier 512 (it masks narrower values at run time), both key tiles.
#include "cuda/sm80/decode_mma.cuh"

MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 512, 64, true)
MLA_INSTANTIATE_DECODE_MMA(__nv_bfloat16, 512, 32, true)
