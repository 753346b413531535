// Lightning indexer scores on sm_90a tensor cores (ops.md section 6), for DeepSeek's indexer
// shape: h = 64 heads, d = 128, q and k both bf16 (HGMMA) or both float8_e4m3 (QGMMA) with
// per-row float32 scales.
//
// A CTA owns kTokens query tokens of one batch (N = 64 * kTokens query rows: token-major, then
// head) and a chunk of key_chunk keys. Its two warpgroups take the chunk's 64-key tiles in
// turn (warpgroup w: tiles w, w + 2, ...), each with its own ring of kStages shared-memory
// stages filled by cp.async. Per tile one accumulator chain D[64 keys x N] = K Q^T
// (wgmma m64nNk16 bf16 / m64nNk32 e4m3, K-major A = key rows, K-major B = the query rows,
// which stay in shared memory for the whole CTA, 128-byte swizzle). The epilogue works on the
// accumulator registers: thread (warp, lane) holds keys 16 * warp + lane / 4 (+ 8) and, per
// 8-column block, query rows 2 * (lane % 4) + {0, 1}; it sums w * relu(D) over its columns of
// each token (FP8: D times the query row's scale first, folded into w when all of the CTA's
// query scales are finite and >= 0; the key's scale last, loaded a tile ahead), adds the four
// lanes of a quad (two shuffles), and the lanes store one (key, token) score each, -inf where
// the causal mask hides the key. While one warpgroup runs its epilogue, the other's product
// keeps the tensor cores busy.
#pragma once
#include <cuda_runtime.h>
#include "cuda/common/check.cuh"
#include "cuda/common/convert.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/indexer/launch.h"
#include "cuda/indexer/wgmma_kmajor.cuh"

namespace mla {
namespace cuda {
namespace indexer {

constexpr int kWgHeads = 64;
constexpr int kWgDim = 128;
constexpr int kWgThreads = 256;
constexpr int kTileKeys = 64;

// Named barrier of warpgroup wg's 128 threads (ids 1 and 2; constant ids keep the barrier
// count ptxas reserves small).
__device__ __forceinline__ void warpgroup_barrier(int wg) {
    if (wg == 0)
        asm volatile("bar.sync 1, 128;\n" ::: "memory");
    else
        asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

template <int kFp8, int kTokens>
struct WgConfig {
    static constexpr int kN = kTokens * kWgHeads;             // query rows (B operand)
    static constexpr int kRowBytes = kFp8 ? kWgDim : 2 * kWgDim;
    static constexpr int kChunksPerRow = kRowBytes / 16;      // 16-byte cp.async copies
    static constexpr int kTileBytes = kTileKeys * kRowBytes;
    static constexpr int kQBytes = kN * kRowBytes;
    static constexpr int kKSteps = kRowBytes / 32;            // k16 bf16 / k32 e4m3: 32 bytes
    // Two stages per warpgroup keep two CTAs of 1 or 2 bf16 tokens on an SM (decode is bound
    // by the key stream; each SM then has eight key tiles in flight); four otherwise.
    static constexpr int kStages = (!kFp8 && kTokens < 4) ? 2 : 4;
    // N = 256 needs 128 accumulator registers per thread: one CTA per SM.
    static constexpr int kMinBlocks = kN == 256 ? 1 : 2;
    static constexpr int kStageOff = kQBytes;
    static constexpr int kWOff = kStageOff + 2 * kStages * kTileBytes;
    static constexpr int kQsOff = kWOff + kN * 4;
    static constexpr int kWqOff = kQsOff + kN * 4;            // FP8: w times the query scale
    static constexpr int kBytes = kWqOff + kN * 4 + 1024;     // + slack to align the base to 1024
    // Keys per CTA: 32 tiles (64 for four tokens, whose query rows cost more to load).
    static constexpr int64_t kKeyChunk = (kTokens == 4 ? 64 : 32) * kTileKeys;
};

// Byte offset of 16-byte chunk `ch` of row `r` in a K-major operand of `rows` rows: column
// block ch / 8 (128 bytes of each row), rows 128 bytes apart, chunks XOR-swizzled by row % 8.
__device__ __forceinline__ uint32_t swizzled(int r, int ch, int rows) {
    return uint32_t((ch >> 3) * rows * 128 + r * 128 + (((ch & 7) ^ (r & 7)) << 4));
}

template <int kFp8, int kTokens>
__global__ void __launch_bounds__(kWgThreads, WgConfig<kFp8, kTokens>::kMinBlocks)
    indexer_scores_wgmma_kernel(const __grid_constant__ ScoresArgs a) {
#ifdef MLA_IDX_SM90
    using C = WgConfig<kFp8, kTokens>;
    constexpr int N = C::kN;
    extern __shared__ uint8_t smem_raw[];
    const uint32_t raw = ptx::smem_addr(smem_raw);
    const uint32_t base = (raw + 1023u) & ~1023u;
    uint8_t *gbase = smem_raw + (base - raw);
    float *w_s = reinterpret_cast<float *>(gbase + C::kWOff);
    float *qs_s = reinterpret_cast<float *>(gbase + C::kQsOff);
    float *wq_s = reinterpret_cast<float *>(gbase + C::kWqOff);

    const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127;
    const int warp = wtid >> 5, lane = tid & 31;

    // Tokens and keys of this CTA; the groups of the last tokens (the most keys under a causal
    // mask) are launched first.
    const int64_t groups = (a.nt + kTokens - 1) / kTokens;
    const int64_t item = int64_t(gridDim.x) - 1 - blockIdx.x;
    const int64_t b = a.b0 + item / groups;
    const int64_t tg = a.t0 + (item % groups) * kTokens;
    const int64_t tok_left = a.t0 + a.nt - tg;
    const int n_tok = tok_left < kTokens ? int(tok_left) : kTokens;
    const int64_t c0 = int64_t(blockIdx.y) * a.key_chunk;
    const int64_t c1 = c0 + a.key_chunk < a.s_k ? c0 + a.key_chunk : a.s_k;
    const int64_t vis_max = visible_keys(a.causal, a.s_q, a.s_k, tg + n_tok - 1);
    const int64_t comp_end = c1 < vis_max ? c1 : vis_max;
    const int n_tiles = comp_end > c0 ? int((comp_end - c0 + kTileKeys - 1) / kTileKeys) : 0;

    // Keys past every tile no token of the group sees: -inf without a product.
    const int64_t fill0 = c0 + int64_t(n_tiles) * kTileKeys;
    if (a.fill_masked && fill0 < c1) {
        for (int tk = 0; tk < n_tok; ++tk) {
            float *row = score_row(a, b, tg + tk);
            for (int64_t s = fill0 + tid; s < c1; s += kWgThreads) row[s] = -INFINITY;
        }
    }
    if (n_tiles == 0) return;

    // Query rows (zeros for tokens past the group's end), weights and query scales.
    const uint8_t *qg = static_cast<const uint8_t *>(a.q);
    for (int c = tid; c < N * C::kChunksPerRow; c += kWgThreads) {
        const int n = c / C::kChunksPerRow, ch = c % C::kChunksPerRow;
        const int tk = n / kWgHeads, j = n % kWgHeads;
        const bool ok = tk < n_tok;
        const uint8_t *src =
            ok ? qg + ((b * a.s_q + tg + tk) * kWgHeads + j) * C::kRowBytes + ch * 16 : qg;
        ptx::cp_async_16(base + swizzled(n, ch, N), src, ok ? 16 : 0);
    }
    // FP8: when every query scale of the CTA is finite and >= 0, w * relu(qs * D) is
    // (w * qs) * relu(D), and the epilogue saves a multiply per element.
    bool scales_fold = true;
    for (int n = tid; n < N; n += kWgThreads) {
        const int tk = n / kWgHeads, j = n % kWgHeads;
        float wv = 0.0f, sv = 0.0f;
        if (tk < n_tok) {
            const int64_t at = (b * a.s_q + tg + tk) * kWgHeads + j;
            wv = conv::load_float(a.w, a.w_dtype, at);
            sv = kFp8 ? a.q_scale[at] : 1.0f;
        }
        w_s[n] = wv;
        qs_s[n] = sv;
        wq_s[n] = wv * sv;
        scales_fold = scales_fold && sv >= 0.0f && sv < INFINITY;
    }

    // This warpgroup's tiles: i-th = tile wg + 2 i of the chunk, in stage i % kStages. Keys
    // past s_k are zero rows (their scores are not stored).
    const uint8_t *kg = static_cast<const uint8_t *>(a.k) + b * a.s_k * C::kRowBytes;
    const int my_tiles = n_tiles > wg ? (n_tiles - wg + 1) / 2 : 0;
    const uint32_t stages = base + C::kStageOff + uint32_t(wg * C::kStages * C::kTileBytes);
    auto load_tile = [&](int i, int st) {
        const int64_t s0 = c0 + int64_t(wg + 2 * i) * kTileKeys;
        const uint32_t dst = stages + uint32_t(st * C::kTileBytes);
#pragma unroll
        for (int k = 0; k < C::kTileBytes / 16 / 128; ++k) {
            const int c = wtid + k * 128;
            const int r = c / C::kChunksPerRow, ch = c % C::kChunksPerRow;
            const int64_t s = s0 + r;
            const bool ok = s < a.s_k;
            ptx::cp_async_16(dst + swizzled(r, ch, kTileKeys), ok ? kg + s * C::kRowBytes + ch * 16 : kg,
                             ok ? 16 : 0);
        }
    };
    // One commit group per tile; the query copies join the first.
#pragma unroll
    for (int st = 0; st < C::kStages; ++st) {
        if (st < my_tiles) load_tile(st, st);
        ptx::cp_async_commit();
    }
    ptx::cp_async_wait<C::kStages - 1>();
    fence_proxy_async();
    // The query rows, weights and every warpgroup's first tile are in.
    const bool fold = __syncthreads_and(scales_fold) != 0;
    fence_proxy_async();
    const float *w_fast = kFp8 && fold ? wq_s : w_s;

    // FP8 key scales of a tile's rows r0, r0 + 8, loaded one tile ahead (they are used after
    // the product of the next tile).
    auto key_scales = [&](int i, float (&ks)[2]) {
        const int64_t s0 = c0 + int64_t(wg + 2 * i) * kTileKeys + warp * 16 + (lane >> 2);
#pragma unroll
        for (int rr = 0; rr < 2; ++rr)
            ks[rr] = kFp8 && i < my_tiles && s0 + 8 * rr < a.s_k ? a.k_scale[b * a.s_k + s0 + 8 * rr] : 0.0f;
    };
    float ks_next[2];
    key_scales(0, ks_next);

    float acc[N / 2];
    const int r0 = warp * 16 + (lane >> 2);
    const int q2 = 2 * (lane & 3);
    for (int i = 0; i < my_tiles; ++i) {
        const int st = i % C::kStages;
        if (i > 0) {
            ptx::cp_async_wait<C::kStages - 1>();
            fence_proxy_async();
            warpgroup_barrier(wg);  // the warpgroup's copies of tile i have landed
            fence_proxy_async();
        }
        const uint32_t sa = stages + uint32_t(st * C::kTileBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < C::kKSteps; ++kk) {
            const uint32_t cb = uint32_t(kk * 32 / 128), in = uint32_t(kk * 32 % 128);
            Wgmma<kFp8, N>::run(acc, kmajor_desc(sa + cb * (kTileKeys * 128) + in),
                                kmajor_desc(base + cb * (N * 128) + in), kk > 0 ? 1 : 0);
        }
        wgmma_commit();
        wgmma_wait_all();
        fence_regs(acc);
        warpgroup_barrier(wg);  // every warp's product has read the stage
        if (i + C::kStages < my_tiles) load_tile(i + C::kStages, st);
        ptx::cp_async_commit();

        // Epilogue: score of (key s0 + r0 (+ 8), token) = sum over heads of w * relu(D).
        const int64_t s0 = c0 + int64_t(wg + 2 * i) * kTileKeys;
        const int64_t sr[2] = {s0 + r0, s0 + r0 + 8};
        float ks[2] = {1.0f, 1.0f};
        if (kFp8) {
            ks[0] = ks_next[0];
            ks[1] = ks_next[1];
            key_scales(i + 1, ks_next);
        }
        float sum[kTokens][2];
#pragma unroll
        for (int tk = 0; tk < kTokens; ++tk) sum[tk][0] = sum[tk][1] = 0.0f;
        // relu(ks * x) = ks * relu(x) for a finite ks >= 0; other scales per element.
        const bool per_element =
            kFp8 && !(ks[0] >= 0.0f && ks[0] < INFINITY && ks[1] >= 0.0f && ks[1] < INFINITY);
        if (!per_element) {
#pragma unroll
            for (int c8 = 0; c8 < N / 8; ++c8) {
                const int tk = c8 / 8;
                const float2 wv = *reinterpret_cast<const float2 *>(w_fast + 8 * c8 + q2);
                float d0 = acc[4 * c8], d1 = acc[4 * c8 + 1], d2 = acc[4 * c8 + 2], d3 = acc[4 * c8 + 3];
                if (kFp8 && !fold) {
                    const float2 sv = *reinterpret_cast<const float2 *>(qs_s + 8 * c8 + q2);
                    d0 *= sv.x;
                    d1 *= sv.y;
                    d2 *= sv.x;
                    d3 *= sv.y;
                }
                sum[tk][0] = fmaf(wv.x, fmaxf(d0, 0.0f), sum[tk][0]);
                sum[tk][0] = fmaf(wv.y, fmaxf(d1, 0.0f), sum[tk][0]);
                sum[tk][1] = fmaf(wv.x, fmaxf(d2, 0.0f), sum[tk][1]);
                sum[tk][1] = fmaf(wv.y, fmaxf(d3, 0.0f), sum[tk][1]);
            }
            if (kFp8) {
#pragma unroll
                for (int tk = 0; tk < kTokens; ++tk) {
                    sum[tk][0] *= ks[0];
                    sum[tk][1] *= ks[1];
                }
            }
        } else {
#pragma unroll
            for (int c8 = 0; c8 < N / 8; ++c8) {
                const int tk = c8 / 8;
                const float2 wv = *reinterpret_cast<const float2 *>(w_s + 8 * c8 + q2);
                const float2 sv = *reinterpret_cast<const float2 *>(qs_s + 8 * c8 + q2);
                sum[tk][0] = fmaf(wv.x, fmaxf(acc[4 * c8] * sv.x * ks[0], 0.0f), sum[tk][0]);
                sum[tk][0] = fmaf(wv.y, fmaxf(acc[4 * c8 + 1] * sv.y * ks[0], 0.0f), sum[tk][0]);
                sum[tk][1] = fmaf(wv.x, fmaxf(acc[4 * c8 + 2] * sv.x * ks[1], 0.0f), sum[tk][1]);
                sum[tk][1] = fmaf(wv.y, fmaxf(acc[4 * c8 + 3] * sv.y * ks[1], 0.0f), sum[tk][1]);
            }
        }
#pragma unroll
        for (int tk = 0; tk < kTokens; ++tk)
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) {
                float v = sum[tk][rr];
                v += __shfl_xor_sync(0xffffffffu, v, 1);
                v += __shfl_xor_sync(0xffffffffu, v, 2);
                sum[tk][rr] = v;
            }
        // Lane q of a quad stores the (token, key row) pairs m = 2 tk + rr with m % 4 == q.
#pragma unroll
        for (int m = 0; m < 2 * kTokens; ++m) {
            const int tk = m >> 1, rr = m & 1;
            const int64_t s = sr[rr];
            if ((m & 3) != (lane & 3) || tk >= n_tok || s >= c1) continue;
            const int64_t t = tg + tk;
            const bool hidden = s >= visible_keys(a.causal, a.s_q, a.s_k, t);
            if (!hidden || a.fill_masked) score_row(a, b, t)[s] = hidden ? -INFINITY : sum[tk][rr];
        }
    }
    ptx::cp_async_wait<0>();  // no copy may still target shared memory when the CTA exits
#else
    __trap();
#endif
}

template <int kFp8, int kTokens>
mla_status launch_scores_wgmma(const ScoresArgs &a, cudaStream_t s, const char *op) {
    using C = WgConfig<kFp8, kTokens>;
    const int64_t groups = a.nb * ((a.nt + kTokens - 1) / kTokens);
    if (groups == 0 || a.s_k == 0) return MLA_OK;
    const int64_t chunks = (a.s_k + C::kKeyChunk - 1) / C::kKeyChunk;
    MLA_REQUIRE(groups <= 0x7fffffff && chunks <= 65535,
                "%s: %lld query groups x %lld key chunks is too large a grid", op,
                (long long)groups, (long long)chunks);
    ScoresArgs args = a;
    args.key_chunk = C::kKeyChunk;
    auto kernel = indexer_scores_wgmma_kernel<kFp8, kTokens>;
    MLA_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kBytes));
    kernel<<<dim3(unsigned(groups), unsigned(chunks)), kWgThreads, C::kBytes, s>>>(args);
    MLA_CUDA_LAUNCHED("indexer_scores_wgmma_kernel launch");
    return MLA_OK;
}

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
