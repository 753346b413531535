// Shared-memory size of the sm_90a dense decode kernel (host side of wgmma_smem_layout in
// decode_wgmma.cuh).
#include "cuda/sm90/decode_wgmma.cuh"

namespace mla {
namespace cuda {
namespace sm90 {

int64_t decode_wgmma_smem(const DecodeArgs &a) { return wgmma_smem_layout(a.d_qk, a.d_v).total; }

}  // namespace sm90
}  // namespace cuda
}  // namespace mla
