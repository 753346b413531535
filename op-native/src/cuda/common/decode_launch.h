// Host launchers of the dense decode kernels. dense_decode.cu builds the DecodeArgs, picks
// the kernels and calls these in stream order: schedule -> main kernel -> combine (split-KV
// path), or the CUDA-core kernel alone.
#pragma once
#include <cuda_runtime.h>
#include "cuda/common/decode_args.cuh"

namespace mla {
namespace cuda {

// Split-KV schedule from the device's cache_seqlens (one CTA; common/decode_schedule.cu).
mla_status launch_decode_schedule(const DecodeArgs &a, cudaStream_t stream, const char *op);

// Merges the partials of split units and writes their rows (common/decode_combine.cu).
mla_status launch_decode_combine(const DecodeArgs &a, cudaStream_t stream, const char *op);

// CUDA-core kernel for what the tensor-core kernels do not take: float32 / float64 queries,
// a cache dtype other than q's, dims that are not multiples of 16, misaligned data
// (common/decode_simple.cu). One warp per query row, no split, no workspace.
mla_status launch_decode_simple(const DecodeArgs &a, cudaStream_t stream, const char *op);
// Shared memory it needs (bytes); compare with the device's opt-in limit.
int64_t decode_simple_smem(const DecodeArgs &a);

}  // namespace cuda
}  // namespace mla
