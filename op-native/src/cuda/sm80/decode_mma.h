// Host side of the sm_80+ tensor-core dense decode kernel: shared-memory size and the launch,
// instantiated per (element type, value tier, key tile, cache kind) in instantiations/*.cu.
#pragma once
#include <cuda_runtime.h>
#include "cuda/common/decode_args.cuh"

namespace mla {
namespace cuda {
namespace sm80 {

// Bytes of dynamic shared memory for a key tile of `tile_keys` and these args.
int64_t decode_mma_smem(const DecodeArgs &a, int tile_keys, int elem_bytes);

// Launches the main kernel over the schedule in a.sched (grid parts x n_mblocks). FP8: the cache
// is V32 or MODEL1 (a.kv.kind), dequantised to T in shared memory; else a plain cache of T.
template <typename T, int DV, int BN, bool FP8>
mla_status launch_decode_mma(const DecodeArgs &a, cudaStream_t stream, const char *op);

}  // namespace sm80
}  // namespace cuda
}  // namespace mla
