// The parameter block of the lightning indexer's score kernels (ops.md section 6), built on
// the host by indexer.cu and passed by value as a __grid_constant__ kernel parameter.
//
// A launch computes the score rows of queries (b, t) for b in [b0, b0 + nb) and t in
// [t0, t0 + nt): row (b, t) goes to out + ((b - b0) * nt + (t - t0)) * s_k. mla_indexer_scores
// launches once over all rows (b0 = t0 = 0, nb = b, nt = s_q: the output's own layout); the
// fused top-k launches over chunks of rows into its workspace and selects from there.
#pragma once
#include <cstdint>
#include "mla/mla.h"

namespace mla {
namespace cuda {
namespace indexer {

struct ScoresArgs {
    int32_t q_dtype, k_dtype, w_dtype;
    int32_t causal;
    int64_t s_q, s_k, h, d;
    const void *q;          // [b, s_q, h, d]
    const float *q_scale;   // FP8 q: [b, s_q, h]
    const void *k;          // [b, s_k, d]
    const float *k_scale;   // FP8 k: [b, s_k]
    const void *w;          // [b, s_q, h]
    int64_t b0, nb, t0, nt;
    float *out;
    // 1: keys a query may not see get -inf (the scores op); 0: they are left unwritten (the
    // fused top-k reads only the visible prefix of each row).
    int32_t fill_masked;
    int64_t key_chunk;      // keys per CTA of the tensor-core kernel (a multiple of 64)
};

// Keys query t may see: the causal mask aligns bottom-right (s <= t + s_k - s_q).
__host__ __device__ __forceinline__ int64_t visible_keys(int32_t causal, int64_t s_q, int64_t s_k,
                                                         int64_t t) {
    if (!causal) return s_k;
    const int64_t v = t + s_k - s_q + 1;
    return v < 0 ? 0 : v > s_k ? s_k : v;
}

// Output row of query (b, t) of a launch.
__device__ __forceinline__ float *score_row(const ScoresArgs &a, int64_t b, int64_t t) {
    return a.out + ((b - a.b0) * a.nt + (t - a.t0)) * a.s_k;
}

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
