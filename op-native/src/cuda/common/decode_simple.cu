// CUDA-core kernel of the decode-shaped ops for the cases the tensor-core kernels do not take
// (float32 / float64 queries, a cache dtype other than q's, dims not multiples of 16,
// misaligned rows, FP8 layouts the tensor-core kernels do not stage, key sets of different
// kinds), every cache kind (FP8 rows dequantised per element): one warp per query row walks
// the row's keys (paged through the block table, or the sparse index lists) with an online
// softmax in Acc (double for float64 queries, like the CPU kernel, else float). Correct for
// every shape; not fast.
#include "cuda/common/check.cuh"
#include "cuda/common/decode_launch.h"

namespace mla {
namespace cuda {
namespace {

constexpr int kSimpleWarps = 4;

template <typename Acc>
__global__ void __launch_bounds__(kSimpleWarps * 32)
    decode_simple_kernel(const __grid_constant__ DecodeArgs a) {
    extern __shared__ __align__(16) unsigned char simple_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t row = int64_t(blockIdx.x) * kSimpleWarps + warp;
    if (row >= a.b * a.s_q * a.h_q) return;  // whole warps only: no block barrier below
    const int64_t b = row / (a.s_q * a.h_q), j = (row / a.h_q) % a.s_q, h = row % a.h_q;
    const int64_t kvh = h / a.group;
    Acc *q = reinterpret_cast<Acc *>(simple_smem) + warp * (a.d_qk + a.d_v);
    Acc *o = q + a.d_qk;

    const int64_t qbase = b * a.q_stride[0] + j * a.q_stride[1] + h * a.q_stride[2];
    for (int64_t d = lane; d < a.d_qk; d += 32) q[d] = load_elem<Acc>(a.q, a.dtype, qbase + d);
    for (int64_t c = lane; c < a.d_v; c += 32) o[c] = Acc(0);
    __syncwarp();

    // Dense decode: keys 0..hi of the request. Sparse: the unit's key list (both sets).
    const int64_t u = a.sparse ? (b * a.s_q + j) * a.h_kv + kvh : 0;
    const int64_t n0 = a.sparse ? set_count(a, 0, b) : 0;
    const int64_t hi = a.sparse ? unit_len(a, u) - 1 : last_key(a, seq_len(a, b), j);
    const Acc scale = Acc(a.scale);
    Acc m = -Acc(INFINITY), l = Acc(0), row_max = -Acc(INFINITY);
    for (int64_t t = 0; t <= hi; ++t) {
        // Plain caches: element offset of the row; FP8 caches: its slot (block, offset). A
        // block id outside the cache (dense) reads as a row of zeros, as in the tensor-core
        // kernels; an invalid sparse entry is skipped.
        int set = 0;
        const CacheArgs &c = a.sparse ? a.set[t < n0 ? 0 : 1].cache : a.kv;
        const bool fp8 = c.kind != MLA_CACHE_PLAIN;
        int64_t off;
        if (a.sparse) {
            off = sparse_key(a, u, n0, hi + 1, t, &set);
            if (off < 0) continue;
        } else {
            off = fp8 ? key_slot(a, b, t) : key_offset(a, b, kvh, t);
        }
        const uint8_t *row = nullptr, *sc = nullptr;
        if (fp8 && off >= 0) {
            const uint8_t *bytes = static_cast<const uint8_t *>(c.data);
            row = bytes + fp8_row_offset(c, off);
            sc = bytes + fp8_scale_offset(c, off);
        }
        auto key = [&](int64_t d) {
            return fp8 ? fp8_elem<Acc>(c, row, sc, d) : load_elem<Acc>(c.data, c.dtype, off + d);
        };
        Acc dot = Acc(0);
        if (off >= 0)
            for (int64_t d = lane; d < a.d_qk; d += 32) dot += q[d] * key(d);
        for (int s = 16; s > 0; s >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, s);
        const Acc score = dot * scale;
        row_max = score > row_max || score != score ? score : row_max;
        const Acc m_new = score > m ? score : m;
        const Acc alpha = m > -Acc(INFINITY) ? exp(m - m_new) : Acc(0);
        const Acc w = exp(score - m_new);
        l = l * alpha + w;
        for (int64_t c2 = lane; c2 < a.d_v; c2 += 32)
            o[c2] = o[c2] * alpha + (off >= 0 ? w * key(c2) : Acc(0));
        m = m_new;
    }
    // NaN l: the row saw a NaN key and is NaN (lse too), as on the CPU.
    const Acc lse = !(l <= Acc(0)) ? m + log(l) : Acc(INFINITY);
    const Acc inv = !(l <= Acc(0)) ? Acc(1) / l : Acc(0);
    for (int64_t c = lane; c < a.d_v; c += 32) o[c] *= inv;
    __syncwarp();
    write_row<Acc>(a, o, b, j, h, lse, float(row_max), lane);
}

template <typename Acc>
mla_status launch(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    const int64_t rows = a.b * a.s_q * a.h_q;
    const size_t smem = size_t(decode_simple_smem(a));
    if (smem > 48 * 1024)
        MLA_CUDA_TRY(cudaFuncSetAttribute(decode_simple_kernel<Acc>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const unsigned blocks = unsigned((rows + kSimpleWarps - 1) / kSimpleWarps);
    decode_simple_kernel<Acc><<<blocks, kSimpleWarps * 32, smem, stream>>>(a);
    MLA_CUDA_LAUNCHED("decode_simple_kernel launch");
    return MLA_OK;
}

}  // namespace

int64_t decode_simple_smem(const DecodeArgs &a) {
    const int64_t acc = a.dtype == MLA_FLOAT64 ? 8 : 4;
    return kSimpleWarps * (a.d_qk + a.d_v) * acc;
}

mla_status launch_decode_simple(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    return a.dtype == MLA_FLOAT64 ? launch<double>(a, stream, op) : launch<float>(a, stream, op);
}

}  // namespace cuda
}  // namespace mla
