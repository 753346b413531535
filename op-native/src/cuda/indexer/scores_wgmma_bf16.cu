// bf16 instantiations of the sm_90a indexer kernel (scores_wgmma.cuh), its shared-memory size
// and the check that its sm_90a code is in the build.
#include "cuda/indexer/scores_wgmma.cuh"

namespace mla {
namespace cuda {
namespace indexer {

template mla_status launch_scores_wgmma<0, 1>(const ScoresArgs &, cudaStream_t, const char *);
template mla_status launch_scores_wgmma<0, 2>(const ScoresArgs &, cudaStream_t, const char *);
template mla_status launch_scores_wgmma<0, 4>(const ScoresArgs &, cudaStream_t, const char *);

int64_t scores_wgmma_smem(int fp8, int tokens) {
    if (fp8) {
        return tokens == 1 ? WgConfig<1, 1>::kBytes : tokens == 2 ? WgConfig<1, 2>::kBytes
                                                                   : WgConfig<1, 4>::kBytes;
    }
    return tokens == 1 ? WgConfig<0, 1>::kBytes : tokens == 2 ? WgConfig<0, 2>::kBytes
                                                               : WgConfig<0, 4>::kBytes;
}

bool scores_wgmma_available(int dev) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    if (major != 9 || minor != 0) return false;
    // Built for sm_90a, the kernel's binary is sm_90 code compiled from sm_90 PTX; a build
    // without that target would run its trap body JIT-compiled from older PTX.
    cudaFuncAttributes attr;
    if (cudaFuncGetAttributes(&attr, indexer_scores_wgmma_kernel<0, 1>) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return attr.binaryVersion == 90 && attr.ptxVersion >= 90;
}

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
