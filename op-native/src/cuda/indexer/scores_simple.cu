// CUDA-core lightning indexer scores (ops.md section 6): the path for every shape, dtype and
// device the tensor-core kernel does not take (h other than 64, d other than 128, float32 /
// float64 / float16 inputs, q and k of different types, misaligned pointers, GPUs other than
// sm_90). One thread per key: for each head, the dot product of the (dequantised) query and
// key rows, then w * relu, in the CPU kernel's order of heads (cpu/indexer.cpp). Accumulation
// in float, or double when any input is float64, as on the CPU.
#include "cuda/common/check.cuh"
#include "cuda/common/convert.cuh"
#include "cuda/indexer/launch.h"

namespace mla {
namespace cuda {
namespace indexer {
namespace {

constexpr int kSimpleThreads = 128;

// Element i of row `row` (rows of d values) of an indexer operand, as the CPU reads it: float
// types converted exactly, FP8 bytes times the row's scale.
template <typename Acc>
__device__ __forceinline__ Acc operand(const void *p, int32_t dtype, const float *scale,
                                       int64_t row, int64_t d, int64_t i) {
    const int64_t at = row * d + i;
    switch (dtype) {
        case MLA_FP8_E4M3:
            return Acc(conv::fp8_e4m3_to_float(static_cast<const uint8_t *>(p)[at])) *
                   Acc(scale[row]);
        case MLA_FLOAT64: return Acc(static_cast<const double *>(p)[at]);
        case MLA_FLOAT32: return Acc(static_cast<const float *>(p)[at]);
        case MLA_FLOAT16: return Acc(conv::f16_to_float(static_cast<const uint16_t *>(p)[at]));
        default: return Acc(conv::bf16_to_float(static_cast<const uint16_t *>(p)[at]));
    }
}

// Launch row blockIdx.x; keys strided over blockIdx.y and the threads.
template <typename Acc>
__global__ void __launch_bounds__(kSimpleThreads)
    indexer_scores_simple_kernel(const __grid_constant__ ScoresArgs a) {
    const int64_t item = blockIdx.x;
    const int64_t b = a.b0 + item / a.nt, t = a.t0 + item % a.nt;
    const int64_t vis = visible_keys(a.causal, a.s_q, a.s_k, t);
    float *out = score_row(a, b, t);
    const int64_t qrow0 = (b * a.s_q + t) * a.h;
    const int64_t step = int64_t(gridDim.y) * kSimpleThreads;
    for (int64_t s = int64_t(blockIdx.y) * kSimpleThreads + threadIdx.x; s < a.s_k; s += step) {
        if (s >= vis) {
            if (a.fill_masked) out[s] = -INFINITY;
            continue;
        }
        const int64_t krow = b * a.s_k + s;
        Acc acc = 0;
        for (int64_t j = 0; j < a.h; ++j) {
            Acc z = 0;
            for (int64_t i = 0; i < a.d; ++i)
                z += operand<Acc>(a.q, a.q_dtype, a.q_scale, qrow0 + j, a.d, i) *
                     operand<Acc>(a.k, a.k_dtype, a.k_scale, krow, a.d, i);
            // As the CPU: only positive products count (relu), a NaN dot product adds nothing.
            if (z > 0) acc += operand<Acc>(a.w, a.w_dtype, nullptr, qrow0 + j, 1, 0) * z;
        }
        out[s] = float(acc);
    }
}

}  // namespace

mla_status launch_scores_simple(const ScoresArgs &a, cudaStream_t s, const char *op) {
    const int64_t rows = a.nb * a.nt;
    if (rows == 0 || a.s_k == 0) return MLA_OK;
    MLA_REQUIRE(rows <= 0x7fffffff, "%s: too many query rows for one launch (%lld)", op,
                (long long)rows);
    const int64_t key_blocks = (a.s_k + kSimpleThreads - 1) / kSimpleThreads;
    dim3 grid(unsigned(rows), unsigned(key_blocks < 65535 ? key_blocks : 65535));
    const bool dbl = a.q_dtype == MLA_FLOAT64 || a.k_dtype == MLA_FLOAT64 || a.w_dtype == MLA_FLOAT64;
    if (dbl)
        indexer_scores_simple_kernel<double><<<grid, kSimpleThreads, 0, s>>>(a);
    else
        indexer_scores_simple_kernel<float><<<grid, kSimpleThreads, 0, s>>>(a);
    MLA_CUDA_LAUNCHED("indexer_scores_simple_kernel launch");
    return MLA_OK;
}

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
