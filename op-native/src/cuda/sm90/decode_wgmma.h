// Host side of the sm_90a dense decode kernel (wgmma): shared-memory size and the launch,
// instantiated per element type in instantiations/*.cu.
#pragma once
#include <cuda_runtime.h>
#include "cuda/common/decode_args.cuh"

namespace mla {
namespace cuda {
namespace sm90 {

// Bytes of dynamic shared memory for these args (d_qk, d_v).
int64_t decode_wgmma_smem(const DecodeArgs &a);

// Launches the main kernel over the schedule in a.sched (grid parts x n_mblocks). Only for
// compute capability 9.0 devices, d_v = 512, d_qk 512 or 576.
template <typename T>
mla_status launch_decode_wgmma(const DecodeArgs &a, cudaStream_t stream, const char *op);

}  // namespace sm90
}  // namespace cuda
}  // namespace mla
