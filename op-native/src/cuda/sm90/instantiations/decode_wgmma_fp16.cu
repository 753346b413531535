// sm_90a dense decode (wgmma), fp16.
#include "cuda/sm90/decode_wgmma.cuh"

MLA_INSTANTIATE_DECODE_WGMMA(__half)
