// Host side of the sm_90a sparse attention kernel (attend.h).
#include "cuda/sm90/sparse/attend_kernel.cuh"

namespace mla {
namespace cuda {
namespace sm90 {
namespace sparse {

int64_t attend_smem(int64_t d_qk) {
    static_assert(kStagingBytes <= 2 * int64_t(kTileKeys) * 512 * 2 + 8192,
                  "the epilogue's staging fits over Q, stage 1 and P_b");
    return smem_layout(d_qk).total;
}

}  // namespace sparse
}  // namespace sm90
}  // namespace cuda
}  // namespace mla
