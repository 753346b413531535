// Host side of the sm_90a sparse attention kernel (attend_kernel.cuh): shared-memory size and
// the launch, instantiated per element type and cache kind in instantiations/*.cu.
#pragma once
#include <cuda_runtime.h>
#include "cuda/common/decode_args.cuh"

namespace mla {
namespace cuda {
namespace sm90 {
namespace sparse {

// Bytes of dynamic shared memory for d_qk 576 or 512.
int64_t attend_smem(int64_t d_qk);

// Launches the kernel over the schedule in a.sched (grid parts x n_mblocks; clusters of the
// two m-blocks of a unit for FP8 caches when n_mblocks is even). Compute capability 9.0 only;
// T bf16 / fp16; KIND PLAIN (rows of T, d_qk 576 / 512), V32 (d_qk 576) or MODEL1 (d_qk 512)
// with their default geometry; both key sets of that kind; d_v 512.
template <typename T, int KIND>
mla_status launch_attend(const DecodeArgs &a, cudaStream_t stream, const char *op);

}  // namespace sparse
}  // namespace sm90
}  // namespace cuda
}  // namespace mla
