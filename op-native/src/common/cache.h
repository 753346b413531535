// Paged KV cache layouts (PLAIN, V32, MODEL1): checks, byte geometry, and reading / writing
// one token row. Every kernel that touches a cache goes through these.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "common/dtype.h"
#include "mla/mla.h"

namespace mla {

struct CacheLayout {
    int32_t kind = MLA_CACHE_PLAIN;
    int64_t d_qk = 0;
    int32_t d_nope = 0, d_rope = 0, tile = 0, n_scales = 0;
    int64_t data_row_bytes = 0;   // V32: whole token row; MODEL1: fp8 + bf16 part
    int64_t scale_row_bytes = 0;  // MODEL1 only
    int64_t block_bytes = 0;      // FP8 kinds: bytes of one page block
};

// Fills `out` for cache kind / dims (defaults applied when d_nope == 0); false on a bad layout.
bool fp8_layout(int32_t kind, int64_t block_size, int32_t d_nope, int32_t d_rope, int32_t tile,
                CacheLayout *out);

// Validates a cache argument against the d_qk the op expects and fills `layout`.
// `require_h_kv`: the h_kv the op needs (0 = any).
mla_status check_cache(const mla_cache &c, int64_t d_qk, int64_t require_h_kv, const char *op,
                       const char *arg, CacheLayout *layout);

// The value dims of a cache: V32 d_nope, MODEL1 d_qk, PLAIN d_qk.
inline int64_t cache_value_dims(const CacheLayout &l) {
    return l.kind == MLA_CACHE_V32 ? l.d_nope : l.d_qk;
}

// Power-of-two scale of a tile whose largest magnitude is amax (NaN values do not count):
// 2^ceil(log2(max(amax/448, 1e-4))), computed exactly from the binary exponent; an infinite
// amax gives 2^127.
inline float fp8_tile_scale(float amax) {
    float s = std::fmax(amax / 448.0f, 1e-4f);
    if (!std::isfinite(s)) return std::ldexp(1.0f, 127);
    int e;
    float m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
    int k = m == 0.5f ? e - 1 : e;
    return std::ldexp(1.0f, k > 127 ? 127 : k);
}

// Reads the first n dims of token (block, offset), head h, dequantised, into dst.
template <typename T>
inline void read_token(const mla_cache &c, const CacheLayout &l, int64_t block, int64_t offset,
                       int64_t head, int64_t n, T *dst) {
    if (l.kind == MLA_CACHE_PLAIN) {
        int64_t base = block * c.block_stride + offset * c.token_stride + head * c.head_stride;
        load_row<T>(c.data, c.dtype, base, n, dst);
        return;
    }
    const uint8_t *bytes = static_cast<const uint8_t *>(c.data);
    const uint8_t *row, *scales_u8 = nullptr;
    const uint8_t *rope_part;
    if (l.kind == MLA_CACHE_V32) {
        row = bytes + (block * c.block_size + offset) * l.data_row_bytes;
        scales_u8 = row + l.d_nope;
        rope_part = row + l.d_nope + 4 * l.n_scales;
    } else {
        const uint8_t *blk = bytes + block * l.block_bytes;
        row = blk + offset * l.data_row_bytes;
        scales_u8 = blk + c.block_size * l.data_row_bytes + offset * l.scale_row_bytes;
        rope_part = row + l.d_nope;
    }
    int64_t n_nope = n < l.d_nope ? n : l.d_nope;
    for (int64_t t = 0; t * l.tile < n_nope; ++t) {
        float scale;
        if (l.kind == MLA_CACHE_V32) {
            std::memcpy(&scale, scales_u8 + 4 * t, 4);
        } else {
            scale = std::ldexp(1.0f, int(scales_u8[t]) - 127);
        }
        int64_t end = (t + 1) * l.tile < n_nope ? (t + 1) * l.tile : n_nope;
        for (int64_t i = t * l.tile; i < end; ++i) dst[i] = T(fp8_e4m3_table[row[i]] * scale);
    }
    for (int64_t i = l.d_nope; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, rope_part + 2 * (i - l.d_nope), 2);
        dst[i] = T(bf16_to_float(v));
    }
}

// Writes a whole token row (d_qk values) at (block, offset), head h, quantising for the FP8
// kinds. `data` is the writable cache base.
void write_token(void *data, const mla_cache &c, const CacheLayout &l, int64_t block,
                 int64_t offset, int64_t head, const float *src);

}  // namespace mla
