#include "common/cache.h"

#include <algorithm>
#include "common/error.h"
#include "common/fp8_encode.h"

namespace mla {

bool fp8_layout(int32_t kind, int64_t block_size, int32_t d_nope, int32_t d_rope, int32_t tile,
                CacheLayout *out) {
    if (kind != MLA_CACHE_V32 && kind != MLA_CACHE_MODEL1) return false;
    if (d_nope == 0 && d_rope == 0 && tile == 0) {
        d_nope = kind == MLA_CACHE_V32 ? 512 : 448;
        d_rope = 64;
        tile = kind == MLA_CACHE_V32 ? 128 : 64;
    }
    if (d_nope <= 0 || d_rope < 0 || tile <= 0 || d_nope % tile != 0 || d_rope % 2 != 0 ||
        block_size <= 0)
        return false;
    CacheLayout l;
    l.kind = kind;
    l.d_nope = d_nope;
    l.d_rope = d_rope;
    l.tile = tile;
    l.n_scales = d_nope / tile;
    l.d_qk = d_nope + d_rope;
    if (kind == MLA_CACHE_V32) {
        l.data_row_bytes = d_nope + 4LL * l.n_scales + 2LL * d_rope;
        l.block_bytes = block_size * l.data_row_bytes;
    } else {
        l.data_row_bytes = d_nope + 2LL * d_rope;
        l.scale_row_bytes = (l.n_scales + 7) / 8 * 8;
        int64_t raw = block_size * (l.data_row_bytes + l.scale_row_bytes);
        l.block_bytes = (raw + l.data_row_bytes - 1) / l.data_row_bytes * l.data_row_bytes;
    }
    *out = l;
    return true;
}

mla_status check_cache(const mla_cache &c, int64_t d_qk, int64_t require_h_kv, const char *op,
                       const char *arg, CacheLayout *layout) {
    MLA_REQUIRE(c.data != nullptr, "%s: %s.data is null", op, arg);
    MLA_REQUIRE(c.num_blocks >= 0, "%s: %s.num_blocks must be >= 0, got %lld", op, arg,
                (long long)c.num_blocks);
    MLA_REQUIRE(c.block_size >= 1, "%s: %s.block_size must be >= 1, got %lld", op, arg,
                (long long)c.block_size);
    if (c.kind == MLA_CACHE_PLAIN) {
        MLA_REQUIRE(is_float_dtype(c.dtype), "%s: %s.dtype must be a float type, got %s", op, arg,
                    dtype_name(c.dtype));
        MLA_REQUIRE(c.h_kv >= 1, "%s: %s.h_kv must be >= 1, got %lld", op, arg, (long long)c.h_kv);
        if (require_h_kv > 0)
            MLA_REQUIRE(c.h_kv == require_h_kv, "%s: %s.h_kv must be %lld, got %lld", op, arg,
                        (long long)require_h_kv, (long long)c.h_kv);
        MLA_REQUIRE(c.block_stride >= 0 && c.token_stride >= 0 && c.head_stride >= 0,
                    "%s: %s strides must be >= 0", op, arg);
        CacheLayout l;
        l.kind = MLA_CACHE_PLAIN;
        l.d_qk = d_qk;
        *layout = l;
        return MLA_OK;
    }
    MLA_REQUIRE(c.kind == MLA_CACHE_V32 || c.kind == MLA_CACHE_MODEL1,
                "%s: %s.kind must be 0 (PLAIN), 1 (V32) or 2 (MODEL1), got %d", op, arg, c.kind);
    const char *kname = c.kind == MLA_CACHE_V32 ? "V32" : "MODEL1";
    if (require_h_kv > 0)
        MLA_REQUIRE(require_h_kv == 1, "%s: %s is a %s cache, which holds one KV head, but the "
                    "op needs h_kv = %lld", op, arg, kname, (long long)require_h_kv);
    CacheLayout l;
    MLA_REQUIRE(fp8_layout(c.kind, c.block_size, c.d_nope, c.d_rope, c.tile, &l),
                "%s: %s is not a valid %s layout (d_nope %d, d_rope %d, tile %d: need d_nope "
                "> 0 a multiple of tile, d_rope even)", op, arg, kname, c.d_nope, c.d_rope,
                c.tile);
    MLA_REQUIRE(l.d_qk == d_qk, "%s: %s is a %s layout of %lld dims (d_nope %d + d_rope %d) "
                "but d_qk is %lld", op, arg, kname, (long long)l.d_qk, l.d_nope, l.d_rope,
                (long long)d_qk);
    *layout = l;
    return MLA_OK;
}

void write_token(void *data, const mla_cache &c, const CacheLayout &l, int64_t block,
                 int64_t offset, int64_t head, const float *src) {
    if (l.kind == MLA_CACHE_PLAIN) {
        int64_t base = block * c.block_stride + offset * c.token_stride + head * c.head_stride;
        store_row<float>(data, c.dtype, base, l.d_qk, src);
        return;
    }
    uint8_t *bytes = static_cast<uint8_t *>(data);
    uint8_t *row, *scale_dst, *rope_part;
    if (l.kind == MLA_CACHE_V32) {
        row = bytes + (block * c.block_size + offset) * l.data_row_bytes;
        scale_dst = row + l.d_nope;
        rope_part = row + l.d_nope + 4 * l.n_scales;
    } else {
        uint8_t *blk = bytes + block * l.block_bytes;
        row = blk + offset * l.data_row_bytes;
        scale_dst = blk + c.block_size * l.data_row_bytes + offset * l.scale_row_bytes;
        rope_part = row + l.d_nope;
        std::memset(scale_dst, 0, size_t(l.scale_row_bytes));
    }
    encode_fp8_token(l, src, row, scale_dst, rope_part);
}

}  // namespace mla

extern "C" int64_t mla_cache_block_bytes(int32_t kind, int64_t block_size, int32_t d_nope,
                                         int32_t d_rope, int32_t tile) {
    mla::CacheLayout l;
    if (!mla::fp8_layout(kind, block_size, d_nope, d_rope, tile, &l)) return -1;
    return l.block_bytes;
}
