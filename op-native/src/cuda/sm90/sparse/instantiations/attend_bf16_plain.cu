// sm_90a sparse attention: __nv_bfloat16 queries, MLA_CACHE_PLAIN key rows.
#include "cuda/sm90/sparse/attend_kernel.cuh"

MLA_INSTANTIATE_SPARSE_ATTEND(__nv_bfloat16, MLA_CACHE_PLAIN)
