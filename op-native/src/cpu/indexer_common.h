// Operand access and tile sizes shared by the lightning indexer's forward and backward
// kernels (ops.md section 6).
#pragma once
#include <algorithm>
#include <cstdint>
#include "common/dtype.h"
#include "mla/mla.h"

namespace mla {
namespace cpu {

// Backward: keys converted per step of a row (the tile stays in L1 while every head reads it).
constexpr int64_t kIndexerKeyTile = 32;

// Forward (indexer.cpp): columns (query row x head) per block of queries, keys per tile
// (a multiple of the micro kernel's keys), keys per micro kernel call (its accumulators are
// kIndexerMicroKeys x 2 vectors: 12 of the 16 vector registers).
constexpr int64_t kIndexerColumns = 128;
constexpr int64_t kIndexerFwdKeyTile = 48;
constexpr int kIndexerMicroKeys = 6;

// All 256 float8_e4m3 codes as float (the scalar decoder is too slow for every key of every row).
inline const float *indexer_fp8_table() {
    static const auto table = [] {
        struct T { float v[256]; } t;
        for (int i = 0; i < 256; ++i) t.v[i] = fp8_e4m3_to_float(uint8_t(i));
        return t;
    }();
    return table.v;
}

// One indexer input seen as rows of d values of type Acc: q as [b * s_q * h, d] with q_scale
// per row, k as [b * s_k, d] with k_scale per row. FP8 rows are dequantised (value * scale).
template <typename Acc>
struct IndexerOperand {
    const void *data;
    int32_t dtype;
    const float *scale;  // FP8 only
    int64_t d;

    // Rows [row0, row0 + n): the input itself when it already holds Acc, else a converted
    // copy in `scratch` (n * d values).
    const Acc *rows(int64_t row0, int64_t n, Acc *scratch) const {
        if (dtype == MLA_FLOAT32 && sizeof(Acc) == 4)
            return reinterpret_cast<const Acc *>(static_cast<const float *>(data) + row0 * d);
        if (dtype == MLA_FLOAT64 && sizeof(Acc) == 8)
            return reinterpret_cast<const Acc *>(static_cast<const double *>(data) + row0 * d);
        if (dtype == MLA_FP8_E4M3) {
            const float *lut = indexer_fp8_table();
            const uint8_t *src = static_cast<const uint8_t *>(data) + row0 * d;
            for (int64_t r = 0; r < n; ++r) {
                Acc s = Acc(scale[row0 + r]);
                for (int64_t i = 0; i < d; ++i) scratch[r * d + i] = Acc(lut[src[r * d + i]]) * s;
            }
            return scratch;
        }
        load_row<Acc>(data, dtype, row0 * d, n * d, scratch);
        return scratch;
    }
};

// a . b with eight independent partial sums, which the compiler can keep in vector lanes.
template <typename Acc>
inline Acc indexer_dot(const Acc *a, const Acc *b, int64_t d) {
    Acc s[8] = {};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
        for (int u = 0; u < 8; ++u) s[u] += a[i + u] * b[i + u];
    Acc tail = 0;
    for (; i < d; ++i) tail += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail;
}

// Number of keys query row t may see: causal rows align bottom-right (s <= t + s_k - s_q).
inline int64_t indexer_visible_keys(const mla_indexer_params &p, int64_t t) {
    if (!p.causal) return p.s_k;
    return std::min(p.s_k, std::max<int64_t>(0, t + p.s_k - p.s_q + 1));
}

// float64 accumulation when any input is float64, float32 otherwise.
inline bool indexer_uses_double(const mla_indexer_params &p) {
    return p.q_dtype == MLA_FLOAT64 || p.k_dtype == MLA_FLOAT64 || p.w_dtype == MLA_FLOAT64;
}

}  // namespace cpu
}  // namespace mla
