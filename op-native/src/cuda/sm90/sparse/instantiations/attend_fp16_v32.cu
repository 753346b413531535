// sm_90a sparse attention: __half queries, MLA_CACHE_V32 key rows.
#include "cuda/sm90/sparse/attend_kernel.cuh"

MLA_INSTANTIATE_SPARSE_ATTEND(__half, MLA_CACHE_V32)
