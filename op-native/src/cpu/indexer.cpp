// Lightning indexer forward (ops.md section 6): scores[b, t, s] = sum_j w[b, t, j] *
// relu(q[b, t, j] . k[b, s]), causal bottom-right, masked -inf; and the fused scores + top-k
// that keeps the score rows of one block of queries per thread instead of the [s_q, s_k]
// matrix.
//
// Work unit: a block of consecutive query rows of one batch. Its query vectors (every head of
// every row) are transposed once into columns, qt[i][col] (col = row * hp + head, the heads
// padded to a multiple of the vector width with zero columns and zero weights), and the
// block's keys are streamed past them in tiles: a micro kernel takes kIndexerMicroKeys keys
// against two vectors of columns, accumulating over the d dims with one broadcast key value
// per column vector and dim (an outer product, like a matrix-product kernel), then applies
// relu and the weights and sums each vector's columns into its row's score. A vector never
// spans two rows, so each (row, key) score is the sum of its heads' terms in a fixed order,
// whatever the thread count. The AVX2 + FMA copy is chosen at run time
// (common/cpu_features.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include "common/cpu_features.h"
#include "common/parallel.h"
#include "cpu/indexer_common.h"
#include "cpu/misc_kernels.h"
#include "cpu/topk_row.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MLA_IX_X86 1
#endif

namespace mla {
namespace cpu {

namespace {

#define MLA_IX_INLINE inline __attribute__((always_inline))

template <typename A, int VB>
struct IxVec {
    typedef A V __attribute__((vector_size(VB)));
    static constexpr int N = VB / int(sizeof(A));
};

// All lanes = *x. (0 + x would be a scalar add and a register broadcast: x may be -0.)
template <typename A, int VB>
MLA_IX_INLINE void splat(typename IxVec<A, VB>::V &v, const A *x) {
    v = typename IxVec<A, VB>::V{} + *x;
}

#ifdef MLA_IX_X86
// One load-port broadcast from memory. (Not always_inline: see pack_codes in
// common/fp8_encode.cpp.)
template <>
inline MLA_TARGET_AVX2 void splat<float, 32>(IxVec<float, 32>::V &v, const float *x) {
    v = (IxVec<float, 32>::V)_mm256_broadcast_ss(x);
}

template <>
inline MLA_TARGET_AVX2 void splat<double, 32>(IxVec<double, 32>::V &v, const double *x) {
    v = (IxVec<double, 32>::V)_mm256_broadcast_sd(x);
}

template <>
MLA_IX_INLINE void splat<float, 16>(IxVec<float, 16>::V &v, const float *x) {
    v = (IxVec<float, 16>::V)_mm_load1_ps(x);
}

template <>
MLA_IX_INLINE void splat<double, 16>(IxVec<double, 16>::V &v, const double *x) {
    v = (IxVec<double, 16>::V)_mm_load1_pd(x);
}
#endif

#ifdef MLA_IX_X86
// d float8_e4m3 codes times scale, as the table gives them (normal codes by moving the
// exponent bits, subnormal codes as m * 2^-9, 0x7f / 0xff NaN), 8 at a time.
inline MLA_TARGET_AVX2 void fp8_row_avx2(const uint8_t *s, int64_t d, float scale, float *o) {
    const __m256i m7f = _mm256_set1_epi32(0x7f), bias = _mm256_set1_epi32(120 << 23);
    const __m256 sub_unit = _mm256_set1_ps(0.001953125f), nan = _mm256_set1_ps(NAN);
    const __m256 vscale = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(s + i)));
        __m256i mag = _mm256_and_si256(v, m7f);
        __m256i sign = _mm256_slli_epi32(_mm256_andnot_si256(m7f, v), 24);
        __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(mag, 20), bias);
        __m256i sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(mag), sub_unit));
        __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
        __m256 val = _mm256_castsi256_ps(_mm256_or_si256(_mm256_blendv_epi8(normal, sub, is_sub), sign));
        val = _mm256_blendv_ps(val, nan, _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, m7f)));
        _mm256_storeu_ps(o + i, _mm256_mul_ps(val, vscale));
    }
    const float *lut = indexer_fp8_table();
    for (; i < d; ++i) o[i] = lut[s[i]] * scale;
}
#endif

// Key rows [row0, row0 + n) of k as A: float32 in place, FP8 through fp8_row_avx2 on the AVX2
// path, the rest through IndexerOperand.
template <typename A, int VB>
MLA_IX_INLINE const A *key_rows(const IndexerOperand<A> &ko, int64_t row0, int64_t n, A *scratch) {
#ifdef MLA_IX_X86
    if constexpr (sizeof(A) == 4 && VB == 32) {
        if (ko.dtype != MLA_FP8_E4M3) return ko.rows(row0, n, scratch);
        const int64_t d = ko.d;
        const uint8_t *src = static_cast<const uint8_t *>(ko.data) + row0 * d;
        float *dst = reinterpret_cast<float *>(scratch);
        for (int64_t r = 0; r < n; ++r) fp8_row_avx2(src + r * d, d, ko.scale[row0 + r], dst + r * d);
        return scratch;
    }
#endif
    return ko.rows(row0, n, scratch);
}

// Column layout of a block: `rows` query rows of `hp` columns each (h heads, zero padding).
struct BlockShape {
    int64_t rows, hp, cols;  // cols = rows * hp, a multiple of two vectors
};

template <typename A>
struct BlockScratch {
    std::vector<A> qt, wt, k, tile;  // qt [d][cols], wt [cols], converted keys, tile scores
    std::vector<float> rows;          // fused top-k: the block's score rows [rows][s_k]
    TopkScratch topk;
};

// Scores of keys k[0, R) against the two column vectors at qt (stride ld per dim): sums[r][v]
// is the sum over the N columns of vector v of w * relu(q . k) (NaN products drop out, and a
// non-positive product adds nothing even when its weight is not finite, as relu's definition
// in write-out form: if (z > 0) score += w z).
template <typename A, int VB, int R>
MLA_IX_INLINE void micro_kernel(const A *const *k, const A *qt, int64_t ld, int64_t d,
                                const A *wt, A (*sums)[2]) {
    typedef typename IxVec<A, VB>::V V;
    constexpr int N = IxVec<A, VB>::N;
    V acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = V{};
    for (int64_t i = 0; i < d; ++i) {
        V q0, q1;
        __builtin_memcpy(&q0, qt + i * ld, sizeof q0);
        __builtin_memcpy(&q1, qt + i * ld + N, sizeof q1);
        for (int r = 0; r < R; ++r) {
            V kv;
            splat<A, VB>(kv, k[r] + i);
            acc[r][0] += kv * q0;
            acc[r][1] += kv * q1;
        }
    }
    V w0, w1;
    __builtin_memcpy(&w0, wt, sizeof w0);
    __builtin_memcpy(&w1, wt + N, sizeof w1);
    for (int r = 0; r < R; ++r) {
        V t0 = acc[r][0] > A(0) ? acc[r][0] * w0 : V{};
        V t1 = acc[r][1] > A(0) ? acc[r][1] * w1 : V{};
        A s0 = A(0), s1 = A(0);
        for (int l = 0; l < N; ++l) {
            s0 += t0[l];
            s1 += t1[l];
        }
        sums[r][0] = s0;
        sums[r][1] = s1;
    }
}

// tile[row][s] += the scores of keys k[0, n) (s in [0, n)) for every row of the block.
template <typename A, int VB>
MLA_IX_INLINE void score_tile(const A *const *k, int64_t n, const BlockShape &bs, const A *qt,
                              const A *wt, int64_t d, A *tile, int64_t tile_ld) {
    constexpr int N = IxVec<A, VB>::N;
    constexpr int R = kIndexerMicroKeys;
    A sums[R][2];
    for (int64_t c = 0; c < bs.cols; c += 2 * N) {
        A *row0 = tile + (c / bs.hp) * tile_ld, *row1 = tile + ((c + N) / bs.hp) * tile_ld;
        int64_t s = 0;
        for (; s + R <= n; s += R) {
            micro_kernel<A, VB, R>(k + s, qt + c, bs.cols, d, wt + c, sums);
            for (int r = 0; r < R; ++r) {
                row0[s + r] += sums[r][0];
                row1[s + r] += sums[r][1];
            }
        }
        int64_t left = n - s;
        auto rest = [&](auto rc) {
            constexpr int RC = decltype(rc)::value;
            micro_kernel<A, VB, RC>(k + s, qt + c, bs.cols, d, wt + c, sums);
            for (int r = 0; r < RC; ++r) {
                row0[s + r] += sums[r][0];
                row1[s + r] += sums[r][1];
            }
        };
        switch (left) {
            case 1: rest(std::integral_constant<int, 1>()); break;
            case 2: rest(std::integral_constant<int, 2>()); break;
            case 3: rest(std::integral_constant<int, 3>()); break;
            case 4: rest(std::integral_constant<int, 4>()); break;
            case 5: rest(std::integral_constant<int, 5>()); break;
            default: break;
        }
    }
}

// Scores of the block of query rows [t0, t0 + bs.rows) of batch b. out(row) is where row's
// s_k scores go (float); every element is written, masked keys as -inf.
template <typename A, int VB, typename Out>
MLA_IX_INLINE void score_block(const mla_indexer_params &p, int64_t b, int64_t t0,
                               const BlockShape &bs, BlockScratch<A> &sc, Out out) {
    const int64_t d = p.d, h = p.h;
    // Queries, transposed into columns, and their weights.
    IndexerOperand<A> qo{p.q, p.q_dtype, p.q_scale, d};
    A *qt = sc.qt.data(), *wt = sc.wt.data();
    std::fill(sc.qt.begin(), sc.qt.begin() + d * bs.cols, A(0));
    std::fill(sc.wt.begin(), sc.wt.begin() + bs.cols, A(0));
    std::vector<A> &qrow = sc.tile;  // borrowed: h * d values
    for (int64_t r = 0; r < bs.rows; ++r) {
        int64_t row = b * p.s_q + t0 + r;
        const A *q = qo.rows(row * h, h, qrow.data());
        for (int64_t j = 0; j < h; ++j)
            for (int64_t i = 0; i < d; ++i) qt[i * bs.cols + r * bs.hp + j] = q[j * d + i];
        load_row<A>(p.w, p.w_dtype, row * h, h, wt + r * bs.hp);
    }
    int64_t visible = 0;
    for (int64_t r = 0; r < bs.rows; ++r) visible = std::max(visible, indexer_visible_keys(p, t0 + r));

    IndexerOperand<A> ko{p.k, p.k_dtype, p.k_scale, d};
    const A *kptr[kIndexerFwdKeyTile];
    A *tile = sc.tile.data();
    for (int64_t s0 = 0; s0 < visible; s0 += kIndexerFwdKeyTile) {
        int64_t n = std::min(kIndexerFwdKeyTile, visible - s0);
        const A *k = key_rows<A, VB>(ko, b * p.s_k + s0, n, sc.k.data());
        for (int64_t s = 0; s < n; ++s) kptr[s] = k + s * d;
        std::fill(tile, tile + bs.rows * kIndexerFwdKeyTile, A(0));
        score_tile<A, VB>(kptr, n, bs, qt, wt, d, tile, kIndexerFwdKeyTile);
        for (int64_t r = 0; r < bs.rows; ++r) {
            float *o = out(r);
            const A *src = tile + r * kIndexerFwdKeyTile;
            for (int64_t s = 0; s < n; ++s) o[s0 + s] = float(src[s]);
        }
    }
    for (int64_t r = 0; r < bs.rows; ++r) {
        float *o = out(r);
        for (int64_t s = indexer_visible_keys(p, t0 + r); s < p.s_k; ++s) o[s] = -INFINITY;
    }
}

// Where the units of work start: blocks of full.rows query rows, per_batch of them a batch.
struct Plan {
    BlockShape full;
    int64_t per_batch;
    bool fused;
};

// One unit: the scores (or the fused top-k) of one block of query rows.
template <typename A, int VB>
MLA_IX_INLINE void run_unit(const mla_indexer_params &p, const Plan &plan, int64_t u,
                            BlockScratch<A> &sc) {
    constexpr int N = IxVec<A, VB>::N;
    int64_t b = u / plan.per_batch, t0 = (u % plan.per_batch) * plan.full.rows;
    BlockShape bs = plan.full;
    bs.rows = std::min(plan.full.rows, p.s_q - t0);
    bs.cols = (bs.rows * bs.hp + 2 * N - 1) / (2 * N) * (2 * N);  // whole pairs of vectors
    if (!plan.fused) {
        score_block<A, VB>(p, b, t0, bs, sc,
                           [&](int64_t r) { return p.scores + (b * p.s_q + t0 + r) * p.s_k; });
        return;
    }
    float *rows = sc.rows.data();
    score_block<A, VB>(p, b, t0, bs, sc, [&](int64_t r) { return rows + r * p.s_k; });
    for (int64_t r = 0; r < bs.rows; ++r)
        topk_row(rows + r * p.s_k, indexer_visible_keys(p, t0 + r), p.topk, sc.topk,
                 p.indices + (b * p.s_q + t0 + r) * p.topk, nullptr);
}

template <typename A>
using UnitFn = void (*)(const mla_indexer_params &, const Plan &, int64_t, BlockScratch<A> &);

template <typename A>
void run_unit_baseline(const mla_indexer_params &p, const Plan &plan, int64_t u,
                       BlockScratch<A> &sc) {
    run_unit<A, 16>(p, plan, u, sc);
}

#ifdef MLA_HAVE_AVX2_PATH
template <typename A>
MLA_TARGET_AVX2 void run_unit_avx2(const mla_indexer_params &p, const Plan &plan, int64_t u,
                                   BlockScratch<A> &sc) {
    run_unit<A, 32>(p, plan, u, sc);
}
#endif

template <typename A>
void run(const mla_indexer_params &p, bool fused) {
    if (p.b * p.s_q == 0) return;
    int vb = 16;
    UnitFn<A> unit = run_unit_baseline<A>;
#ifdef MLA_HAVE_AVX2_PATH
    if (cpu_uses_avx2()) {
        vb = 32;
        unit = run_unit_avx2<A>;
    }
#endif
    const int64_t n = vb / int64_t(sizeof(A));
    Plan plan;
    plan.fused = fused;
    plan.full.hp = (p.h + n - 1) / n * n;
    plan.full.rows = std::max<int64_t>(1, kIndexerColumns / plan.full.hp);
    plan.full.cols = plan.full.rows * plan.full.hp;
    plan.per_batch = (p.s_q + plan.full.rows - 1) / plan.full.rows;
    const int64_t units = p.b * plan.per_batch;
    const int64_t cols_alloc = (plan.full.cols + 2 * n - 1) / (2 * n) * (2 * n);
    int64_t work = std::max<int64_t>(1, p.s_k * p.h * p.d * plan.full.rows);
    int64_t grain = std::max<int64_t>(1, 65536 / work);
    int workers = plan_workers(units, grain, p.exec.num_threads);
    std::vector<BlockScratch<A>> scratch(workers);
    for (auto &sc : scratch) {
        sc.qt.resize(size_t(p.d * cols_alloc));
        sc.wt.resize(size_t(cols_alloc));
        sc.k.resize(size_t(kIndexerFwdKeyTile * p.d));
        // (one more row: the columns that pad the last pair of vectors map past the block)
        sc.tile.resize(size_t(std::max((plan.full.rows + 1) * kIndexerFwdKeyTile, p.h * p.d)));
        if (fused) {
            sc.rows.resize(size_t(plan.full.rows * p.s_k));
            sc.topk.reserve(p.s_k);
        }
    }
    parallel_for(units, grain, p.exec.num_threads, [&](int64_t u0, int64_t u1, int worker) {
        for (int64_t u = u0; u < u1; ++u) unit(p, plan, u, scratch[worker]);
    });
}

}  // namespace

void indexer_scores(const mla_indexer_params &p) {
    if (indexer_uses_double(p))
        run<double>(p, false);
    else
        run<float>(p, false);
}

void indexer_topk(const mla_indexer_params &p) {
    if (indexer_uses_double(p))
        run<double>(p, true);
    else
        run<float>(p, true);
}

}  // namespace cpu
}  // namespace mla
