// Launchers of the lightning indexer and top-k kernels (ops.md section 6), called by the host
// dispatch in indexer.cu. Each returns MLA_OK or the CUDA error of the launch, naming `op`.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include "cuda/indexer/scores_args.cuh"
#include "cuda/indexer/topk_args.cuh"

namespace mla {
namespace cuda {
namespace indexer {

// CUDA-core scores: any h, d and dtypes (float64 accumulation when an input is float64).
mla_status launch_scores_simple(const ScoresArgs &a, cudaStream_t s, const char *op);

// Tensor-core scores on sm_90a: h 64, d 128, q and k both bf16 (kFp8 0) or both float8_e4m3
// (kFp8 1), kTokens query tokens per CTA (1, 2 or 4).
template <int kFp8, int kTokens>
mla_status launch_scores_wgmma(const ScoresArgs &a, cudaStream_t s, const char *op);
// Shared memory of that kernel (bytes, including the alignment slack).
int64_t scores_wgmma_smem(int fp8, int tokens);
// Whether the sm_90a kernel is in this build for device `dev` (its code was compiled for
// sm_90a, not a PTX fallback that would trap).
bool scores_wgmma_available(int dev);

// Top-k of rows of float scores (radix select in shared memory, bitonic sort of the chosen).
mla_status launch_topk(const TopkArgs &a, cudaStream_t s, const char *op);
// Shared memory the top-k kernel takes for rows of up to n keys and k outputs, and whether
// the rows are cached there (else every pass reads global memory).
int64_t topk_smem(int64_t n, int64_t k, int64_t smem_optin, bool *cache_rows);

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
