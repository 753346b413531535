// Shared-memory size of the sm_80+ tensor-core dense decode kernel (host side of
// mma_smem_layout in decode_mma.cuh).
#include "cuda/sm80/decode_mma.cuh"

namespace mla {
namespace cuda {
namespace sm80 {

int64_t decode_mma_smem(const DecodeArgs &a, int tile_keys, int elem_bytes) {
    return mma_smem_layout(a.row_alloc, a.d_v, tile_keys, elem_bytes).total;
}

}  // namespace sm80
}  // namespace cuda
}  // namespace mla
